package relay_test

import (
	"strings"
	"testing"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The relay actuator is written in C (wasm/relay.c, built by make modules). These tests run it
// in the real engine over hal/sim's Relay on line 22: alerts drive the line, each change is one
// event, repeated states do not rewrite the line, filters and options apply, and a failed write
// is the call's errno.

var grant22 = config.Grants{GPIO: []config.GPIOGrant{{Line: 22, Mode: "out"}}}

// bench is a relay on line 22 and the module driving it.
func bench(t *testing.T, cfg map[string]any) (*sim.Relay, *perchtest.Module) {
	t.Helper()
	r := sim.NewRelay(nil)
	p := sim.NewProvider()
	if err := p.AttachGPIO(22, r); err != nil {
		t.Fatal(err)
	}
	m := perchtest.Load(t, perchtest.Options{Wasm: perchtest.Built(t, "relay"), Config: cfg, Grants: grant22, HAL: p})
	return r, m
}

// alert encodes an alert from source in state (raised or cleared).
func alert(source, series, state string) []byte {
	return perchtest.Encode(abi.KindAlert, 1, source, series, "value", 31.0, "state", state,
		"severity", "critical", "message", "too hot", "source", "env")
}

// levels returns the relay's changes as a string of 0s and 1s.
func levels(r *sim.Relay) string {
	var b strings.Builder
	for _, c := range r.Changes() {
		if c.Level {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	return b.String()
}

func TestModuleRaisedCleared(t *testing.T) {
	r, m := bench(t, map[string]any{"line": 22})
	out := m.Process(t, alert("too-hot", "environment", "raised"))
	if len(out) != 1 || out[0].Kind != abi.KindEvent || out[0].Series != "actuator" ||
		out[0].Tags["action"] != "on" || out[0].Tags["line"] != "22" || out[0].Tags["alert_source"] != "too-hot" ||
		out[0].Tags["kind"] != "relay" || out[0].Fields["level"] != 1 {
		t.Fatalf("on raised: %+v", out)
	}
	if !r.Level() {
		t.Fatal("relay off after a raised alert")
	}
	// The same state again (another raised alert, a reading, an alert without state): no write.
	writes := r.Writes()
	out = m.Process(t, alert("too-hot", "environment", "raised"), perchtest.Reading(1, "env", "environment", "temperature_c", 35.0),
		perchtest.Encode(abi.KindAlert, 1, "too-hot", "environment", "message", "no state"))
	if len(out) != 0 || r.Writes() != writes {
		t.Errorf("repeated raise: out %+v, writes %d -> %d", out, writes, r.Writes())
	}
	out = m.Process(t, alert("too-hot", "environment", "cleared"))
	if len(out) != 1 || out[0].Tags["action"] != "off" || out[0].Fields["level"] != 0 {
		t.Fatalf("off on cleared: %+v", out)
	}
	// Raise and clear in one batch: two changes, two events, in order.
	out = m.Process(t, alert("too-hot", "environment", "raised"), alert("too-hot", "environment", "cleared"))
	if len(out) != 2 || out[0].Tags["action"] != "on" || out[1].Tags["action"] != "off" {
		t.Errorf("raise and clear in one batch: %+v", out)
	}
	if got := levels(r); got != "1010" || r.Level() {
		t.Errorf("relay changes %s, level %v; want 1010, off", got, r.Level())
	}
}

func TestModuleOptions(t *testing.T) {
	t.Run("on cleared, inverted", func(t *testing.T) {
		r, m := bench(t, map[string]any{"line": 22, "on": "cleared", "invert": true})
		// The line reads low at start: with invert the relay is energised, so a cleared alert
		// (on) writes nothing, and a raised one (off) drives the line high.
		if out := m.Process(t, alert("a", "s", "cleared")); len(out) != 0 || r.Writes() != 0 {
			t.Errorf("cleared while on: %+v, %d writes", out, r.Writes())
		}
		out := m.Process(t, alert("a", "s", "raised"))
		if len(out) != 1 || out[0].Tags["action"] != "off" || out[0].Fields["level"] != 1 || !r.Level() {
			t.Errorf("raised: %+v, level %v", out, r.Level())
		}
		out = m.Process(t, alert("a", "s", "cleared"))
		if len(out) != 1 || out[0].Tags["action"] != "on" || out[0].Fields["level"] != 0 || r.Level() {
			t.Errorf("cleared: %+v, level %v", out, r.Level())
		}
	})
	t.Run("filters", func(t *testing.T) {
		r, m := bench(t, map[string]any{"line": 22, "series": "environment", "source": "too-hot"})
		m.Process(t, alert("other", "environment", "raised"), alert("too-hot", "vibration", "raised"))
		if r.Writes() != 0 {
			t.Fatalf("%d writes for alerts the filters drop", r.Writes())
		}
		if out := m.Process(t, alert("too-hot", "environment", "raised")); len(out) != 1 || !r.Level() {
			t.Errorf("matching alert: %+v, level %v", out, r.Level())
		}
	})
}

// TestModuleWriteFails: a failed write returns its errno and the module stays up; the state is
// then unknown, so the next alert writes again.
func TestModuleWriteFails(t *testing.T) {
	r, m := bench(t, map[string]any{"line": 22})
	r.Faults().Inject(sim.FaultDisconnect, true)
	out, err := m.TryProcess(alert("a", "s", "raised"))
	if perchtest.Errno(err) != abi.ENODEV || len(out) != 0 {
		t.Fatalf("write to a disconnected relay: %v, %+v; want ENODEV and no event", err, out)
	}
	r.Faults().Inject(sim.FaultDisconnect, false)
	if out := m.Process(t, alert("a", "s", "raised")); len(out) != 1 || !r.Level() {
		t.Errorf("after reconnect: %+v, level %v", out, r.Level())
	}
	// A line not granted for output: EPERM at the write, not at init.
	p := sim.NewProvider()
	if err := p.AttachGPIO(23, sim.NewRelay(nil)); err != nil {
		t.Fatal(err)
	}
	m23 := perchtest.Load(t, perchtest.Options{Wasm: perchtest.Built(t, "relay"), Config: map[string]any{"line": 23}, Grants: grant22, HAL: p})
	if _, err := m23.TryProcess(alert("a", "s", "raised")); perchtest.Errno(err) != abi.EPERM {
		t.Errorf("write to line 23 granted 22: %v, want EPERM", err)
	}
}

func TestModuleInit(t *testing.T) {
	p := sim.NewProvider()
	if err := p.AttachGPIO(22, sim.NewRelay(nil)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg any
		why string
	}{
		{map[string]any{}, "config: line: want a GPIO line number (0 or more), got -1"},
		{map[string]any{"line": 22, "on": "maybe"}, `config: on: want raised or cleared, got "maybe"`},
		{map[string]any{"line": 22, "invert": "yes"}, `perch: config field "invert": a JSON string cannot be a bool`},
		{map[string]any{"line": 22, "pin": 3}, `perch: config: json: unknown field "pin"`},
	} {
		_, logs, err := perchtest.LoadLogged(t, perchtest.Options{Wasm: perchtest.Built(t, "relay"), Config: c.cfg, Grants: grant22, HAL: p})
		if err == nil || !strings.Contains(err.Error(), "perch_init returned perch: EINVAL") || !strings.Contains(logs.String(), c.why) {
			t.Errorf("%v: %v, log %q; want EINVAL and %q", c.cfg, err, logs.String(), c.why)
		}
	}
	for _, inv := range []bool{false, true} {
		if _, _, err := perchtest.LoadLogged(t, perchtest.Options{Wasm: perchtest.Built(t, "relay"),
			Config: map[string]any{"line": 22, "invert": inv, "on": "cleared"}, Grants: grant22, HAL: p}); err != nil {
			t.Errorf("invert %v: %v", inv, err)
		}
	}
}
