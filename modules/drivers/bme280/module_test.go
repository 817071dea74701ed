package bme280_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/modules/drivers/bme280"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The bme280 driver module is written in C (wasm/bme280.c, built by make modules). These tests
// run it in the real engine over simulated chips and hold it to the Go package (the reference
// logic: the same calibration and data registers must give the same readings) and to the
// simulated truth.

var grant76 = config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x76}}}

// loadDriver loads the built C module with a raw JSON config, grants and devices, capturing its
// log.
func loadDriver(t testing.TB, cfg string, grants config.Grants, h hal.Provider) (*runtime.Module, *perchtest.Logs, error) {
	t.Helper()
	return perchtest.LoadLogged(t, perchtest.Options{Wasm: perchtest.Built(t, "bme280"), Config: perchtest.RawConfig(cfg), Grants: grants, HAL: h})
}

func mustLoadDriver(t testing.TB, cfg string, grants config.Grants, h hal.Provider) (*runtime.Module, *perchtest.Logs) {
	t.Helper()
	m, l, err := loadDriver(t, cfg, grants, h)
	if err != nil {
		t.Fatalf("loading the C module with %s: %v\nlog:\n%s", cfg, err, l.String())
	}
	return m, l
}

// simChip attaches a simulated BME280 with the signals at bus 1, 0x76, on a fixed clock.
func simChip(t testing.TB, sig sim.Signals) (*sim.Provider, *sim.BME280, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: epoch}
	dev := sim.NewBME280(sig, clk.now)
	p := sim.NewProvider()
	if err := p.AttachI2C(1, 0x76, dev); err != nil {
		t.Fatal(err)
	}
	return p, dev, clk
}

// readings decodes a driver's output into (temperature, pressure, humidity) triples, checking
// the record's shape: a reading of series series with the three fields in order.
func readings(t testing.TB, out []byte, series string) [][3]float64 {
	t.Helper()
	var got [][3]float64
	it := abi.Iter{Buf: out}
	for it.Next() {
		r := &it.Rec
		if r.Kind != abi.KindReading || string(r.Series) != series || string(r.Source) != "bme280" || r.NumFields() != 3 || r.NumTags() != 0 {
			t.Fatalf("record %v %q %q with %d fields, %d tags", r.Kind, r.Source, r.Series, r.NumFields(), r.NumTags())
		}
		var v [3]float64
		for i, want := range []string{"temperature_c", "pressure_hpa", "humidity_pct"} {
			name, x := r.FieldAt(i)
			if string(name) != want {
				t.Fatalf("field %d is %q, want %q", i, name, want)
			}
			v[i] = x
		}
		if r.TimeNS == 0 {
			t.Fatal("time 0: the host should have stamped it")
		}
		got = append(got, v)
	}
	if it.Err() != nil {
		t.Fatal(it.Err())
	}
	return got
}

// TestModuleMatchesTruth reads simulated chips over the sensor's range through the C module: every
// reading within 0.01 of the simulated truth, and the same as the Go package's on a twin chip.
func TestModuleMatchesTruth(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	type point struct{ c, hPa, pct float64 }
	points := []point{{21.5, 1013.25, 45}, {-40, 300, 0}, {85, 1100, 100}, {-40, 1100, 100}, {85, 300, 0},
		{0, 1013.25, 50}, {-12.34, 990, 80}, {-50, 200, -5}, {100, 1200, 120}}
	for range 40 {
		points = append(points, point{-40 + 125*rng.Float64(), 300 + 800*rng.Float64(), 100 * rng.Float64()})
	}
	for _, pt := range points {
		sig := constant(pt.c, pt.hPa, pt.pct)
		p, dev, clk := simChip(t, sig)
		m, _ := mustLoadDriver(t, `{"bus":1,"address":118}`, grant76, p)
		out, err := m.Poll(context.Background(), 3)
		if err != nil {
			t.Fatal(err)
		}
		got := readings(t, out, "environment")
		if len(got) != 3 {
			t.Fatalf("%d readings, want 3", len(got))
		}
		tempC, hPa, pct := dev.Truth(clk.t)
		_, tx, _ := newSim(t, sig) // the twin, for the Go package
		var c bme280.Chip
		if err := c.Init(tx); err != nil {
			t.Fatal(err)
		}
		want, err := c.Read(tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range got {
			if math.Abs(v[0]-tempC) > tolC || math.Abs(v[1]-hPa) > tolHPa || math.Abs(v[2]-pct) > tolPct {
				t.Errorf("read %v, truth %v °C %v hPa %v %%RH", v, tempC, hPa, pct)
			}
			if v != [3]float64{want.TemperatureC, want.PressureHPa, want.HumidityPct} {
				t.Errorf("C read %v, Go %+v", v, want)
			}
		}
	}
}

// TestModuleFollowsSignal polls one chip as its clock advances.
func TestModuleFollowsSignal(t *testing.T) {
	sig := sim.Signals{
		Temperature: sim.Signal{Shape: "ramp", From: 10, To: 30, Period: sim.Duration(10 * time.Minute)},
		Pressure:    sim.Signal{Sum: []sim.Signal{{Value: 1013}, {Shape: "noise", Sigma: 0.5, Seed: 7}}},
		Humidity:    sim.Signal{Shape: "step", From: 40, To: 70, Start: sim.Duration(5 * time.Minute)},
	}
	p, dev, clk := simChip(t, sig)
	m, _ := mustLoadDriver(t, `{}`, grant76, p)
	for i := range 24 {
		clk.t = epoch.Add(time.Duration(i) * 30 * time.Second)
		out, err := m.Poll(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		got := readings(t, out, "environment")
		tempC, hPa, pct := dev.Truth(clk.t)
		if len(got) != 1 || math.Abs(got[0][0]-tempC) > tolC || math.Abs(got[0][1]-hPa) > tolHPa || math.Abs(got[0][2]-pct) > tolPct {
			t.Errorf("at %v read %v, truth %v °C %v hPa %v %%RH", clk.t, got, tempC, hPa, pct)
		}
	}
}

// imageChip is a BME280 register file with any contents: it serves reads from the register
// pointer on and stores writes, so that any calibration and any raw data can be read.
type imageChip struct {
	mu    sync.Mutex
	regs  [256]byte
	ptr   byte
	nack  bool
	write [][]byte // what the controller wrote, in order
}

func (c *imageChip) Tx(_ context.Context, w, r []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nack {
		return hal.ErrNACK
	}
	c.write = append(c.write, append([]byte(nil), w...))
	i := 0
	for ; i+1 < len(w); i += 2 {
		if w[i] < 0xF2 || w[i] > 0xF5 { // the calibration, id and data registers are read-only
			continue
		}
		c.regs[w[i]] = w[i+1]
	}
	if i < len(w) {
		c.ptr = w[i]
	}
	for k := range r {
		r[k] = c.regs[c.ptr]
		c.ptr++
	}
	return nil
}

func (c *imageChip) tx(w, r []byte) error { return c.Tx(context.Background(), w, r) }

// TestModuleCalibrations is the differential test of the chip logic: random calibrations (every
// sign of every parameter, H4 and H5 packed in their shared byte) and random raw data, read by
// the C module and by the Go package, must give the same readings, bit for bit.
func TestModuleCalibrations(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	chip := &imageChip{}
	chip.regs[0xD0] = bme280.ChipID
	p := sim.NewProvider()
	if err := p.AttachI2C(1, 0x76, chip); err != nil {
		t.Fatal(err)
	}
	m, l := mustLoadDriver(t, `{}`, grant76, p)
	for i := range 500 {
		chip.mu.Lock()
		for r := 0x88; r <= 0xA1; r++ {
			chip.regs[r] = byte(rng.Uint32())
		}
		for r := 0xE1; r <= 0xE7; r++ {
			chip.regs[r] = byte(rng.Uint32())
		}
		for r := 0xF7; r <= 0xFE; r++ {
			chip.regs[r] = byte(rng.Uint32())
		}
		if i%10 == 0 { // edges: zero P1 (invalid calibration), extreme raw values
			chip.regs[0x8E], chip.regs[0x8F] = 0, 0
			for r := 0xF7; r <= 0xFE; r++ {
				chip.regs[r] = []byte{0, 0xFF}[i/10%2]
			}
		}
		chip.nack = true // a failed poll makes the module read the calibration again
		chip.mu.Unlock()
		if _, err := m.Poll(context.Background(), 1); err == nil {
			t.Fatal("poll with NACK succeeded")
		}
		chip.mu.Lock()
		chip.nack = false
		chip.mu.Unlock()
		out, err := m.Poll(context.Background(), 2)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.String())
		}
		got := readings(t, out, "environment")
		var c bme280.Chip
		if err := c.Init(chip.tx); err != nil {
			t.Fatal(err)
		}
		want, err := c.Read(chip.tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range got {
			w := [3]float64{want.TemperatureC, want.PressureHPa, want.HumidityPct}
			for k := range v {
				if v[k] != w[k] && !(math.IsNaN(v[k]) && math.IsNaN(w[k])) {
					t.Fatalf("image %d: C read %v, Go %v", i, v, w)
				}
			}
		}
	}
}

// TestModuleTransactions checks that the module talks to the chip as the Go package does: the
// same writes in the same order for init and for each read.
func TestModuleTransactions(t *testing.T) {
	chip := &imageChip{}
	chip.regs[0xD0] = bme280.ChipID
	p := sim.NewProvider()
	if err := p.AttachI2C(1, 0x77, chip); err != nil {
		t.Fatal(err)
	}
	m, _ := mustLoadDriver(t, `{"address":119}`, config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x77}}}, p)
	if _, err := m.Poll(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	cWrites := fmt.Sprint(chip.write)
	chip.write = nil
	var c bme280.Chip
	if err := c.Init(chip.tx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Read(chip.tx); err != nil {
			t.Fatal(err)
		}
	}
	if goWrites := fmt.Sprint(chip.write); cWrites != goWrites {
		t.Errorf("C wrote %s\nGo wrote %s", cWrites, goWrites)
	}
}

// TestModuleNACK: a chip that stops acknowledging makes a poll fail with ENACK (an errno, not a
// fault: the module stays up and emits nothing for that poll); when it answers again the module
// sets it up again and reads on.
func TestModuleNACK(t *testing.T) {
	p, dev, _ := simChip(t, constant(20, 1000, 50))
	m, l := mustLoadDriver(t, `{}`, grant76, p)
	if out, err := m.Poll(context.Background(), 4); err != nil || len(readings(t, out, "environment")) != 4 {
		t.Fatalf("poll: %v", err)
	}
	dev.InjectNACK(true)
	out, err := m.Poll(context.Background(), 4)
	var ee *runtime.ErrnoError
	if !errors.As(err, &ee) || ee.Errno != abi.ENACK {
		t.Fatalf("poll with NACK: %v (%T), want a *runtime.ErrnoError with ENACK", err, err)
	}
	if len(out) != 0 {
		t.Errorf("poll with NACK emitted %d bytes", len(out))
	}
	if want := "ERROR perch_poll failed: bme280: start measurement: perch: ENACK"; !strings.Contains(l.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, l.String())
	}
	// Still NACK: the set-up fails now.
	if _, err := m.Poll(context.Background(), 1); !errors.As(err, &ee) || ee.Errno != abi.ENACK {
		t.Fatalf("second poll with NACK: %v", err)
	}
	if want := "ERROR perch_poll failed: bme280: read chip id: perch: ENACK"; !strings.Contains(l.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, l.String())
	}
	dev.InjectNACK(false)
	out, err = m.Poll(context.Background(), 2)
	if err != nil {
		t.Fatalf("poll after the NACKs: %v", err)
	}
	for _, v := range readings(t, out, "environment") {
		if math.Abs(v[0]-20) > tolC || math.Abs(v[1]-1000) > tolHPa || math.Abs(v[2]-50) > tolPct {
			t.Errorf("after the NACKs read %v", v)
		}
	}
}

// TestModuleInitErrors: a chip that does not answer, or answers with another id, fails the
// module's init with the Go module's message.
func TestModuleInitErrors(t *testing.T) {
	p, dev, _ := simChip(t, constant(20, 1000, 50))
	dev.InjectNACK(true)
	_, l, err := loadDriver(t, `{}`, grant76, p)
	if err == nil || !strings.Contains(err.Error(), "perch_init returned perch: ENACK") {
		t.Errorf("init with NACK: %v, want ENACK", err)
	}
	if want := "ERROR perch_init failed: bme280: read chip id: perch: ENACK"; l.String() != want {
		t.Errorf("logged %q, want %q", l.String(), want)
	}

	chip := &imageChip{}
	chip.regs[0xD0] = 0x58 // a BMP280
	p = sim.NewProvider()
	if err := p.AttachI2C(1, 0x76, chip); err != nil {
		t.Fatal(err)
	}
	_, l, err = loadDriver(t, `{}`, grant76, p)
	if err == nil || !strings.Contains(err.Error(), "perch_init returned perch: EINVAL") {
		t.Errorf("init with a BMP280: %v, want EINVAL", err)
	}
	if want := "ERROR perch_init failed: bme280: chip id 0x58, want 0x60"; l.String() != want {
		t.Errorf("logged %q, want %q", l.String(), want)
	}

	// Nothing at the address.
	_, _, err = loadDriver(t, `{}`, grant76, sim.NewProvider())
	if err == nil || !strings.Contains(err.Error(), "ENACK") {
		t.Errorf("init with no chip: %v, want ENACK", err)
	}
}

// goDriverConfig is the Go module's config, decoded as the Go SDK did.
type goDriverConfig struct {
	Bus     int    `json:"bus"`
	Address int    `json:"address"`
	Series  string `json:"series"`
}

// goDriverInit returns the config the Go module ran with, or the message it logged.
func goDriverInit(raw string) (goDriverConfig, error) {
	cfg := goDriverConfig{Bus: 1, Address: 0x76, Series: "environment"}
	if err := perchtest.GoConfig(raw, &cfg); err != nil {
		// The Go module's config type was main.config.
		return cfg, errors.New(strings.ReplaceAll(err.Error(), "bme280_test.goDriverConfig", "main.config"))
	}
	if cfg.Address != 0x76 && cfg.Address != 0x77 {
		return cfg, fmt.Errorf("config: address: want 0x76 or 0x77, got %#x", cfg.Address)
	}
	if cfg.Series == "" {
		cfg.Series = "environment"
	}
	return cfg, nil
}

// TestModuleConfig compares the C module's config handling with the Go module's: the same configs
// are accepted and read the chip where they say, with the series they say; the same messages
// are logged for those refused.
func TestModuleConfig(t *testing.T) {
	long := strings.Repeat("s", 300)
	for _, cfg := range []string{
		`{}`, ``, `null`, `{"bus":1,"address":118,"series":"environment"}`, `{"address":119}`, `{"bus":3}`,
		`{"series":"lab"}`, `{"series":""}`, `{"series":null}`, `{"series":"` + long + `"}`, `{"BUS":2,"Address":119}`,
		`{"address":120}`, `{"address":0}`, `{"address":-1}`, `{"address":-9223372036854775808}`, `{"address":9223372036854775807}`,
		`{"address":118.0}`, `{"address":1.18e2}`, `{"address":9223372036854775808}`, `{"address":"0x76"}`, `{"address":true}`,
		`{"bus":"1"}`, `{"bus":1.5}`, `{"bus":[1]}`, `{"bus":{}}`, `{"bus":-0}`, `{"series":5}`, `{"port":1}`,
		`{"bus":1} x`, `[]`, `"x"`, `7`, `{"bus":1,}`, `{"bus":}`,
	} {
		t.Run(cfg[:min(len(cfg), 50)], func(t *testing.T) {
			goCfg, goErr := goDriverInit(cfg)
			p := sim.NewProvider()
			grants := grant76
			if goErr == nil {
				if err := p.AttachI2C(goCfg.Bus, uint16(goCfg.Address), sim.NewBME280(constant(20, 1000, 50), nil)); err != nil {
					t.Fatal(err)
				}
				grants = config.Grants{I2C: []config.I2CGrant{{Bus: goCfg.Bus, Address: goCfg.Address}}}
			}
			m, l, cErr := loadDriver(t, cfg, grants, p)
			if !perchtest.SameInit(t, "", goErr, cErr, l.String()) {
				return
			}
			out, err := m.Poll(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			series := goCfg.Series[:min(len(goCfg.Series), abi.MaxString)] // cut as the builder cuts it
			if got := readings(t, out, series); len(got) != 1 {
				t.Errorf("%d readings", len(got))
			}
		})
	}
}

// TestModulePollLimits: poll asks for up to max records; max 0 gives none, a negative max is
// EINVAL, and a large one grows the output.
func TestModulePollLimits(t *testing.T) {
	p, _, _ := simChip(t, constant(20, 1000, 50))
	m, _ := mustLoadDriver(t, `{"series":"`+strings.Repeat("x", 200)+`"}`, grant76, p)
	if out, err := m.Poll(context.Background(), 0); err != nil || len(out) != 0 {
		t.Errorf("poll 0: %v, %d bytes", err, len(out))
	}
	var ee *runtime.ErrnoError
	if _, err := m.Poll(context.Background(), -1); !errors.As(err, &ee) || ee.Errno != abi.EINVAL {
		t.Errorf("poll -1: %v, want EINVAL", err)
	}
	out, err := m.Poll(context.Background(), 3000) // within the emit quotas (4096 records, 1 MiB)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(readings(t, out, strings.Repeat("x", 200))); n != 3000 {
		t.Errorf("%d readings, want 3000", n)
	}
}

// BenchmarkModule: one reading through the driver over the simulated I2C bus, polled 256 at a
// time, as the C module in Wasm (impl=c-wasm) and as the Go package natively with a builder
// (impl=go-native); ns/op is per record. Compare with benchstat -col /impl.
func BenchmarkModule(b *testing.B) {
	const n = 256
	sig := constant(22, 1013.25, 45)
	b.Run("impl=c-wasm", func(b *testing.B) {
		p := sim.NewProvider()
		if err := p.AttachI2C(1, 0x76, sim.NewBME280(sig, nil)); err != nil {
			b.Fatal(err)
		}
		m, _ := mustLoadDriver(b, `{"bus":1,"address":118}`, grant76, p)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for done := 0; done < b.N; done += n {
			if _, err := m.Poll(ctx, n); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
	})
	b.Run("impl=go-native", func(b *testing.B) {
		p := sim.NewProvider()
		if err := p.AttachI2C(1, 0x76, sim.NewBME280(sig, nil)); err != nil {
			b.Fatal(err)
		}
		bus, err := p.I2CBus(1)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		tx := func(w, r []byte) error { return bus.Tx(ctx, 0x76, w, r) }
		var c bme280.Chip
		if err := c.Init(tx); err != nil {
			b.Fatal(err)
		}
		var out abi.Builder
		b.ReportAllocs()
		b.ResetTimer()
		for done := 0; done < b.N; done += n {
			out.Buf = out.Buf[:0]
			for range n {
				r, err := c.Read(tx)
				if err != nil {
					b.Fatal(err)
				}
				out.Begin(abi.KindReading, 0, "", "environment")
				out.Field("temperature_c", r.TemperatureC)
				out.Field("pressure_hpa", r.PressureHPa)
				out.Field("humidity_pct", r.HumidityPct)
				out.End()
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
	})
}

// stuckChip attaches a simulated BME280 with the signals at bus 1, 0x76, behind a fault set
// whose stuck fault freezes the chip's measurements, as the runtime wires it.
func stuckChip(t testing.TB, sig sim.Signals) (*sim.Provider, *sim.Faults, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: epoch}
	f := sim.NewFaults(clk.now)
	p := sim.NewProvider()
	if err := p.AttachI2C(1, 0x76, sim.FaultyI2C(sim.NewBME280(sig, f.SignalClock), f)); err != nil {
		t.Fatal(err)
	}
	return p, f, clk
}

// noisy is a room whose readings carry sensor noise, as a real chip's do: no two raw readings at
// different instants are the same.
var noisy = sim.Signals{
	Temperature: sim.Signal{Sum: []sim.Signal{{Value: 21}, {Shape: "noise", Sigma: 0.02, Seed: 1}}},
	Pressure:    sim.Signal{Sum: []sim.Signal{{Value: 1013}, {Shape: "noise", Sigma: 0.03, Seed: 2}}},
	Humidity:    sim.Signal{Value: 45},
}

// TestModuleStuck: with stuck_reads 4, a chip whose measurements freeze fails the fourth poll
// with the same raw data, and every poll after it, with EIO (nothing emitted); when it measures
// again the module reads on. Noisy readings never trip it, and without stuck_reads (the
// default) a frozen chip is read as if it were live.
func TestModuleStuck(t *testing.T) {
	type result struct {
		errno abi.Errno
		n     int
	}
	run := func(t *testing.T, cfg string, polls int, m *runtime.Module, clk *fakeClock) []result {
		t.Helper()
		var got []result
		for range polls {
			clk.t = clk.t.Add(time.Second)
			out, err := m.Poll(context.Background(), 1)
			if err != nil && perchtest.Errno(err) == 0 {
				t.Fatalf("%s: %v (a fault, not an errno)", cfg, err)
			}
			got = append(got, result{perchtest.Errno(err), len(readings(t, out, "environment"))})
		}
		return got
	}
	ok := result{0, 1}
	stuck := result{abi.EIO, 0}

	p, f, clk := stuckChip(t, noisy)
	m, l := mustLoadDriver(t, `{"stuck_reads":4}`, grant76, p)
	if got := run(t, "noisy", 200, m, clk); !allEqual(got, ok) {
		t.Fatalf("noisy chip: %v, want 200 readings and no error", got)
	}
	clk.t = clk.t.Add(500 * time.Millisecond) // the values freeze between two polls
	f.Inject(sim.FaultStuck, true)
	got := run(t, "stuck", 6, m, clk)
	if want := []result{ok, ok, ok, stuck, stuck, stuck}; !slicesEqual(got, want) {
		t.Errorf("frozen chip: %v, want %v", got, want)
	}
	for _, want := range []string{
		"ERROR perch_poll failed: bme280: stuck: 4 readings in a row with the same raw data",
		"ERROR perch_poll failed: bme280: stuck: 6 readings in a row with the same raw data",
	} {
		if !strings.Contains(l.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, l.String())
		}
	}
	f.Inject(sim.FaultStuck, false)
	if got := run(t, "unstuck", 3, m, clk); !allEqual(got, ok) {
		t.Errorf("after the fault: %v, want readings", got)
	}

	// Off by default: a frozen chip is read on (its readings cannot be told from live ones).
	p, f, clk = stuckChip(t, noisy)
	m, _ = mustLoadDriver(t, `{}`, grant76, p)
	f.Inject(sim.FaultStuck, true)
	if got := run(t, "default", 20, m, clk); !allEqual(got, ok) {
		t.Errorf("stuck_reads off: %v, want readings", got)
	}

	// A constant signal is what a frozen chip looks like: hal/sim's chip has no noise of its own.
	p, _, clk = stuckChip(t, constant(20, 1000, 50))
	m, _ = mustLoadDriver(t, `{"stuck_reads":2}`, grant76, p)
	if got := run(t, "constant", 2, m, clk); !slicesEqual(got, []result{ok, stuck}) {
		t.Errorf("constant signal with stuck_reads 2: %v", got)
	}

	for cfg, want := range map[string]string{
		`{"stuck_reads":1}`:   "ERROR perch_init failed: config: stuck_reads: want 0 (off) or 2 or more, got 1",
		`{"stuck_reads":-3}`:  "ERROR perch_init failed: config: stuck_reads: want 0 (off) or 2 or more, got -3",
		`{"stuck_reads":"4"}`: `ERROR perch_init failed: perch: config field "stuck_reads": a JSON string cannot be a int`,
	} {
		_, l, err := loadDriver(t, cfg, grant76, p)
		if perchtest.Errno(err) != abi.EINVAL && (err == nil || !strings.Contains(err.Error(), "EINVAL")) {
			t.Errorf("%s: %v, want EINVAL", cfg, err)
		}
		if l.String() != want {
			t.Errorf("%s: logged\n%s\nwant\n%s", cfg, l.String(), want)
		}
	}
}

func allEqual[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x != v {
			return false
		}
	}
	return true
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
