package gpio_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The gpio driver module is written in C (wasm/gpio.c, built by make modules). These tests run
// it in the real engine over hal/sim's Button: it reports the level at the first poll and at
// every change, and every fault of the line that a read can see comes back as an errno.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

var grant17 = config.Grants{GPIO: []config.GPIOGrant{{Line: 17, Mode: "in"}}}

// bench is a button on line 17 and the module reading it, on one clock.
func bench(t *testing.T, level sim.Signal, cfg map[string]any) (*sim.Button, *perchtest.Clock, *perchtest.Module) {
	t.Helper()
	clk := perchtest.NewClock(epoch)
	b := sim.NewButton(level, clk.Now)
	p := sim.NewProvider()
	if err := p.AttachGPIO(17, b); err != nil {
		t.Fatal(err)
	}
	m := perchtest.Load(t, perchtest.Options{Wasm: perchtest.Built(t, "gpio"), Config: cfg, Grants: grant17, HAL: p, Now: clk.NS})
	return b, clk, m
}

// report is one reading of the driver.
type report struct {
	at             time.Duration
	level, changes float64
}

// pollEvery polls every step from step to end and returns the readings, checking their shape.
func pollEvery(t *testing.T, m *perchtest.Module, clk *perchtest.Clock, step, end time.Duration, series string) []report {
	t.Helper()
	var got []report
	for at := step; at <= end; at += step {
		clk.Set(at)
		for _, r := range m.Poll(t, 4) {
			if r.Kind != abi.KindReading || r.Series != series || len(r.Fields) != 2 {
				t.Fatalf("record %+v", r)
			}
			got = append(got, report{at, r.Fields["level"], r.Fields["changes"]})
		}
	}
	return got
}

// presses: pressed from 1 s to 1.5 s and from 3 s to 4 s.
var presses = sim.Signal{Sum: []sim.Signal{
	{Shape: "spike", Amplitude: 1, Start: sim.Duration(time.Second), Width: sim.Duration(500 * time.Millisecond)},
	{Shape: "spike", Amplitude: 1, Start: sim.Duration(3 * time.Second), Width: sim.Duration(time.Second)},
}}

func TestModuleEdges(t *testing.T) {
	b, clk, m := bench(t, presses, map[string]any{"line": 17})
	got := pollEvery(t, m, clk, 10*time.Millisecond, 5*time.Second, "button")
	want := []report{{10 * time.Millisecond, 0, 0}} // the first poll reports the level
	for i, e := range b.Edges(epoch, epoch.Add(5*time.Second), 10*time.Millisecond) {
		lv := 0.0
		if e.Level {
			lv = 1
		}
		want = append(want, report{e.Time.Sub(epoch), lv, float64(i + 1)})
	}
	if len(want) != 5 || !slices.Equal(got, want) {
		t.Errorf("readings\n%v\nwant\n%v", got, want)
	}
}

func TestModuleDebounce(t *testing.T) {
	// A 5 ms bounce at 1 s, then a press from 2 s to 3 s.
	level := sim.Signal{Sum: []sim.Signal{
		{Shape: "spike", Amplitude: 1, Start: sim.Duration(time.Second), Width: sim.Duration(5 * time.Millisecond)},
		{Shape: "spike", Amplitude: 1, Start: sim.Duration(2 * time.Second), Width: sim.Duration(time.Second)},
	}}
	_, clk, m := bench(t, level, map[string]any{"line": 17, "debounce": "20ms", "series": "door"})
	got := pollEvery(t, m, clk, 5*time.Millisecond, 4*time.Second, "door")
	// Seen high from 2 s, reported once it held for 20 ms; the same on release at 3 s.
	want := []report{{5 * time.Millisecond, 0, 0}, {2020 * time.Millisecond, 1, 1}, {3020 * time.Millisecond, 0, 2}}
	if !slices.Equal(got, want) {
		t.Errorf("readings\n%v\nwant\n%v", got, want)
	}
}

// TestModuleFaults: a timeout or a disconnect fails the poll with its errno (the module stays up
// and reports the level again afterwards); a stuck line is an error only when stuck_after says
// how long the line may stay still.
func TestModuleFaults(t *testing.T) {
	for _, c := range []struct {
		kind sim.FaultKind
		want abi.Errno
	}{{sim.FaultTimeout, abi.ETIMEDOUT}, {sim.FaultDisconnect, abi.ENODEV}} {
		t.Run(string(c.kind), func(t *testing.T) {
			b, clk, m := bench(t, sim.Signal{Shape: "step", From: 0, To: 1, Start: sim.Duration(2 * time.Second)}, map[string]any{"line": 17})
			b.Faults().Script([]sim.Fault{{Kind: c.kind, At: sim.Duration(time.Second), For: sim.Duration(2 * time.Second)}})
			var errs []string
			var levels []float64
			for at := 500 * time.Millisecond; at <= 4*time.Second; at += 500 * time.Millisecond {
				clk.Set(at)
				out, err := m.TryPoll(1)
				var ee *runtime.ErrnoError
				switch {
				case err == nil:
					errs = append(errs, "ok")
				case errors.As(err, &ee):
					errs = append(errs, ee.Errno.String())
				default:
					t.Fatalf("at %v: %v", at, err)
				}
				for _, r := range out {
					levels = append(levels, r.Fields["level"])
				}
			}
			w := c.want.String()
			if got, want := strings.Join(errs, " "), "ok "+w+" "+w+" "+w+" "+w+" ok ok ok"; got != want {
				t.Errorf("polls: %s, want %s", got, want)
			}
			if len(levels) != 2 || levels[0] != 0 || levels[1] != 1 {
				t.Errorf("levels %v, want 0 then 1 (the step, seen after the fault)", levels)
			}
		})
	}
	t.Run("stuck", func(t *testing.T) {
		// A limit switch that a machine trips every 500 ms (high in the first half of each
		// second); its contacts stick, low, from 2 s to 5 s. Polled every 100 ms from 50 ms, the
		// last change before the fault is seen at 1.55 s; with stuck_after 1s the poll at 2.55 s
		// says so (EIO), and those at 3.55 s and 4.55 s again; the moving line never trips it,
		// nor does the same stuck line with stuck_after off.
		square := sim.Signal{Shape: "sine", Mean: 0.5, Amplitude: 1, Period: sim.Duration(time.Second)}
		for _, c := range []struct {
			stuckAfter string
			want       string
		}{
			{"1s", "ok×25 EIO ok×9 EIO ok×9 EIO ok×14"},
			{"0s", "ok×60"},
		} {
			b, clk, m := bench(t, square, map[string]any{"line": 17, "stuck_after": c.stuckAfter})
			b.Faults().Script([]sim.Fault{{Kind: sim.FaultStuck, At: sim.Duration(2 * time.Second), For: sim.Duration(3 * time.Second)}})
			var polls []string
			levels := 0
			for at := 50 * time.Millisecond; at < 6*time.Second; at += 100 * time.Millisecond {
				clk.Set(at)
				out, err := m.TryPoll(1)
				var ee *runtime.ErrnoError
				switch {
				case err == nil:
					polls = append(polls, "ok")
				case errors.As(err, &ee):
					polls = append(polls, ee.Errno.String())
				default:
					t.Fatalf("at %v: %v", at, err)
				}
				levels += len(out)
			}
			if got := runs(polls); got != c.want {
				t.Errorf("stuck_after %s: polls %s, want %s", c.stuckAfter, got, c.want)
			}
			// The first level, changes at 0.55, 1.05 and 1.55 s, none while stuck, then changes
			// at 5.05 and 5.55 s.
			if levels != 6 {
				t.Errorf("stuck_after %s: %d readings", c.stuckAfter, levels)
			}
		}
	})
}

// runs renders a sequence such as [ok ok EIO] as "ok×2 EIO".
func runs(s []string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == s[i] {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i])
		if j-i > 1 {
			fmt.Fprintf(&b, "×%d", j-i)
		}
		i = j
	}
	return b.String()
}

func TestModuleInit(t *testing.T) {
	p := sim.NewProvider()
	if err := p.AttachGPIO(17, sim.NewButton(sim.Signal{}, nil)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg   map[string]any
		errno abi.Errno
		why   string // what the module logs
	}{
		{map[string]any{}, abi.EINVAL, "config: line: want a GPIO line number (0 or more), got -1"},
		{map[string]any{"line": 17, "debounce": "5"}, abi.EINVAL, `config: debounce: want a duration such as "20ms", got "5"`},
		{map[string]any{"line": 17, "stuck_after": "-1s"}, abi.EINVAL, `config: stuck_after: want a duration such as "10m" (0s: off), got "-1s"`},
		{map[string]any{"line": 17, "pin": 3}, abi.EINVAL, `perch: config: json: unknown field "pin"`},
		{map[string]any{"line": 18}, abi.EPERM, "gpio: read line 18: perch: EPERM"}, // granted 17 only
	} {
		_, err := perchtest.Open(perchtest.Options{Wasm: perchtest.Built(t, "gpio"), Config: c.cfg, Grants: grant17, HAL: p})
		if err == nil || !strings.Contains(err.Error(), "perch_init returned perch: "+c.errno.String()) {
			t.Errorf("%v: %v, want an init error with %v (%s)", c.cfg, err, c.errno, c.why)
		}
	}
	// A line with nothing on it: init goes on, polls say ENODEV.
	m := perchtest.Load(t, perchtest.Options{Wasm: perchtest.Built(t, "gpio"), Config: map[string]any{"line": 17}, Grants: grant17, HAL: sim.NewProvider()})
	var ee *runtime.ErrnoError
	if _, err := m.TryPoll(1); !errors.As(err, &ee) || ee.Errno != abi.ENODEV {
		t.Errorf("poll on an empty line: %v, want ENODEV", err)
	}
	if _, err := m.TryPoll(-1); !errors.As(err, &ee) || ee.Errno != abi.EINVAL {
		t.Errorf("poll -1: %v, want EINVAL", err)
	}
}
