package bme280_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/modules/drivers/bme280"
)

// Acceptance tolerances: readings must match the simulated truth to within these.
const (
	tolC   = 0.01
	tolHPa = 0.01
	tolPct = 0.01
)

// fakeClock is a settable clock for the simulator.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newSim returns a simulated chip on bus 1 at AddrPrimary, a Tx bound to it and its clock.
func newSim(t testing.TB, sig sim.Signals) (*sim.BME280, bme280.Tx, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: epoch}
	dev := sim.NewBME280(sig, clk.now)
	var p sim.Provider
	if err := p.AttachI2C(1, bme280.AddrPrimary, dev); err != nil {
		t.Fatal(err)
	}
	bus, err := p.I2CBus(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tx := func(w, r []byte) error { return bus.Tx(ctx, bme280.AddrPrimary, w, r) }
	return dev, tx, clk
}

func constant(tempC, hPa, pct float64) sim.Signals {
	return sim.Signals{
		Temperature: sim.Signal{Value: tempC},
		Pressure:    sim.Signal{Value: hPa},
		Humidity:    sim.Signal{Value: pct},
	}
}

// checkReading fails t if r is farther from the truth than the tolerances.
func checkReading(t *testing.T, r bme280.Reading, tempC, hPa, pct float64) {
	t.Helper()
	if math.Abs(r.TemperatureC-tempC) > tolC || math.Abs(r.PressureHPa-hPa) > tolHPa ||
		math.Abs(r.HumidityPct-pct) > tolPct {
		t.Errorf("read %.4f °C %.4f hPa %.4f %%RH, truth %.4f °C %.4f hPa %.4f %%RH",
			r.TemperatureC, r.PressureHPa, r.HumidityPct, tempC, hPa, pct)
	}
}

func TestReadMatchesTruth(t *testing.T) {
	sine := sim.Signals{
		Temperature: sim.Signal{Shape: "sine", Mean: 20, Amplitude: 15, Period: sim.Duration(time.Hour)},
		Pressure:    sim.Signal{Shape: "sine", Mean: 1000, Amplitude: 50, Period: sim.Duration(40 * time.Minute)},
		Humidity:    sim.Signal{Shape: "sine", Mean: 50, Amplitude: 40, Period: sim.Duration(25 * time.Minute)},
	}
	tests := []struct {
		name string
		sig  sim.Signals
		at   time.Duration
	}{
		{"room", constant(21.5, 1013.25, 45), 0},
		{"cold", constant(-40, 1013.25, 50), 0},
		{"freezing", constant(-12.34, 990, 80), 0},
		{"hot", constant(85, 1013.25, 20), 0},
		{"low pressure", constant(15, 300, 50), 0},
		{"high pressure", constant(15, 1100, 50), 0},
		{"dry", constant(30, 1013.25, 0), 0},
		{"humid", constant(30, 1013.25, 100), 0},
		{"cold high pressure humid", constant(-40, 1100, 100), 0},
		{"hot low pressure dry", constant(85, 300, 0), 0},
		{"clamped above range", constant(120, 1200, 150), 0},
		{"clamped below range", constant(-60, 100, -5), 0},
		{"sine t=0", sine, 0},
		{"sine t=7m", sine, 7 * time.Minute},
		{"sine t=15m", sine, 15 * time.Minute},
		{"sine t=33m20s", sine, 33*time.Minute + 20*time.Second},
		{"sine t=45m", sine, 45 * time.Minute},
		{"sine t=2h10m", sine, 2*time.Hour + 10*time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, tx, clk := newSim(t, tt.sig)
			var c bme280.Chip
			if err := c.Init(tx); err != nil {
				t.Fatal(err)
			}
			clk.t = epoch.Add(tt.at)
			r, err := c.Read(tx)
			if err != nil {
				t.Fatal(err)
			}
			tempC, hPa, pct := dev.Truth(clk.t)
			checkReading(t, r, tempC, hPa, pct)
		})
	}
}

// TestReadWholeRange checks the acceptance criterion over the whole sensor range: a grid that
// includes every corner, and random points.
func TestReadWholeRange(t *testing.T) {
	type point struct{ c, hPa, pct float64 }
	var points []point
	for c := -40.0; c <= 85; c += 12.5 {
		for hPa := 300.0; hPa <= 1100; hPa += 100 {
			for pct := 0.0; pct <= 100; pct += 25 {
				points = append(points, point{c, hPa, pct})
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		points = append(points, point{-40 + 125*rng.Float64(), 300 + 800*rng.Float64(), 100 * rng.Float64()})
	}
	var worstC, worstHPa, worstPct float64
	for _, p := range points {
		dev, tx, clk := newSim(t, constant(p.c, p.hPa, p.pct))
		var c bme280.Chip
		if err := c.Init(tx); err != nil {
			t.Fatal(err)
		}
		r, err := c.Read(tx)
		if err != nil {
			t.Fatal(err)
		}
		tempC, hPa, pct := dev.Truth(clk.t)
		checkReading(t, r, tempC, hPa, pct)
		worstC = max(worstC, math.Abs(r.TemperatureC-tempC))
		worstHPa = max(worstHPa, math.Abs(r.PressureHPa-hPa))
		worstPct = max(worstPct, math.Abs(r.HumidityPct-pct))
	}
	t.Logf("%d points; worst error %.5f °C, %.5f hPa, %.5f %%RH", len(points), worstC, worstHPa, worstPct)
	// The simulator promises more than the acceptance tolerance: 0.005 in each unit.
	if worstC > 0.005 || worstHPa > 0.005 || worstPct > 0.005 {
		t.Errorf("worst error above the simulator's 0.005 promise")
	}
}

// TestReadFollowsSignal reads one chip repeatedly as its clock advances.
func TestReadFollowsSignal(t *testing.T) {
	sig := sim.Signals{
		Temperature: sim.Signal{Shape: "ramp", From: 10, To: 30, Period: sim.Duration(10 * time.Minute)},
		Pressure: sim.Signal{Sum: []sim.Signal{
			{Value: 1013},
			{Shape: "noise", Sigma: 0.5, Seed: 7},
		}},
		Humidity: sim.Signal{Shape: "step", From: 40, To: 70, Start: sim.Duration(5 * time.Minute)},
	}
	dev, tx, clk := newSim(t, sig)
	var c bme280.Chip
	if err := c.Init(tx); err != nil {
		t.Fatal(err)
	}
	for i := range 24 {
		clk.t = epoch.Add(time.Duration(i) * 30 * time.Second)
		r, err := c.Read(tx)
		if err != nil {
			t.Fatal(err)
		}
		tempC, hPa, pct := dev.Truth(clk.t)
		checkReading(t, r, tempC, hPa, pct)
	}
}

// regs returns a Tx that serves reads from a fixed register image and ignores writes.
func regs(image *[256]byte) bme280.Tx {
	return func(w, r []byte) error {
		if len(w) == 1 {
			copy(r, image[w[0]:])
		}
		return nil
	}
}

func TestInitWrongChipID(t *testing.T) {
	var image [256]byte
	image[0xD0] = 0x58 // a BMP280
	var c bme280.Chip
	err := c.Init(regs(&image))
	if !errors.Is(err, bme280.ErrChipID) {
		t.Fatalf("Init: %v, want ErrChipID", err)
	}
	if got, want := err.Error(), "bme280: chip id 0x58, want 0x60"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	if _, err := c.Read(regs(&image)); !errors.Is(err, bme280.ErrNotInit) {
		t.Errorf("Read after failed Init: %v, want ErrNotInit", err)
	}
}

func TestReadBeforeInit(t *testing.T) {
	var c bme280.Chip
	_, tx, _ := newSim(t, constant(20, 1000, 50))
	if _, err := c.Read(tx); !errors.Is(err, bme280.ErrNotInit) {
		t.Errorf("Read: %v, want ErrNotInit", err)
	}
}

func TestTxErrorsWrapped(t *testing.T) {
	dev, tx, _ := newSim(t, constant(20, 1000, 50))
	var c bme280.Chip
	dev.InjectNACK(true)
	if err := c.Init(tx); !errors.Is(err, hal.ErrNACK) {
		t.Fatalf("Init with NACK: %v, want hal.ErrNACK", err)
	}
	dev.InjectNACK(false)
	if err := c.Init(tx); err != nil {
		t.Fatal(err)
	}
	dev.InjectNACK(true)
	_, err := c.Read(tx)
	if !errors.Is(err, hal.ErrNACK) {
		t.Fatalf("Read with NACK: %v, want hal.ErrNACK", err)
	}
	t.Log(err)

	// A Tx error that is not the HAL's is wrapped too.
	boom := errors.New("boom")
	if _, err := c.Read(func(w, r []byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Read: %v, want boom", err)
	}
	if err := c.Init(func(w, r []byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Init: %v, want boom", err)
	}
}

func TestReadAllocs(t *testing.T) {
	// With a Tx that allocates nothing, Read must allocate nothing either.
	_, simTx, _ := newSim(t, constant(20, 1000, 50))
	var image [256]byte
	if err := simTx([]byte{0x00}, image[:]); err != nil { // snapshot the simulated registers
		t.Fatal(err)
	}
	var c bme280.Chip
	tx := regs(&image)
	if err := c.Init(tx); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Read(tx); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Read allocates %v times per call, want 0", n)
	}

	// The whole path through the simulated bus allocates nothing either.
	if err := c.Init(simTx); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Read(simTx); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Read over the simulator allocates %v times per call, want 0", n)
	}
}

func BenchmarkRead(b *testing.B) {
	_, tx, _ := newSim(b, constant(20, 1000, 50))
	var c bme280.Chip
	if err := c.Init(tx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Read(tx); err != nil {
			b.Fatal(err)
		}
	}
}
