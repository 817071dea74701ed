package runtime_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

// actuationConfig: a simulated BME280 whose temperature spikes by 12 °C from 1 s to 2.5 s, the
// bme280 driver, a threshold rule on the temperature, and the relay actuator taking the rule's
// alerts and driving the relay on GPIO line 22. A second relay actuator ("rogue"), granted line
// 22 too, is configured for line 23, where another relay sits: its writes must be denied.
// Paths are relative to runtime/testdata.
const actuationConfig = `site: test
device: sim-01
devices:
  - name: env0
    backend: sim
    type: bme280
    bus: 1
    address: 0x76
    signals:
      temperature:
        sum:
          - {shape: constant, value: 22}
          - {shape: spike, value: 0, amplitude: 12, at: 1s, width: 1500ms}
      pressure: {value: 1013.25}
      humidity: {value: 45}
  - name: fan
    backend: sim
    type: relay
    line: 22
  - name: other
    backend: sim
    type: relay
    line: 23
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    deadline: 2s
    poll: 50ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: env-hot
    wasm: ../../build/modules/threshold.wasm
    deadline: 2s
    inputs: [env]
    config:
      series: environment
      field: temperature_c
      above: 30
      hysteresis: 1
      hold_off: 100ms
      severity: warning
      message: too hot
  - name: fan
    wasm: ../../build/modules/relay.wasm
    deadline: 2s
    inputs: [env-hot]
    grants:
      gpio: [{line: 22, mode: out}]
    config: {line: 22, source: env-hot}
  - name: rogue
    wasm: ../../build/modules/relay.wasm
    deadline: 2s
    inputs: [env-hot]
    grants:
      gpio: [{line: 22, mode: out}]
    config: {line: 23}
`

// TestIntegrationActuation runs a rule's alerts into the relay actuator: the relay goes on
// shortly after the alert is raised and off shortly after it clears, each change is an event in
// the recorder, and an actuator granted line 22 cannot drive line 23 (EPERM, a module.error
// event, the relay on 23 never touched).
func TestIntegrationActuation(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	rt := runFor(t, parseTestConfig(t, "actuation.yaml", actuationConfig), 3500*time.Millisecond, runtime.Options{})
	db := rt.Store().DB()

	alertAt := func(state string) time.Time {
		t.Helper()
		var ns int64
		if err := db.QueryRow(`SELECT time_ns FROM alerts WHERE source = 'env-hot' AND json_extract(tags, '$.state') = ?`, state).Scan(&ns); err != nil {
			t.Fatalf("the %s alert: %v", state, err)
		}
		return time.Unix(0, ns)
	}
	raised, cleared := alertAt("raised"), alertAt("cleared")

	fan, ok := rt.SimDevice("fan").(*sim.Relay)
	if !ok {
		t.Fatalf("SimDevice(fan) = %T", rt.SimDevice("fan"))
	}
	ch := fan.Changes()
	if len(ch) != 2 || !ch[0].Level || ch[1].Level || fan.Level() {
		t.Fatalf("fan relay changes %v, level %v; want on, then off", ch, fan.Level())
	}
	// Shortly after: the alert's time is its reading's; the relay follows within one trip
	// through two modules (generous for a busy 2-core machine).
	const soon = time.Second
	if d := ch[0].Time.Sub(raised); d < 0 || d > soon {
		t.Errorf("relay on %v after the raised alert, want within %v", d, soon)
	}
	if d := ch[1].Time.Sub(cleared); d < 0 || d > soon {
		t.Errorf("relay off %v after the cleared alert, want within %v", d, soon)
	}
	// Writes only at changes: the line is not rewritten while the alert stays raised.
	if fan.Writes() != 2 {
		t.Errorf("fan relay written %d times, want 2", fan.Writes())
	}

	// The events, in the recorder, in order.
	rows, err := db.Query(`SELECT json_extract(tags, '$.action'), json_extract(tags, '$.line'), json_extract(tags, '$.alert_source'),
		json_extract(fields, '$.level') FROM events WHERE kind = 'actuator' AND module = 'fan' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var action, line, src string
		var level float64
		if err := rows.Scan(&action, &line, &src, &level); err != nil {
			t.Fatal(err)
		}
		if line != "22" || src != "env-hot" || (action == "on") != (level == 1) {
			t.Errorf("event action %s line %s alert_source %s level %v", action, line, src, level)
		}
		got = append(got, action)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "on" || got[1] != "off" {
		t.Errorf("actuator events %v, want [on off]", got)
	}

	// The rogue actuator: denied, reported, and line 23 untouched.
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = 'rogue'
		AND json_extract(fields, '$.errno') = 'EPERM'`); n != 1 {
		t.Errorf("rogue: %d module.error events with EPERM, want 1 (at most one per 10 s)", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'actuator' AND module = 'rogue'`); n != 0 {
		t.Errorf("rogue: %d actuator events, want none", n)
	}
	if other := rt.SimDevice("other").(*sim.Relay); other.Writes() != 0 || other.Level() {
		t.Errorf("relay on line 23: %d writes, level %v; want untouched", other.Writes(), other.Level())
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault'`); n != 0 {
		t.Errorf("module.fault events: %d, want 0", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module != 'rogue'`); n != 0 {
		t.Errorf("module.error events outside rogue: %d, want 0", n)
	}
}

// TestIntegrationInject drives the relay actuator by injected records, as an upstream command
// would (the uplink's command handler calls Runtime.Inject): an alert injected with state raised
// switches the relay on, one with state cleared switches it off, with their events recorded.
// Injecting into a driver, an unknown module, or a batch that does not decode is refused, and
// after the pipeline stops Inject returns ErrNotRunning.
func TestIntegrationInject(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	abs, err := filepath.Abs(filepath.Join("testdata", "inject.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The rule never fires (above 100 °C): only the injected commands move the relay.
	text := strings.Replace(actuationConfig, "above: 30", "above: 100", 1)
	cfg, err := config.Parse(abs, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	fan := rt.SimDevice("fan").(*sim.Relay)
	command := func(state string) []byte {
		return abi.Append(nil, abi.KindAlert, 0, "env-hot", "command", nil,
			[]abi.Tag{{Key: "state", Value: state}, {Key: "message", Value: "operator command"}})
	}
	waitLevel := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); fan.Level() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("relay level %v, want %v", fan.Level(), want)
			}
		}
	}
	ictx, icancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer icancel()
	if err := rt.Inject(ictx, "fan", command("raised")); err != nil {
		t.Fatal(err)
	}
	waitLevel(true)
	if err := rt.Inject(ictx, "fan", command("cleared")); err != nil {
		t.Fatal(err)
	}
	waitLevel(false)

	for name, c := range map[string]struct {
		module string
		batch  []byte
	}{
		"driver":        {"env", command("raised")},
		"unknown":       {"nothing", command("raised")},
		"bad batch":     {"fan", []byte{1, 2, 3}},
		"trailing junk": {"fan", append(command("raised"), 0)},
	} {
		if err := rt.Inject(ictx, c.module, c.batch); err == nil {
			t.Errorf("%s: injected", name)
		}
	}
	if err := rt.Inject(ictx, "fan", nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the deferred wait
	if err := rt.Inject(ictx, "fan", command("raised")); !errors.Is(err, runtime.ErrNotRunning) {
		t.Errorf("inject after the pipeline stopped: %v, want ErrNotRunning", err)
	}
	if ch := fan.Changes(); len(ch) != 2 || fan.Writes() != 2 {
		t.Errorf("relay changes %v after %d writes, want on and off", ch, fan.Writes())
	}
	db := rt.Store().DB()
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'actuator' AND module = 'fan'
		AND json_extract(tags, '$.alert_series') = 'command'`); n != 2 {
		t.Errorf("actuator events for the commands: %d, want 2", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind IN ('module.fault', 'module.error') AND module = 'fan'`); n != 0 {
		t.Errorf("fan: %d fault or error events", n)
	}
}
