package config

import (
	"fmt"
	"math"
	"slices"

	"github.com/perch-edge/perch/hal/replay"
)

// BackendReplay is the backend of recorded data: a device that plays a CSV file on a UART port
// (hal/replay), which a driver module (modules/drivers/replay) reads:
//
//	devices:
//	  - name: pump
//	    backend: replay
//	    port: replay0             # the UART port it sits on
//	    file: data/valve1/0.csv   # relative to this config file
//	    format: skab              # skab, nab or perch (see hal/replay)
//	    columns: [Current, Pressure]  # default: every value column, in the file's order
//	    labels: true              # skab: also play the anomaly and changepoint columns
//	    speed: 10                 # 1 (default): the recorded pace; 10: ten times faster; 0: as fast as read
//	    loop: false               # start again after the last row
//
// Type may be left out (or be "replay"). The file is read when the config is loaded, so that a
// bad row is reported with the config's errors, naming the file and its line.
const BackendReplay = "replay"

// ReplaySpeed returns the device's speed: 1 when it is not set.
func (d *Device) ReplaySpeed() float64 {
	if d.Speed == nil {
		return 1
	}
	return *d.Speed
}

// replayDevice validates a replay device, reads its file, and takes its port in places.
func (p *parser) replayDevice(at string, d *Device, places map[string]string) {
	if d.Type != "" && d.Type != BackendReplay {
		p.errf(at+".type", "a replay device has no type other than replay, got %q", d.Type)
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"bus", d.Bus != 0}, {"address", d.Address != 0}, {"cs", d.CS != nil}, {"line", d.Line != nil},
		{"faults", len(d.Faults) > 0}, {"command", d.Command != "" || len(d.Args) > 0},
	} {
		if f.set {
			p.errf(at+"."+f.name, "not used by backend replay")
		}
	}
	for _, ns := range d.Signals.all() {
		if *ns.sig != nil {
			p.errf(at+".signals."+ns.name, "not used by backend replay")
		}
	}
	if d.Port == "" {
		p.errf(at+".port", "a replay device needs a UART port name, such as replay0")
	} else {
		place := fmt.Sprintf("uart port %q", d.Port)
		if other, ok := places[place]; ok {
			p.errf(at+".port", "%s is taken by device %q", place, other)
		} else {
			places[place] = d.Name
		}
	}
	if s := d.Speed; s != nil && (*s < 0 || math.IsNaN(*s) || math.IsInf(*s, 0)) {
		p.errf(at+".speed", "want 0 (as fast as read) or more (1: the recorded pace), got %v", *s)
	}
	format := replay.Format(d.Format)
	okFormat := slices.Contains(replay.Formats, format)
	if !okFormat {
		p.errf(at+".format", "want skab, nab or perch, got %q", d.Format)
	}
	if d.File == "" {
		p.errf(at+".file", "required: the recording to play")
		return
	}
	d.File = p.abs(d.File)
	if okFormat {
		if _, err := replay.ReadFile(d.File, format, replay.ReadOptions{Columns: d.Columns, Labels: d.Labels}); err != nil {
			p.errf(at+".file", "%v", err)
		}
	}
}

// notReplay reports the replay fields of a device of another backend.
func (p *parser) notReplay(at string, d *Device) {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"file", d.File != ""}, {"format", d.Format != ""}, {"columns", len(d.Columns) > 0},
		{"labels", d.Labels}, {"speed", d.Speed != nil}, {"loop", d.Loop},
	} {
		if f.set {
			p.errf(at+"."+f.name, "for backend replay, not %s", d.Backend)
		}
	}
}
