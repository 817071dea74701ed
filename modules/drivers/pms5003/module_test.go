package pms5003_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The pms5003 driver module is written in C (wasm/pms5003.c, built by make modules). These tests
// run it in the real engine over hal/sim's PMS5003, whose frames arrive byte by byte at 9600
// baud: every frame becomes one reading with exactly the frame's values, and every fault comes
// back as an errno (a corrupt frame as EIO, the good frames around it still read).

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const port = "/dev/ttyUSB0"

var grant = config.Grants{UART: []config.UARTGrant{{Port: port}}}

func load(t testing.TB, cfg map[string]any, grants config.Grants, h hal.Provider, clk *perchtest.Clock) (*runtime.Module, *perchtest.Logs, error) {
	t.Helper()
	return perchtest.LoadLogged(t, perchtest.Options{Wasm: perchtest.Built(t, "pms5003"), Config: cfg, Grants: grants, HAL: h, Now: clk.NS})
}

// bench is a PMS5003 on the port and the module reading it, on one clock.
func bench(t *testing.T, sig sim.PMS5003Signals, cfg map[string]any) (*sim.PMS5003, *perchtest.Clock, *runtime.Module, *perchtest.Logs) {
	t.Helper()
	clk := perchtest.NewClock(epoch)
	dev := sim.NewPMS5003(sig, clk.Now)
	p := sim.NewProvider()
	if err := p.AttachUART(port, dev); err != nil {
		t.Fatal(err)
	}
	if cfg == nil {
		cfg = map[string]any{"port": port}
	}
	m, l, err := load(t, cfg, grant, p, clk)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.String())
	}
	return dev, clk, m, l
}

var fieldNames = []string{"pm1_0_ugm3", "pm2_5_ugm3", "pm10_ugm3", "pm1_0_atm_ugm3", "pm2_5_atm_ugm3", "pm10_atm_ugm3",
	"n0_3_per_dl", "n0_5_per_dl", "n1_0_per_dl", "n2_5_per_dl", "n5_0_per_dl", "n10_per_dl"}

// data decodes the driver's output into frame data, checking the records' shape.
func data(t testing.TB, out []byte, series string) []sim.PMS5003Data {
	t.Helper()
	var got []sim.PMS5003Data
	for _, r := range perchtest.Decode(out) {
		if r.Kind != abi.KindReading || r.Series != series || len(r.Fields) != 12 || r.TimeNS == 0 {
			t.Fatalf("record %+v", r)
		}
		var d sim.PMS5003Data
		for i, name := range fieldNames {
			v, ok := r.Fields[name]
			if !ok || v != float64(uint16(v)) {
				t.Fatalf("field %s = %v, %v", name, v, ok)
			}
			d[i] = uint16(v)
		}
		got = append(got, d)
	}
	return got
}

// busy has every quantity moving, each differently, over the whole 16-bit range.
var busy = sim.PMS5003Signals{
	PM1:     sim.Signal{Shape: "ramp", From: 0, To: 65535, Period: sim.Duration(30 * time.Second)},
	PM25:    sim.Signal{Shape: "noise", Mean: 35, Sigma: 20, Seed: 1},
	PM10:    sim.Signal{Shape: "sine", Mean: 300, Amplitude: 400, Period: sim.Duration(7 * time.Second)},
	PM1Atm:  sim.Signal{Value: 0x4242}, // looks like frame headers inside the frame
	PM25Atm: sim.Signal{Value: 0x424D},
	PM10Atm: sim.Signal{Shape: "step", From: 1, To: 70000, Start: sim.Duration(5 * time.Second)},
	N03:     sim.Signal{Shape: "noise", Mean: 3000, Sigma: 2000, Seed: 2},
	N05:     sim.Signal{Value: 823},
	N1:      sim.Signal{Value: 144},
	N25:     sim.Signal{Value: 12},
	N5:      sim.Signal{Value: 2},
	N10:     sim.Signal{Value: 0x4D},
}

// TestModuleExact polls at several rates, so that frames arrive whole, split across polls, or
// several at once: every frame becomes one reading with exactly its values, in order, and the
// strictest stuck detection never trips on a live sensor.
func TestModuleExact(t *testing.T) {
	for _, step := range []time.Duration{7 * time.Millisecond, 250 * time.Millisecond, 3500 * time.Millisecond} {
		t.Run(step.String(), func(t *testing.T) {
			// stuck_reads 2: busy's counts move, so no two frames in a row may be alike.
			dev, clk, m, l := bench(t, busy, map[string]any{"port": port, "series": "air", "timeout": "10s", "stuck_reads": 2})
			var got []sim.PMS5003Data
			for at := step; at < 20*time.Second+step; at += step {
				clk.Set(min(at, 20*time.Second))
				out, err := m.Poll(context.Background(), 8)
				if err != nil {
					t.Fatalf("at %v: %v\n%s", at, err, l.String())
				}
				got = append(got, data(t, out, "air")...)
			}
			// Frames at 0 s .. 19 s are complete by 20 s; the one at 20 s has not arrived.
			if len(got) != 20 {
				t.Fatalf("%d readings, want 20", len(got))
			}
			for k, d := range got {
				if want := dev.Truth(epoch.Add(time.Duration(k) * time.Second)); d != want {
					t.Errorf("frame %d: read %v, want %v", k, d, want)
				}
			}
		})
	}
}

// TestModulePollMax: frames beyond max stay for the next poll.
func TestModulePollMax(t *testing.T) {
	_, clk, m, _ := bench(t, busy, nil)
	clk.Set(3500 * time.Millisecond) // frames at 0, 1, 2, 3 s
	var n []int
	for range 5 {
		out, err := m.Poll(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		n = append(n, len(data(t, out, "air")))
	}
	if want := []int{1, 1, 1, 1, 0}; !slices.Equal(n, want) {
		t.Errorf("readings per poll %v, want %v", n, want)
	}
}

// TestModuleWakesSensor: a sensor left asleep in passive mode is woken and put in active mode.
func TestModuleWakesSensor(t *testing.T) {
	clk := perchtest.NewClock(epoch)
	dev := sim.NewPMS5003(busy, clk.Now)
	clk.Set(100 * time.Millisecond)
	if n, err := dev.Read(context.Background(), make([]byte, 64)); n != 32 || err != nil { // frame 0
		t.Fatal(n, err)
	}
	for _, c := range [][7]byte{sim.PMS5003Command(sim.PMS5003CmdMode, 0), sim.PMS5003Command(sim.PMS5003CmdSleep, 0)} {
		if _, err := dev.Write(context.Background(), c[:]); err != nil {
			t.Fatal(err)
		}
	}
	p := sim.NewProvider()
	if err := p.AttachUART(port, dev); err != nil {
		t.Fatal(err)
	}
	clk.Set(500 * time.Millisecond)
	m, l, err := load(t, map[string]any{"port": port}, grant, p, clk)
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(1100 * time.Millisecond)
	out, err := m.Poll(context.Background(), 4)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.String())
	}
	if got := data(t, out, "air"); len(got) != 1 || got[0] != dev.Truth(epoch.Add(time.Second)) {
		t.Errorf("after waking the sensor: %v", got)
	}
}

// TestModuleFaults injects every fault the sensor can suffer.
func TestModuleFaults(t *testing.T) {
	poll := func(t *testing.T, m *runtime.Module, clk *perchtest.Clock, at time.Duration) ([]sim.PMS5003Data, abi.Errno) {
		t.Helper()
		clk.Set(at)
		out, err := m.Poll(context.Background(), 8)
		if err != nil && perchtest.Errno(err) == 0 {
			t.Fatalf("at %v: %v (a fault, not an errno)", at, err)
		}
		return data(t, out, "air"), perchtest.Errno(err)
	}
	t.Run("corrupt", func(t *testing.T) {
		dev, clk, m, l := bench(t, busy, nil)
		dev.Faults().Script([]sim.Fault{{Kind: sim.FaultCorrupt, At: sim.Duration(1500 * time.Millisecond), For: sim.Duration(time.Second)}})
		got, e := poll(t, m, clk, 1200*time.Millisecond) // frames 0 and 1: good
		if len(got) != 2 || e != 0 {
			t.Fatalf("before: %d readings, %v", len(got), e)
		}
		got, e = poll(t, m, clk, 3200*time.Millisecond) // frame 2 corrupt, frame 3 good
		if e != abi.EIO || len(got) != 1 || got[0] != dev.Truth(epoch.Add(3*time.Second)) {
			t.Fatalf("with a corrupt frame: %v, %v; want EIO and frame 3", got, e)
		}
		if !strings.Contains(l.String(), "ERROR perch_poll failed: pms5003: 1 frame with a bad checksum (0x") {
			t.Errorf("log:\n%s", l.String())
		}
		if got, e = poll(t, m, clk, 4200*time.Millisecond); len(got) != 1 || e != 0 {
			t.Errorf("after: %v, %v", got, e)
		}
	})
	for _, c := range []struct {
		kind sim.FaultKind
		want abi.Errno
	}{{sim.FaultTimeout, abi.ETIMEDOUT}, {sim.FaultDisconnect, abi.ENODEV}} {
		t.Run(string(c.kind), func(t *testing.T) {
			dev, clk, m, l := bench(t, busy, nil)
			dev.Faults().Script([]sim.Fault{{Kind: c.kind, At: sim.Duration(1500 * time.Millisecond), For: sim.Duration(2 * time.Second)}})
			if got, e := poll(t, m, clk, 1200*time.Millisecond); len(got) != 2 || e != 0 {
				t.Fatalf("before: %d readings, %v", len(got), e)
			}
			for _, at := range []time.Duration{2200 * time.Millisecond, 3200 * time.Millisecond} {
				if got, e := poll(t, m, clk, at); len(got) != 0 || e != c.want {
					t.Errorf("at %v: %d readings, %v; want %v", at, len(got), e, c.want)
				}
			}
			if want := "ERROR perch_poll failed: pms5003: read: perch: " + c.want.String(); !strings.Contains(l.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, l.String())
			}
			// Frames 2 and 3 were never sent; 4 and 5 are read.
			got, e := poll(t, m, clk, 5200*time.Millisecond)
			if e != 0 || len(got) != 2 || got[0] != dev.Truth(epoch.Add(4*time.Second)) {
				t.Errorf("after: %v, %v", got, e)
			}
		})
	}
	t.Run("stuck", func(t *testing.T) {
		// Frozen from 1.5 s to 4.5 s: frames 2, 3 and 4 repeat the values of 1.5 s. With
		// stuck_reads 3 the third of them is not read and the poll fails with EIO; by default
		// (off) they are read as they come. busy's noisy counts never repeat otherwise.
		for _, c := range []struct {
			cfg  map[string]any
			n    int
			want abi.Errno
		}{
			{map[string]any{"port": port, "stuck_reads": 3}, 4, abi.EIO},
			{map[string]any{"port": port}, 5, 0},
		} {
			dev, clk, m, l := bench(t, busy, c.cfg)
			dev.Faults().Script([]sim.Fault{{Kind: sim.FaultStuck, At: sim.Duration(1500 * time.Millisecond), For: sim.Duration(3 * time.Second)}})
			got, e := poll(t, m, clk, 4200*time.Millisecond)
			if e != c.want || len(got) != c.n {
				t.Fatalf("%v: %d readings, %v; want %d, %v", c.cfg, len(got), e, c.n, c.want)
			}
			frozen := dev.Truth(epoch.Add(1500 * time.Millisecond))
			if got[0] != dev.Truth(epoch) || got[1] != dev.Truth(epoch.Add(time.Second)) || got[2] != frozen || got[3] != frozen {
				t.Errorf("%v: frames 0 to 3: %v, want the truth at 0 and 1 s, then %v", c.cfg, got, frozen)
			}
			if want := "ERROR perch_poll failed: pms5003: stuck: 3 frames in a row with the same values"; (c.want != 0) != strings.Contains(l.String(), want) {
				t.Errorf("%v: log (want %q: %v):\n%s", c.cfg, want, c.want != 0, l.String())
			}
			if got, e = poll(t, m, clk, 5200*time.Millisecond); e != 0 || len(got) != 1 || got[0] != dev.Truth(epoch.Add(5*time.Second)) {
				t.Errorf("%v: after the fault: %v, %v", c.cfg, got, e)
			}
		}
	})
	t.Run("silence", func(t *testing.T) {
		// Someone else puts the sensor in passive mode: no more frames, and after the timeout
		// the poll says so.
		dev, clk, m, l := bench(t, busy, map[string]any{"port": port, "timeout": "2500ms"})
		if got, e := poll(t, m, clk, 1200*time.Millisecond); len(got) != 2 || e != 0 {
			t.Fatalf("before: %d readings, %v", len(got), e)
		}
		c := sim.PMS5003Command(sim.PMS5003CmdMode, 0)
		if _, err := dev.Write(context.Background(), c[:]); err != nil {
			t.Fatal(err)
		}
		if _, e := poll(t, m, clk, 3200*time.Millisecond); e != 0 {
			t.Errorf("2 s without a frame: %v", e)
		}
		if _, e := poll(t, m, clk, 3800*time.Millisecond); e != abi.ETIMEDOUT {
			t.Errorf("2.6 s without a frame: %v, want ETIMEDOUT", e)
		}
		if !strings.Contains(l.String(), "ERROR perch_poll failed: pms5003: no frame for 2600 ms") {
			t.Errorf("log:\n%s", l.String())
		}
	})
}

func TestModuleInit(t *testing.T) {
	clk := perchtest.NewClock(epoch)
	p := sim.NewProvider()
	if err := p.AttachUART(port, sim.NewPMS5003(busy, clk.Now)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg   map[string]any
		errno abi.Errno
		log   string
	}{
		{map[string]any{"port": ""}, abi.EINVAL, `ERROR perch_init failed: config: port: want a port name of 1 to 255 bytes, got ""`},
		{map[string]any{"port": port, "timeout": "0s"}, abi.EINVAL, `ERROR perch_init failed: config: timeout: want a positive duration such as "3s", got "0s"`},
		{map[string]any{"port": port, "stuck_reads": 1}, abi.EINVAL, `ERROR perch_init failed: config: stuck_reads: want 0 (off) or 2 or more, got 1`},
		{map[string]any{"port": port, "baud": 9600}, abi.EINVAL, `ERROR perch_init failed: perch: config: json: unknown field "baud"`},
		{map[string]any{"port": "/dev/ttyS1"}, abi.EPERM, "ERROR perch_init failed: pms5003: wake up: perch: EPERM"},
	} {
		_, l, err := load(t, c.cfg, grant, p, clk)
		if err == nil || !strings.Contains(err.Error(), "perch_init returned perch: "+c.errno.String()) {
			t.Errorf("%v: %v, want %v", c.cfg, err, c.errno)
		}
		if l.String() != c.log {
			t.Errorf("%v: logged\n%s\nwant\n%s", c.cfg, l.String(), c.log)
		}
	}
	// No sensor yet: init warns, polls say ENODEV until it is there.
	empty := sim.NewProvider()
	m, l, err := load(t, map[string]any{"port": port}, grant, empty, clk)
	if err != nil {
		t.Fatal(err)
	}
	if want := "WARN perch_init: pms5003: wake up: perch: ENODEV; will retry at each poll"; l.String() != want {
		t.Errorf("logged %q", l.String())
	}
	if _, err := m.Poll(context.Background(), 1); perchtest.Errno(err) != abi.ENODEV {
		t.Errorf("poll without a sensor: %v", err)
	}
	if _, err := m.Poll(context.Background(), -1); perchtest.Errno(err) != abi.EINVAL {
		t.Errorf("poll -1: %v", err)
	}
}
