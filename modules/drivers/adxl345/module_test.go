package adxl345_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The adxl345 driver module is written in C (wasm/adxl345.c, built by make modules). These tests
// run it in the real engine over the simulated chip of hal/sim, on SPI and on I2C: every reading
// is exactly the chip's quantised value, and every fault the chip can suffer comes back as an
// errno from the poll, with the module still up and reading again once the fault is gone.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// bench is a simulated ADXL345 attached where the test says, and the clock.
type bench struct {
	dev *sim.ADXL345
	clk *perchtest.Clock
	p   *sim.Provider
}

// wiring says where the chip sits and what grants and config reach it.
type wiring struct {
	name   string
	spi    bool
	bus    int
	at     int // chip select or I2C address
	grants config.Grants
}

var wirings = []wiring{
	{"spi0.1", true, 0, 1, config.Grants{SPI: []config.SPIGrant{{Bus: 0, CS: 1}}, I2C: []config.I2CGrant{{Bus: 1, Address: 0x53}}}},
	{"i2c1-0x53", false, 1, 0x53, config.Grants{SPI: []config.SPIGrant{{Bus: 0, CS: 0}}, I2C: []config.I2CGrant{{Bus: 1, Address: 0x53}}}},
	{"i2c2-0x1d", false, 2, 0x1D, config.Grants{SPI: []config.SPIGrant{{Bus: 0, CS: 0}}, I2C: []config.I2CGrant{{Bus: 2, Address: 0x1D}}}},
}

func (w wiring) config(extra map[string]any) map[string]any {
	c := map[string]any{"bus": w.bus}
	if w.spi {
		c["cs"] = w.at
	} else {
		c["address"] = w.at
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func newBench(t testing.TB, w wiring, sig sim.ADXL345Signals) *bench {
	t.Helper()
	b := &bench{clk: perchtest.NewClock(epoch), p: sim.NewProvider()}
	b.dev = sim.NewADXL345(sig, b.clk.Now)
	var err error
	if w.spi {
		err = b.p.AttachSPI(w.bus, w.at, b.dev.SPI())
	} else {
		err = b.p.AttachI2C(w.bus, uint16(w.at), b.dev.I2C())
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// load loads the built module with the config, grants and devices on the bench's clock.
func load(t testing.TB, cfg map[string]any, grants config.Grants, h hal.Provider, clk *perchtest.Clock) (*runtime.Module, *perchtest.Logs, error) {
	t.Helper()
	return perchtest.LoadLogged(t, perchtest.Options{Wasm: perchtest.Built(t, "adxl345"), Config: cfg, Grants: grants, HAL: h, Now: clk.NS})
}

func mustLoad(t testing.TB, cfg map[string]any, grants config.Grants, h hal.Provider, clk *perchtest.Clock) (*runtime.Module, *perchtest.Logs) {
	t.Helper()
	m, l, err := load(t, cfg, grants, h, clk)
	if err != nil {
		t.Fatalf("loading the module with %v: %v\nlog:\n%s", cfg, err, l.String())
	}
	return m, l
}

// xyz decodes the driver's output, checking the records' shape.
func xyz(t testing.TB, out []byte, series string) [][3]float64 {
	t.Helper()
	var got [][3]float64
	for _, r := range perchtest.Decode(out) {
		if r.Kind != abi.KindReading || r.Series != series || len(r.Fields) != 3 || len(r.Tags) != 0 || r.TimeNS == 0 {
			t.Fatalf("record %+v", r)
		}
		got = append(got, [3]float64{r.Fields["x_g"], r.Fields["y_g"], r.Fields["z_g"]})
	}
	return got
}

// want returns what the driver must read for the signals at t under the DATA_FORMAT format.
func want(b *bench, t time.Time, format byte) [3]float64 {
	x, y, z := b.dev.Truth(t)
	scale := 1.0 / 256
	if format&0x08 == 0 {
		scale = float64(int(1)<<(format&3)) / 256
	}
	return [3]float64{float64(sim.ADXL345Raw(x, format)) * scale, float64(sim.ADXL345Raw(y, format)) * scale, float64(sim.ADXL345Raw(z, format)) * scale}
}

// TestModuleExact reads the chip on every wiring, range and resolution while a noisy signal
// sweeps the whole range (saturation included): every reading is exactly the chip's value.
func TestModuleExact(t *testing.T) {
	sig := sim.ADXL345Signals{
		X: sim.Signal{Value: 0.5},
		Y: sim.Signal{Shape: "noise", Mean: 0, Sigma: 6, Seed: 3},
		Z: sim.Signal{Shape: "sine", Mean: 1, Amplitude: 20, Period: sim.Duration(1300 * time.Millisecond)},
	}
	for _, w := range wirings {
		for _, rng := range []int{2, 4, 8, 16} {
			for _, res := range []string{"full", "10bit"} {
				t.Run(fmt.Sprintf("%s/%dg/%s", w.name, rng, res), func(t *testing.T) {
					b := newBench(t, w, sig)
					m, l := mustLoad(t, w.config(map[string]any{"range_g": rng, "resolution": res, "rate_hz": 100}), w.grants, b.p, b.clk)
					format := byte(map[int]byte{2: 0, 4: 1, 8: 2, 16: 3}[rng])
					if res == "full" {
						format |= 0x08
					}
					for i := range 60 {
						b.clk.Add(10 * time.Millisecond) // one sample period: a new sample each poll
						out, err := m.Poll(context.Background(), 4)
						if err != nil {
							t.Fatalf("poll %d: %v\n%s", i, err, l.String())
						}
						got := xyz(t, out, "acceleration")
						if len(got) != 1 {
							t.Fatalf("poll %d: %d readings, want 1 (one new sample)", i, len(got))
						}
						if w := want(b, b.clk.Now(), format); got[0] != w {
							t.Fatalf("poll %d: read %v, want %v", i, got[0], w)
						}
					}
					if got := xyz(t, mustPoll(t, m, 1), "acceleration"); len(got) != 0 {
						t.Errorf("a poll without a new sample emitted %v", got)
					}
				})
			}
		}
	}
}

func mustPoll(t *testing.T, m *runtime.Module, max int) []byte {
	t.Helper()
	out, err := m.Poll(context.Background(), max)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// spy records the SPI transfers the module makes.
type spy struct {
	dev sim.SPIDevice
	mu  sync.Mutex
	tx  []string
}

func (s *spy) Tx(ctx context.Context, w, r []byte) error {
	s.mu.Lock()
	s.tx = append(s.tx, fmt.Sprintf("% x", w))
	s.mu.Unlock()
	return s.dev.Tx(ctx, w, r)
}

// TestModuleProtocol checks the bytes on the SPI bus: the set-up sequence and the burst read.
func TestModuleProtocol(t *testing.T) {
	clk := perchtest.NewClock(epoch)
	dev := sim.NewADXL345(sim.ADXL345Signals{Z: sim.Signal{Value: 1}}, clk.Now)
	s := &spy{dev: dev.SPI()}
	p := sim.NewProvider()
	if err := p.AttachSPI(0, 1, s); err != nil {
		t.Fatal(err)
	}
	m, _ := mustLoad(t, wirings[0].config(map[string]any{"range_g": 16, "rate_hz": 400}), wirings[0].grants, p, clk)
	clk.Add(5 * time.Millisecond)
	if got := xyz(t, mustPoll(t, m, 1), "acceleration"); len(got) != 1 || got[0] != [3]float64{0, 0, 1} {
		t.Errorf("read %v", got)
	}
	want := []string{
		"80 00",                      // read DEVID
		"2d 00",                      // POWER_CTL: standby
		"2c 0c",                      // BW_RATE: 400 Hz
		"31 0b",                      // DATA_FORMAT: FULL_RES, ±16 g, right-justified
		"38 00",                      // FIFO_CTL: bypass
		"2d 08",                      // POWER_CTL: measure
		"f0 00 00 00 00 00 00 00 00", // read, multi-byte, from INT_SOURCE: 8 bytes
	}
	if got := strings.Join(s.tx, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("transfers\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

// TestModuleFaults injects every fault the chip can suffer, on SPI and on I2C: each comes back
// as the errno of a poll (with a log line saying what failed), the module stays up, and it reads
// exact values again once the fault is gone.
func TestModuleFaults(t *testing.T) {
	sig := sim.ADXL345Signals{X: sim.Signal{Shape: "ramp", From: -1, To: 1, Period: sim.Duration(10 * time.Second)}, Z: sim.Signal{Value: 1}}
	type fault struct {
		kind sim.FaultKind
		want abi.Errno
		log  string
	}
	common := []fault{
		{sim.FaultTimeout, abi.ETIMEDOUT, "ERROR perch_poll failed: adxl345: read data: perch: ETIMEDOUT"},
		{sim.FaultDisconnect, abi.ENODEV, "ERROR perch_poll failed: adxl345: read data: perch: ENODEV"},
		{sim.FaultCorrupt, abi.EIO, "ERROR perch_poll failed: adxl345: read data: perch: EIO"},
		{sim.FaultStuck, abi.ETIMEDOUT, "ERROR perch_poll failed: adxl345: no new sample for 50 ms (DATA_READY clear): stuck?"},
	}
	for _, w := range wirings[:2] {
		faults := common
		if !w.spi {
			faults = append(faults, fault{sim.FaultNACK, abi.ENACK, "ERROR perch_poll failed: adxl345: read data: perch: ENACK"})
		}
		for _, f := range faults {
			t.Run(w.name+"/"+string(f.kind), func(t *testing.T) {
				b := newBench(t, w, sig)
				m, l := mustLoad(t, w.config(nil), w.grants, b.p, b.clk)
				check := func(when string) {
					t.Helper()
					b.clk.Add(10 * time.Millisecond)
					out, err := m.Poll(context.Background(), 1)
					if err != nil {
						t.Fatalf("%s: %v\n%s", when, err, l.String())
					}
					if got := xyz(t, out, "acceleration"); len(got) != 1 || got[0] != want(b, b.clk.Now(), 0x08) {
						t.Fatalf("%s: read %v, want %v", when, got, want(b, b.clk.Now(), 0x08))
					}
				}
				check("before the fault")
				b.dev.Faults().Inject(f.kind, true)
				b.clk.Add(50 * time.Millisecond)
				out, err := m.Poll(context.Background(), 1)
				if perchtest.Errno(err) != f.want {
					t.Fatalf("poll during %s: %v (%T), want a *runtime.ErrnoError with %v", f.kind, err, err, f.want)
				}
				if len(out) != 0 {
					t.Errorf("poll during %s emitted %d bytes", f.kind, len(out))
				}
				if !strings.Contains(l.String(), f.log) {
					t.Errorf("log lacks %q:\n%s", f.log, l.String())
				}
				b.dev.Faults().Inject(f.kind, false)
				// The first poll after a failed read sets the chip up again: no sample yet (and
				// none is due: the set-up starts the stale timer again).
				if _, err := m.Poll(context.Background(), 1); err != nil && f.kind != sim.FaultStuck {
					t.Fatalf("first poll after %s: %v\n%s", f.kind, err, l.String())
				}
				check("after the fault")
				check("after the fault, again")
			})
		}
	}
}

// TestModuleScriptedFault: a fault scripted on the chip's clock comes and goes between polls.
func TestModuleScriptedFault(t *testing.T) {
	b := newBench(t, wirings[0], sim.ADXL345Signals{Z: sim.Signal{Value: -1}})
	b.dev.Faults().Script([]sim.Fault{{Kind: sim.FaultTimeout, At: sim.Duration(time.Second), For: sim.Duration(500 * time.Millisecond)}})
	m, _ := mustLoad(t, wirings[0].config(nil), wirings[0].grants, b.p, b.clk)
	var errs []abi.Errno
	readings := 0
	for range 40 { // 0 .. 2 s, every 50 ms
		b.clk.Add(50 * time.Millisecond)
		out, err := m.Poll(context.Background(), 1)
		errs = append(errs, perchtest.Errno(err))
		readings += len(xyz(t, out, "acceleration"))
	}
	timeouts := 0
	for i, e := range errs {
		at := time.Duration(i+1) * 50 * time.Millisecond
		inFault := at >= time.Second && at < 1500*time.Millisecond
		if inFault && e != abi.ETIMEDOUT || !inFault && e != 0 {
			t.Errorf("poll at %v: errno %v", at, e)
		}
		if e == abi.ETIMEDOUT {
			timeouts++
		}
	}
	if timeouts != 10 || readings != 29 { // 40 polls, 10 failed, 1 set-up after them
		t.Errorf("%d timeouts, %d readings", timeouts, readings)
	}
}

// TestModuleLostSetup: a chip that lost power while nobody was reading comes back in standby with
// its registers reset; the module notices (DATA_FORMAT) and sets it up again.
func TestModuleLostSetup(t *testing.T) {
	w := wirings[0]
	b := newBench(t, w, sim.ADXL345Signals{Z: sim.Signal{Value: 1}})
	m, l := mustLoad(t, w.config(map[string]any{"range_g": 8}), w.grants, b.p, b.clk)
	b.clk.Add(10 * time.Millisecond)
	mustPoll(t, m, 1)
	b.dev.Faults().Inject(sim.FaultDisconnect, true)
	port, _ := b.p.SPIPort(0, 1)
	_ = port.Tx(context.Background(), []byte{0x80, 0}, make([]byte, 2)) // someone sees it gone
	b.dev.Faults().Inject(sim.FaultDisconnect, false)
	b.clk.Add(10 * time.Millisecond)
	_, err := m.Poll(context.Background(), 1)
	if perchtest.Errno(err) != abi.EIO {
		t.Fatalf("poll after a power loss: %v, want EIO", err)
	}
	if want := "ERROR perch_poll failed: adxl345: the chip lost its set-up (DATA_FORMAT 0x00, want 0x0a): power-cycled? Setting it up again"; !strings.Contains(l.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, l.String())
	}
	mustPoll(t, m, 1) // sets it up
	b.clk.Add(10 * time.Millisecond)
	if got := xyz(t, mustPoll(t, m, 1), "acceleration"); len(got) != 1 || got[0] != [3]float64{0, 0, 1} {
		t.Errorf("after setting it up again: %v", got)
	}
}

// TestModuleInit: configs refused with their messages; an absent device does not stop the
// module (polls report it); a grant for another chip select is EPERM at init.
func TestModuleInit(t *testing.T) {
	w := wirings[0]
	for _, c := range []struct {
		cfg map[string]any
		log string
	}{
		{map[string]any{"address": 0x54}, "config: address: want 0 (SPI), 0x53 or 0x1d (I2C), got 0x54"},
		{map[string]any{"range_g": 3}, "config: range_g: want 2, 4, 8 or 16, got 3"},
		{map[string]any{"resolution": "13bit"}, `config: resolution: want "full" or "10bit", got "13bit"`},
		{map[string]any{"rate_hz": 99}, "config: rate_hz: want one of 3200, 1600, 800, 400, 200, 100, 50, 25, 12.5, 6.25, 3.13, 1.56, 0.78, 0.39, 0.2 or 0.1, got 99"},
		{map[string]any{"stale_after": "soon"}, `config: stale_after: want a positive duration such as "1s", got "soon"`},
		{map[string]any{"bus": -1}, "config: bus and cs must be between 0 and 2147483647"},
		{map[string]any{"range": 2}, `perch: config: json: unknown field "range"`},
	} {
		b := newBench(t, w, sim.ADXL345Signals{})
		_, l, err := load(t, w.config(c.cfg), w.grants, b.p, b.clk)
		if err == nil || !strings.Contains(err.Error(), "perch_init returned perch: EINVAL") {
			t.Errorf("%v: %v, want EINVAL", c.cfg, err)
		}
		if want := "ERROR perch_init failed: " + c.log; l.String() != want {
			t.Errorf("%v: logged\n%s\nwant\n%s", c.cfg, l.String(), want)
		}
	}

	// Granted chip select 0, configured for 1: EPERM.
	b := newBench(t, w, sim.ADXL345Signals{})
	g := config.Grants{SPI: []config.SPIGrant{{Bus: 0, CS: 0}}, I2C: w.grants.I2C}
	if _, _, err := load(t, w.config(nil), g, b.p, b.clk); err == nil || !strings.Contains(err.Error(), "EPERM") {
		t.Errorf("ungranted chip select: %v, want EPERM", err)
	}

	// Nothing there: init goes on with a warning; polls say ENODEV until the chip appears.
	clk := perchtest.NewClock(epoch)
	p := sim.NewProvider()
	m, l := mustLoad(t, w.config(nil), w.grants, p, clk)
	if want := "WARN perch_init: adxl345: read device id: perch: ENODEV; will retry at each poll"; l.String() != want {
		t.Errorf("logged %q, want %q", l.String(), want)
	}
	if _, err := m.Poll(context.Background(), 1); perchtest.Errno(err) != abi.ENODEV {
		t.Errorf("poll with no chip: %v, want ENODEV", err)
	}
	dev := sim.NewADXL345(sim.ADXL345Signals{Y: sim.Signal{Value: 2}}, clk.Now)
	if err := p.AttachSPI(0, 1, dev.SPI()); err != nil {
		t.Fatal(err)
	}
	mustPoll(t, m, 1)
	clk.Add(10 * time.Millisecond)
	if got := xyz(t, mustPoll(t, m, 1), "acceleration"); len(got) != 1 || got[0] != [3]float64{0, 511.0 / 256, 0} {
		t.Errorf("once the chip is there: %v (2 g saturates at 511 LSB at ±2 g)", got)
	}

	// Poll limits.
	if _, err := m.Poll(context.Background(), -1); perchtest.Errno(err) != abi.EINVAL {
		t.Errorf("poll -1: %v", err)
	}
	if out, err := m.Poll(context.Background(), 0); err != nil || len(out) != 0 {
		t.Errorf("poll 0: %v, %d bytes", err, len(out))
	}
}
