package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/perch-edge/perch/hal/sim"
)

// Device types of the sim backend. Each sits where its type says and measures its own signals:
//
//	type     where                                   signals                               faults
//	bme280   bus, address (0x76, 0x77)               temperature, pressure, humidity       nack timeout stuck disconnect corrupt
//	adxl345  bus and cs (SPI), or bus and address    x, y, z (g)                           timeout stuck disconnect corrupt (+ nack on I2C)
//	         (0x53, 0x1d) (I2C)
//	button   line                                    level (high above 0.5)                timeout stuck disconnect
//	relay    line                                    -                                     timeout stuck disconnect
//	pms5003  port                                    pm1_0 pm2_5 pm10 (CF=1, µg/m³),       timeout stuck disconnect corrupt
//	                                                 pm1_0_atm pm2_5_atm pm10_atm (default:
//	                                                 the CF=1 ones), n0_3 n0_5 n1_0 n2_5
//	                                                 n5_0 n10 (per 0.1 L)
//
// A signal left out is the constant 0. Faults are scripted as [sim.Fault]s:
//
//	faults: [{kind: nack, at: 5s, for: 2s}, {kind: stuck, at: 20s}]
//
// (at: from the start of the run; for: how long, absent for until the end).
const (
	DeviceBME280  = "bme280"
	DeviceADXL345 = "adxl345"
	DeviceButton  = "button"
	DeviceRelay   = "relay"
	DevicePMS5003 = "pms5003"
)

var deviceTypes = []string{DeviceADXL345, DeviceBME280, DeviceButton, DevicePMS5003, DeviceRelay}

// DeviceSignals are the scripted quantities of a simulated device, by their configuration
// names; each type uses its own (see [DeviceBME280] and the table there). A nil one is absent.
type DeviceSignals struct {
	Temperature *sim.Signal `yaml:"temperature"` // bme280, °C
	Pressure    *sim.Signal `yaml:"pressure"`    // bme280, hPa
	Humidity    *sim.Signal `yaml:"humidity"`    // bme280, %RH
	X           *sim.Signal `yaml:"x"`           // adxl345, g
	Y           *sim.Signal `yaml:"y"`           // adxl345, g
	Z           *sim.Signal `yaml:"z"`           // adxl345, g
	Level       *sim.Signal `yaml:"level"`       // button: high above 0.5
	PM1         *sim.Signal `yaml:"pm1_0"`       // pms5003, µg/m³, CF=1
	PM25        *sim.Signal `yaml:"pm2_5"`       // pms5003, µg/m³, CF=1
	PM10        *sim.Signal `yaml:"pm10"`        // pms5003, µg/m³, CF=1
	PM1Atm      *sim.Signal `yaml:"pm1_0_atm"`   // pms5003, µg/m³, atmospheric; default pm1_0
	PM25Atm     *sim.Signal `yaml:"pm2_5_atm"`   // pms5003, µg/m³, atmospheric; default pm2_5
	PM10Atm     *sim.Signal `yaml:"pm10_atm"`    // pms5003, µg/m³, atmospheric; default pm10
	N03         *sim.Signal `yaml:"n0_3"`        // pms5003, particles beyond 0.3 µm per 0.1 L
	N05         *sim.Signal `yaml:"n0_5"`        // pms5003, beyond 0.5 µm
	N1          *sim.Signal `yaml:"n1_0"`        // pms5003, beyond 1.0 µm
	N25         *sim.Signal `yaml:"n2_5"`        // pms5003, beyond 2.5 µm
	N5          *sim.Signal `yaml:"n5_0"`        // pms5003, beyond 5.0 µm
	N10         *sim.Signal `yaml:"n10"`         // pms5003, beyond 10 µm
}

type namedSignal struct {
	name string
	sig  **sim.Signal
}

// all returns the signals with their names, in declaration order.
func (s *DeviceSignals) all() []namedSignal {
	return []namedSignal{
		{"temperature", &s.Temperature}, {"pressure", &s.Pressure}, {"humidity", &s.Humidity},
		{"x", &s.X}, {"y", &s.Y}, {"z", &s.Z}, {"level", &s.Level},
		{"pm1_0", &s.PM1}, {"pm2_5", &s.PM25}, {"pm10", &s.PM10},
		{"pm1_0_atm", &s.PM1Atm}, {"pm2_5_atm", &s.PM25Atm}, {"pm10_atm", &s.PM10Atm},
		{"n0_3", &s.N03}, {"n0_5", &s.N05}, {"n1_0", &s.N1}, {"n2_5", &s.N25}, {"n5_0", &s.N5}, {"n10", &s.N10},
	}
}

// NamedSignal is a device's scripted signal with its configuration name.
type NamedSignal struct {
	Name   string
	Signal *sim.Signal
}

// Named returns the signals that are set, in the order of [DeviceSignals]' fields.
func (s *DeviceSignals) Named() []NamedSignal {
	var out []NamedSignal
	for _, ns := range s.all() {
		if *ns.sig != nil {
			out = append(out, NamedSignal{Name: ns.name, Signal: *ns.sig})
		}
	}
	return out
}

// deviceSignals lists the signals each type uses.
var deviceSignals = map[string][]string{
	DeviceBME280:  {"temperature", "pressure", "humidity"},
	DeviceADXL345: {"x", "y", "z"},
	DeviceButton:  {"level"},
	DeviceRelay:   nil,
	DevicePMS5003: sim.PMS5003SignalNames,
}

// val returns the signal, or the constant 0 for an absent one.
func val(s *sim.Signal) sim.Signal {
	if s == nil {
		return sim.Signal{}
	}
	return *s
}

// BME280Signals returns the signals of a bme280.
func (d *Device) BME280Signals() sim.Signals {
	s := &d.Signals
	return sim.Signals{Temperature: val(s.Temperature), Pressure: val(s.Pressure), Humidity: val(s.Humidity)}
}

// ADXL345Signals returns the signals of an adxl345.
func (d *Device) ADXL345Signals() sim.ADXL345Signals {
	s := &d.Signals
	return sim.ADXL345Signals{X: val(s.X), Y: val(s.Y), Z: val(s.Z)}
}

// PMS5003Signals returns the signals of a pms5003; an absent atmospheric one is the CF=1 one.
func (d *Device) PMS5003Signals() sim.PMS5003Signals {
	s := &d.Signals
	or := func(a, b *sim.Signal) sim.Signal {
		if a != nil {
			return *a
		}
		return val(b)
	}
	return sim.PMS5003Signals{
		PM1: val(s.PM1), PM25: val(s.PM25), PM10: val(s.PM10),
		PM1Atm: or(s.PM1Atm, s.PM1), PM25Atm: or(s.PM25Atm, s.PM25), PM10Atm: or(s.PM10Atm, s.PM10),
		N03: val(s.N03), N05: val(s.N05), N1: val(s.N1), N25: val(s.N25), N5: val(s.N5), N10: val(s.N10),
	}
}

// ButtonLevel returns the level signal of a button.
func (d *Device) ButtonLevel() sim.Signal { return val(d.Signals.Level) }

// OnSPI reports whether the device sits on SPI (an adxl345 with a chip select).
func (d *Device) OnSPI() bool { return d.CS != nil }

// faultKinds returns the fault kinds the device honours.
func (d *Device) faultKinds() []sim.FaultKind {
	all := []sim.FaultKind{sim.FaultNACK, sim.FaultTimeout, sim.FaultStuck, sim.FaultDisconnect, sim.FaultCorrupt}
	switch d.Type {
	case DeviceBME280:
		return all
	case DeviceADXL345:
		if d.OnSPI() {
			return all[1:]
		}
		return all
	case DeviceButton, DeviceRelay:
		return all[1:4]
	case DevicePMS5003:
		return all[1:]
	}
	return nil
}

// devices validates the devices: names, types, where each sits (and that no two sit at the same
// place), signals and faults.
func (p *parser) devices(devs []Device) {
	names := map[string]bool{}
	places := map[string]string{} // "i2c 1 0x76" -> device name
	for i := range devs {
		d := &devs[i]
		at := fmt.Sprintf("devices[%d]", i)
		if !nameRE.MatchString(d.Name) {
			p.errf(at+".name", "want a lowercase name of letters, digits, - and _, got %q", d.Name)
		} else if names[d.Name] {
			p.errf(at+".name", "duplicate device %q", d.Name)
		}
		names[d.Name] = true
		if d.Backend == BackendReplay { // replay.go
			p.replayDevice(at, d, places)
			continue
		}
		p.notReplay(at, d)
		p.backend(at, d)
		known := slices.Contains(deviceTypes, d.Type)
		if !known {
			p.errf(at+".type", "unknown device type %q (known: %s)", d.Type, strings.Join(deviceTypes, ", "))
			if d.Address != 0 {
				p.i2cAddress(at, d)
			}
			continue
		}
		if place, field := p.devicePlace(at, d); place != "" {
			if other, ok := places[place]; ok {
				p.errf(at+"."+field, "%s is taken by device %q", place, other)
			} else {
				places[place] = d.Name
			}
		}
		p.deviceSignals(at, d)
		kinds := d.faultKinds()
		for j, f := range d.Faults {
			fat := fmt.Sprintf("%s.faults[%d]", at, j)
			if !slices.Contains(kinds, f.Kind) {
				what := article(d.Type)
				if d.Type == DeviceADXL345 && d.OnSPI() {
					what = "an adxl345 on SPI"
				} else if d.Type == DeviceADXL345 {
					what = "an adxl345 on I2C"
				}
				if !slices.Contains(sim.FaultKinds, f.Kind) {
					p.errf(fat+".kind", "unknown fault kind %q (known: %s)", f.Kind, sim.KindList(sim.FaultKinds))
				} else {
					p.errf(fat+".kind", "%s has no %s fault (it has: %s)", what, f.Kind, sim.KindList(kinds))
				}
			}
			if f.At < 0 {
				p.errf(fat+".at", "must not be negative")
			}
			if f.For < 0 {
				p.errf(fat+".for", "must not be negative")
			}
		}
	}
}

// Backends. A sim device is simulated in the runtime. A plugin device is served by an
// out-of-process provider (hal/plugin): command (and args) name the provider binary, which
// serves the bus and address, chip select, line or port the entry names; its type says which of
// those it uses, as for sim. Devices with the same command and args share one provider process.
// Signals and faults are the provider's business, not the config's.
const (
	BackendSim    = "sim"
	BackendPlugin = "plugin"
	BackendLinux  = "linux" // the box's own buses, through hal/linux
)

// backend checks a device's backend and the fields that belong to it.
func (p *parser) backend(at string, d *Device) {
	switch d.Backend {
	case BackendSim:
		if d.Command != "" || len(d.Args) > 0 {
			p.errf(at+".command", "command and args are for backend plugin, not sim")
		}
	case BackendPlugin:
		if d.Command == "" {
			p.errf(at+".command", "a plugin device needs the provider's command")
		}
		if len(d.Faults) > 0 {
			p.errf(at+".faults", "faults are scripted for backend sim, not plugin")
		}
		for _, ns := range d.Signals.all() {
			if *ns.sig != nil {
				p.errf(at+".signals."+ns.name, "signals are scripted for backend sim, not plugin")
			}
		}
	case BackendLinux:
		if d.Command != "" || len(d.Args) > 0 {
			p.errf(at+".command", "command and args are for backend plugin, not linux")
		}
		if len(d.Faults) > 0 {
			p.errf(at+".faults", "faults are scripted for backend sim, not linux")
		}
		for _, ns := range d.Signals.all() {
			if *ns.sig != nil {
				p.errf(at+".signals."+ns.name, "signals are scripted for backend sim, not linux")
			}
		}
	default:
		p.errf(at+".backend", "unknown backend %q (known: %s, %s, %s, %s)", d.Backend, BackendLinux, BackendPlugin, BackendReplay, BackendSim)
	}
}

// i2cAddress checks a device's I2C address and bus; it reports whether they are good.
func (p *parser) i2cAddress(at string, d *Device) bool {
	ok := true
	if d.Address < 0x03 || d.Address > 0x77 {
		p.errf(at+".address", "7-bit I2C address out of range: %#x", d.Address)
		ok = false
	}
	if d.Bus < 0 {
		p.errf(at+".bus", "must not be negative")
		ok = false
	}
	return ok
}

// devicePlace checks where a device sits and returns the place ("i2c bus 1 address 0x76") and
// the field that names it, or "" if it is not good.
func (p *parser) devicePlace(at string, d *Device) (place, field string) {
	unused := func(fields ...string) {
		for _, f := range fields {
			set := false
			switch f {
			case "bus":
				set = d.Bus != 0
			case "address":
				set = d.Address != 0
			case "cs":
				set = d.CS != nil
			case "line":
				set = d.Line != nil
			case "port":
				set = d.Port != ""
			}
			if set {
				p.errf(at+"."+f, "not used by type %s", d.Type)
			}
		}
	}
	i2c := func(addrs ...int) (string, string) {
		if !p.i2cAddress(at, d) {
			return "", ""
		}
		if !slices.Contains(addrs, d.Address) {
			p.errf(at+".address", "%s answers at %#x or %#x, not %#x", article(d.Type), addrs[0], addrs[1], d.Address)
			return "", ""
		}
		return fmt.Sprintf("i2c bus %d address %#x", d.Bus, d.Address), "address"
	}
	line := func() (string, string) {
		switch {
		case d.Line == nil:
			p.errf(at+".line", "%s needs a GPIO line", article(d.Type))
		case *d.Line < 0:
			p.errf(at+".line", "must not be negative")
		default:
			return fmt.Sprintf("gpio line %d", *d.Line), "line"
		}
		return "", ""
	}
	switch d.Type {
	case DeviceBME280:
		unused("cs", "line", "port")
		return i2c(0x76, 0x77)
	case DeviceADXL345:
		unused("line", "port")
		switch {
		case d.CS != nil && d.Address != 0:
			p.errf(at+".cs", "an adxl345 sits on SPI (cs) or on I2C (address), not both")
		case d.CS != nil:
			if d.Bus < 0 || *d.CS < 0 {
				p.errf(at+".cs", "SPI bus and chip select must not be negative")
				return "", ""
			}
			return fmt.Sprintf("spi bus %d chip select %d", d.Bus, *d.CS), "cs"
		case d.Address != 0:
			return i2c(sim.ADXL345AddrLow, sim.ADXL345AddrHigh)
		default:
			p.errf(at, "an adxl345 needs cs (on SPI) or address (on I2C)")
		}
	case DeviceButton, DeviceRelay:
		unused("bus", "address", "cs", "port")
		return line()
	case DevicePMS5003:
		unused("bus", "address", "cs", "line")
		if d.Port == "" {
			p.errf(at+".port", "a pms5003 needs a UART port, such as /dev/ttyS0")
			return "", ""
		}
		return fmt.Sprintf("uart port %q", d.Port), "port"
	}
	return "", ""
}

// deviceSignals checks that a device has only signals its type uses, and each of them.
func (p *parser) deviceSignals(at string, d *Device) {
	uses := deviceSignals[d.Type]
	for _, ns := range d.Signals.all() {
		s := *ns.sig
		if s == nil {
			continue
		}
		path := at + ".signals." + ns.name
		if !slices.Contains(uses, ns.name) {
			if len(uses) == 0 {
				p.errf(path, "not used by type %s (it has no signals)", d.Type)
			} else {
				p.errf(path, "not used by type %s (it uses %s)", d.Type, strings.Join(uses, ", "))
			}
			continue
		}
		each(s.Validate(), func(err error) {
			var fe *sim.FieldError
			if errors.As(err, &fe) {
				p.errf(path+strings.TrimPrefix(fe.Field, "signal"), "%s", fe.Msg)
			} else {
				p.errf(path, "%v", err)
			}
		})
	}
}

// article returns the device type with "a" or "an" before it.
func article(typ string) string {
	if strings.HasPrefix(typ, "a") {
		return "an " + typ
	}
	return "a " + typ
}
