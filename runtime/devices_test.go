package runtime_test

import (
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime"
)

// devicesConfig has one simulated device of every type, each with scripted faults, read by its
// driver module; the probe drives the relay. Paths are relative to runtime/testdata.
const devicesConfig = `site: test
device: sim-01
devices:
  - name: env0
    backend: sim
    type: bme280
    bus: 1
    address: 0x76
    signals:
      temperature: {value: 22}
      pressure: {value: 1013.25}
      humidity: {value: 45}
    faults: [{kind: nack, at: 1s, for: 500ms}]
  - name: accel
    backend: sim
    type: adxl345
    bus: 0
    cs: 0
    signals:
      x: {value: 0.5}
      z: {value: -1}
    faults: [{kind: timeout, at: 1s, for: 500ms}]
  - name: door
    backend: sim
    type: button
    line: 4
    signals:
      level: {shape: step, from: 0, to: 1, at: 500ms}
  - name: pump
    backend: sim
    type: relay
    line: 22
  - name: air
    backend: sim
    type: pms5003
    port: /dev/ttyS0
    signals:
      pm2_5: {value: 12}
      pm10: {value: 20}
      n0_3: {value: 900}
    faults: [{kind: corrupt, at: 1500ms, for: 1s}]
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    poll: 50ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: vibration
    wasm: ../../build/modules/adxl345.wasm
    poll: 50ms
    grants:
      spi: [{bus: 0, cs: 0}]
      i2c: [{bus: 1, address: 0x53}]
    config: {bus: 0, cs: 0, series: vibration}
  - name: door
    wasm: ../../build/modules/gpio.wasm
    poll: 20ms
    grants:
      gpio: [{line: 4, mode: in}]
    config: {line: 4, series: door}
  - name: air
    wasm: ../../build/modules/pms5003.wasm
    poll: 200ms
    poll_max_records: 4
    grants:
      uart: [{port: /dev/ttyS0}]
    config: {port: /dev/ttyS0}
  - name: pump-on
    wasm: ../../build/modules/probe.wasm
    poll: 100ms
    grants:
      i2c: [{bus: 9, address: 0x77}]
      spi: [{bus: 9, cs: 9}]
      gpio: [{line: 22, mode: out}]
      uart: [{port: /dev/null}]
    config: {call: gpio_write, line: 22, level: 1}
`

// TestIntegrationSimDevices runs a pipeline on every simulated device type, built from the
// config with its scripted faults: each driver's readings are the devices' exact values, each
// scripted fault is a module.error event with its errno, no module faults, and the relay the
// probe drives is on.
func TestIntegrationSimDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	rt := runFor(t, parseTestConfig(t, "devices.yaml", devicesConfig), 3500*time.Millisecond, runtime.Options{})
	db := rt.Store().DB()

	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env'`); n < 20 {
		t.Errorf("bme280 readings: %d", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env' AND abs(json_extract(fields, '$.temperature_c') - 22) > 0.01`); n != 0 {
		t.Errorf("%d bme280 readings off 22 °C", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'vibration'`); n < 20 {
		t.Errorf("adxl345 readings: %d", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'vibration' AND series = 'vibration' AND
		(json_extract(fields, '$.x_g') != 0.5 OR json_extract(fields, '$.y_g') != 0 OR json_extract(fields, '$.z_g') != -1)`); n != 0 {
		t.Errorf("%d adxl345 readings off (0.5, 0, -1) g", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'door' AND series = 'door'`); n != 2 {
		t.Errorf("door readings: %d, want 2 (closed at the start, open from 0.5 s)", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'door' AND json_extract(fields, '$.level') = 1
		AND json_extract(fields, '$.changes') = 1`); n != 1 {
		t.Errorf("door opening readings: %d, want 1", n)
	}
	// Frames at 0, 1, 2 (corrupt, dropped) and 3 s (read if a poll came after 3.03 s).
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'air'`); n < 2 || n > 3 {
		t.Errorf("pms5003 readings: %d, want 2 or 3", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'air' AND (json_extract(fields, '$.pm2_5_ugm3') != 12 OR
		json_extract(fields, '$.pm10_atm_ugm3') != 20 OR json_extract(fields, '$.n0_3_per_dl') != 900)`); n != 0 {
		t.Errorf("%d pms5003 readings off", n)
	}
	for module, errno := range map[string]string{"env": "ENACK", "vibration": "ETIMEDOUT", "air": "EIO"} {
		if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = ?
			AND json_extract(fields, '$.errno') = ?`, module, errno); n != 1 {
			t.Errorf("%s: %d module.error events with %s, want 1", module, n, errno)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module IN ('door', 'pump-on')`); n != 0 {
		t.Errorf("%d module.error events from door and pump-on", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault'`); n != 0 {
		t.Errorf("module.fault events: %d, want 0", n)
	}
	pump, ok := rt.SimDevice("pump").(*sim.Relay)
	if !ok {
		t.Fatalf("SimDevice(pump) = %T", rt.SimDevice("pump"))
	}
	if !pump.Level() || len(pump.Changes()) != 1 || pump.Writes() < 10 {
		t.Errorf("relay at %v after %d writes, changes %v", pump.Level(), pump.Writes(), pump.Changes())
	}
	if rt.SimDevice("nothing") != nil {
		t.Error("SimDevice of an unknown name")
	}
	for name, want := range map[string]any{"env0": (*sim.BME280)(nil), "accel": (*sim.ADXL345)(nil), "door": (*sim.Button)(nil), "air": (*sim.PMS5003)(nil)} {
		got := rt.SimDevice(name)
		switch want.(type) {
		case *sim.BME280:
			_, ok = got.(*sim.BME280)
		case *sim.ADXL345:
			_, ok = got.(*sim.ADXL345)
		case *sim.Button:
			_, ok = got.(*sim.Button)
		case *sim.PMS5003:
			_, ok = got.(*sim.PMS5003)
		}
		if !ok {
			t.Errorf("SimDevice(%s) = %T", name, got)
		}
	}
}

// stuckConfig has a BME280, a limit switch and a PMS5003 whose values move as real ones do (noise,
// a switch tripped every 200 ms, noisy counts), each frozen by a scripted stuck fault, and read by
// drivers that are told how to tell: stuck_reads for the sensors, stuck_after for the switch.
const stuckConfig = `site: test
device: sim-01
devices:
  - name: env0
    backend: sim
    type: bme280
    bus: 1
    address: 0x76
    signals:
      temperature: {sum: [{value: 22}, {shape: noise, sigma: 0.02, seed: 1}]}
      pressure: {sum: [{value: 1013.25}, {shape: noise, sigma: 0.03, seed: 2}]}
      humidity: {value: 45}
    faults: [{kind: stuck, at: 1500ms, for: 1s}]
  - name: switch
    backend: sim
    type: button
    line: 4
    signals:
      level: {shape: sine, mean: 0.5, amplitude: 1, period: 400ms}
    faults: [{kind: stuck, at: 1500ms, for: 2s}]
  - name: air
    backend: sim
    type: pms5003
    port: /dev/ttyS0
    signals:
      pm2_5: {shape: noise, mean: 12, sigma: 3, seed: 3}
      n0_3: {shape: noise, mean: 900, sigma: 40, seed: 4}
    faults: [{kind: stuck, at: 1500ms, for: 3s}]
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    poll: 50ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76, stuck_reads: 5}
  - name: switch
    wasm: ../../build/modules/gpio.wasm
    poll: 20ms
    grants:
      gpio: [{line: 4, mode: in}]
    config: {line: 4, series: switch, stuck_after: 500ms}
  - name: air
    wasm: ../../build/modules/pms5003.wasm
    poll: 200ms
    poll_max_records: 4
    grants:
      uart: [{port: /dev/ttyS0}]
    config: {port: /dev/ttyS0, stuck_reads: 2}
`

// TestIntegrationSimStuck: a stuck fault on a BME280, a limit switch and a PMS5003 is a
// module.error event with EIO from each driver (the runtime records one per 10 s per module), none before the fault began (no false trip on
// the moving values), no module faults, and readings again once the fault is over.
// TestIntegrationSimDevices shows the other side: with the keys off (the default), constant
// values are no error.
func TestIntegrationSimStuck(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	rt := runFor(t, parseTestConfig(t, "stuck.yaml", stuckConfig), 6500*time.Millisecond, runtime.Options{})
	db := rt.Store().DB()
	var start int64 // the simulations start right after this event, with the pipeline
	if err := db.QueryRow(`SELECT time_ns FROM events WHERE kind = 'runtime.started'`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		module string
		first  time.Duration // no stuck report before: the fault begins at 1.5 s
	}{
		{"env", 1500 * time.Millisecond},    // reported 5 polls of 50 ms into it
		{"switch", 1500 * time.Millisecond}, // 500 ms into it
		{"air", 2500 * time.Millisecond},    // at the frame of 3 s, the second like that of 2 s
	} {
		if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = ?
			AND json_extract(fields, '$.errno') = 'EIO'`, c.module); n == 0 {
			t.Errorf("%s: no module.error event with EIO", c.module)
		}
		if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = ?
			AND time_ns < ?`, c.module, start+int64(c.first)); n != 0 {
			t.Errorf("%s: %d module.error events before %v", c.module, n, c.first)
		}
		if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = ?
			AND json_extract(fields, '$.errno') != 'EIO'`, c.module); n != 0 {
			t.Errorf("%s: %d module.error events with another errno", c.module, n)
		}
		// The readings resume after the fault (it ends by 4.5 s).
		if n := count(t, db, `SELECT count(*) FROM readings WHERE source = ? AND time_ns > ?`,
			c.module, start+int64(4600*time.Millisecond)); n == 0 {
			t.Errorf("%s: no reading after the fault", c.module)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault'`); n != 0 {
		t.Errorf("module.fault events: %d, want 0", n)
	}
}
