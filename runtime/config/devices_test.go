package config_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
)

// allDevices has one device of every type, with signals and faults.
const allDevices = `site: s
device: d
devices:
  - name: env0
    backend: sim
    type: bme280
    bus: 1
    address: 0x77
    signals:
      temperature: {value: 21}
    faults: [{kind: nack, at: 5s, for: 2s}, {kind: stuck, at: 1m}]
  - name: accel-spi
    backend: sim
    type: adxl345
    bus: 0
    cs: 1
    signals:
      z: {value: 1}
      x: {shape: sine, mean: 0, amplitude: 0.5, period: 1s}
    faults: [{kind: timeout, at: 1s, for: 500ms}, {kind: corrupt, at: 3s}]
  - name: accel-i2c
    backend: sim
    type: adxl345
    bus: 1
    address: 0x53
    faults: [{kind: nack, at: 2s}]
  - name: door
    backend: sim
    type: button
    line: 0
    signals:
      level: {shape: step, from: 0, to: 1, at: 2s}
    faults: [{kind: disconnect, at: 4s, for: 1s}]
  - name: pump
    backend: sim
    type: relay
    line: 22
    faults: [{kind: stuck, at: 10s}]
  - name: air
    backend: sim
    type: pms5003
    port: /dev/ttyUSB0
    signals:
      pm2_5: {value: 12}
      pm10: {value: 20}
      pm10_atm: {value: 18}
      n0_3: {value: 900}
    faults: [{kind: corrupt, at: 3s, for: 1s}]
`

func TestParseDevices(t *testing.T) {
	dir := testDir(t)
	cfg, err := parse(dir, allDevices)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices
	if len(d) != 6 {
		t.Fatalf("%d devices", len(d))
	}
	if s := d[0].BME280Signals(); s.Temperature.Value != 21 || !reflect.DeepEqual(s.Pressure, sim.Signal{}) {
		t.Errorf("bme280 signals %+v", s)
	}
	if f := d[0].Faults; len(f) != 2 || f[0] != (sim.Fault{Kind: sim.FaultNACK, At: sim.Duration(5 * time.Second), For: sim.Duration(2 * time.Second)}) ||
		f[1] != (sim.Fault{Kind: sim.FaultStuck, At: sim.Duration(time.Minute)}) {
		t.Errorf("bme280 faults %+v", f)
	}
	if !d[1].OnSPI() || *d[1].CS != 1 || d[1].ADXL345Signals().Z.Value != 1 || d[1].ADXL345Signals().X.Shape != "sine" {
		t.Errorf("adxl345 on SPI: %+v", d[1])
	}
	if d[2].OnSPI() || d[2].Address != 0x53 {
		t.Errorf("adxl345 on I2C: %+v", d[2])
	}
	if *d[3].Line != 0 || d[3].ButtonLevel().Shape != "step" {
		t.Errorf("button %+v", d[3])
	}
	if *d[4].Line != 22 {
		t.Errorf("relay %+v", d[4])
	}
	s := d[5].PMS5003Signals()
	if d[5].Port != "/dev/ttyUSB0" || s.PM25.Value != 12 || s.PM25Atm.Value != 12 || s.PM10Atm.Value != 18 ||
		s.N03.Value != 900 || !reflect.DeepEqual(s.PM1, sim.Signal{}) {
		t.Errorf("pms5003 %q %+v", d[5].Port, s)
	}
}

func TestParseDeviceErrors(t *testing.T) {
	dir := testDir(t)
	for _, tt := range []struct {
		name, devices string
		want          []string // one per error, in order
	}{
		{"bme280 address", `
  - {name: a, backend: sim, type: bme280, bus: 1, address: 0x40}
  - {name: b, backend: sim, type: bme280, bus: -1, address: 0x76, cs: 0, line: 3, port: x}`,
			[]string{
				`:4: devices[0].address: a bme280 answers at 0x76 or 0x77, not 0x40`,
				`:5: devices[1].cs: not used by type bme280`,
				`:5: devices[1].line: not used by type bme280`,
				`:5: devices[1].port: not used by type bme280`,
				`:5: devices[1].bus: must not be negative`,
			}},
		{"adxl345 placement", `
  - name: a
    backend: sim
    type: adxl345
  - name: b
    backend: sim
    type: adxl345
    cs: 0
    address: 0x53
  - name: c
    backend: sim
    type: adxl345
    address: 0x54
  - name: d
    backend: sim
    type: adxl345
    cs: -1
    line: 4`,
			[]string{
				`:4: devices[0]: an adxl345 needs cs (on SPI) or address (on I2C)`,
				`:10: devices[1].cs: an adxl345 sits on SPI (cs) or on I2C (address), not both`,
				`:15: devices[2].address: an adxl345 answers at 0x53 or 0x1d, not 0x54`,
				`:20: devices[3].line: not used by type adxl345`,
				`:19: devices[3].cs: SPI bus and chip select must not be negative`,
			}},
		{"gpio and uart", `
  - name: a
    backend: sim
    type: button
    address: 0x10
  - name: b
    backend: sim
    type: relay
    line: -2
  - name: c
    backend: sim
    type: pms5003
    line: 3`,
			[]string{
				`:7: devices[0].address: not used by type button`,
				`:4: devices[0].line: a button needs a GPIO line`,
				`:11: devices[1].line: must not be negative`,
				`:15: devices[2].line: not used by type pms5003`,
				`:12: devices[2].port: a pms5003 needs a UART port, such as /dev/ttyS0`,
			}},
		{"taken places", `
  - {name: a, backend: sim, type: bme280, bus: 1, address: 0x76}
  - {name: b, backend: sim, type: bme280, bus: 1, address: 0x76}
  - {name: c, backend: sim, type: bme280, bus: 2, address: 0x76}
  - {name: d, backend: sim, type: adxl345, bus: 0, cs: 0}
  - {name: e, backend: sim, type: adxl345, bus: 0, cs: 0}
  - {name: f, backend: sim, type: button, line: 4}
  - {name: g, backend: sim, type: relay, line: 4}
  - {name: h, backend: sim, type: pms5003, port: /dev/ttyS0}
  - {name: i, backend: sim, type: pms5003, port: /dev/ttyS0}`,
			[]string{
				`:5: devices[1].address: i2c bus 1 address 0x76 is taken by device "a"`,
				`:8: devices[4].cs: spi bus 0 chip select 0 is taken by device "d"`,
				`:10: devices[6].line: gpio line 4 is taken by device "f"`,
				`:12: devices[8].port: uart port "/dev/ttyS0" is taken by device "h"`,
			}},
		{"signals", `
  - name: a
    backend: sim
    type: relay
    line: 1
    signals:
      level: {value: 1}
  - name: b
    backend: sim
    type: adxl345
    cs: 0
    signals:
      temperature: {value: 1}
      z: {shape: sine}
  - name: c
    backend: sim
    type: pms5003
    port: p
    signals:
      pm2_5_atm: {shape: spike, value: 1}
  - name: d
    backend: sim
    type: button
    line: 2
    signals:
      levle: {value: 1}`,
			[]string{
				`:28: devices[3].signals.levle: field levle not found in type DeviceSignals`,
				`:9: devices[0].signals.level: not used by type relay (it has no signals)`,
				`:15: devices[1].signals.temperature: not used by type adxl345 (it uses x, y, z)`,
				`:16: devices[1].signals.z.period: must be positive for shape "sine"`,
				`:22: devices[2].signals.pm2_5_atm.width: must be positive for shape "spike"`,
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(dir, "site: s\ndevice: d\ndevices:"+tt.devices+"\n")
			if err == nil {
				t.Fatal("no error")
			}
			var got []string
			for _, e := range flatten(err) {
				got = append(got, strings.TrimPrefix(e.Error(), dir+"/perch.yaml"))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestParseDeviceFaultErrors checks the faults' own errors, with and without decoding errors.
func TestParseDeviceFaultErrors(t *testing.T) {
	dir := testDir(t)
	for _, tt := range []struct {
		name, devices string
		want          []string
	}{
		{"kinds", `
  - name: a
    backend: sim
    type: adxl345
    cs: 0
    faults:
      - {kind: nack, at: 1s}
      - {kind: nak}
  - name: b
    backend: sim
    type: relay
    line: 1
    faults: [{kind: corrupt}]
  - name: c
    backend: sim
    type: button
    line: 2
    faults: [{kind: stuck, at: -1s, for: -2s}]`,
			[]string{
				`:9: devices[0].faults[0].kind: an adxl345 on SPI has no nack fault (it has: timeout, stuck, disconnect, corrupt)`,
				`:10: devices[0].faults[1].kind: unknown fault kind "nak" (known: nack, timeout, stuck, disconnect, corrupt)`,
				`:15: devices[1].faults[0].kind: a relay has no corrupt fault (it has: timeout, stuck, disconnect)`,
				`:20: devices[2].faults[0].at: must not be negative`,
				`:20: devices[2].faults[0].for: must not be negative`,
			}},
		{"bad duration", `
  - name: a
    backend: sim
    type: relay
    line: 1
    faults:
      - kind: stuck
        at: 2x`,
			[]string{`:10: devices[0].faults[0].at: time: unknown unit "x" in duration "2x"`}},
		{"unknown key", `
  - name: a
    backend: sim
    type: relay
    line: 1
    faults:
      - kind: stuck
        every: 2s`,
			[]string{`:10: devices[0].faults[0].every: field every not found in type sim.Fault`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(dir, "site: s\ndevice: d\ndevices:"+tt.devices+"\n")
			var got []string
			for _, e := range flatten(err) {
				got = append(got, strings.TrimPrefix(e.Error(), dir+"/perch.yaml"))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestParseDevicesWithModules: devices and the modules that reach them, in one config.
func TestParseDevicesWithModules(t *testing.T) {
	dir := testDir(t)
	text := allDevices + `modules:
  - name: io
    wasm: /MODDIR/io.wasm
    poll: 1s
    grants:
      gpio: [{line: 4, mode: in}, {line: 22, mode: out}]
      spi: [{bus: 0, cs: 1}]
      uart: [{port: /dev/ttyS0}]
`
	if _, err := parse(dir, text); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseDevices is FuzzParse seeded with device configs: no input may make Parse panic, and
// every problem names the file.
func FuzzParseDevices(f *testing.F) {
	dir := testDir(f)
	f.Add(allDevices)
	f.Add("site: s\ndevice: d\ndevices:\n  - {name: a, backend: sim, type: adxl345, cs: 0, address: 0x53, faults: [{kind: nack}]}\n")
	f.Add("site: s\ndevice: d\ndevices:\n  - {name: a, backend: sim, type: pms5003, port: x, signals: {pm10: {sum: [{value: 1}]}}}\n")
	file := dir + "/perch.yaml"
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := parse(dir, text)
		if err != nil {
			if cfg != nil {
				t.Error("a config with an error")
			}
			for _, e := range flatten(err) {
				if !strings.HasPrefix(e.Error(), file+":") {
					t.Errorf("error does not name the file: %q", e)
				}
			}
			return
		}
		for _, d := range cfg.Devices {
			// What the runtime builds from an accepted device must not panic.
			_ = d.BME280Signals()
			_ = d.ADXL345Signals()
			_ = d.PMS5003Signals()
			_ = d.ButtonLevel()
			if (d.Type == "button" || d.Type == "relay") && d.Line == nil || d.Type == "pms5003" && d.Port == "" {
				t.Errorf("device accepted without its place: %+v", d)
			}
		}
	})
}
