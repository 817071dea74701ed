package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/config"
)

// replayDir is a folder with a config file's neighbours: good.csv (SKAB layout) and bad.csv (a
// bad number on line 3).
func replayDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"good.csv": "datetime;Current;Pressure;anomaly;changepoint\n2020-03-09 10:14:33;1.5;0.25;0.0;0.0\n",
		"bad.csv":  "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,x\n",
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReplayDevice(t *testing.T) {
	dir := replayDir(t)
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(`site: s
device: d
devices:
  - name: pump
    backend: replay
    port: replay0
    file: good.csv
    format: skab
    columns: [Pressure, anomaly]
    labels: true
    speed: 0
    loop: true
  - name: slow
    backend: replay
    type: replay
    port: replay1
    file: good.csv
    format: skab
`))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if d.File != filepath.Join(dir, "good.csv") || d.Format != "skab" || !d.Labels || !d.Loop || d.ReplaySpeed() != 0 ||
		strings.Join(d.Columns, ",") != "Pressure,anomaly" || d.Port != "replay0" {
		t.Errorf("decoded %+v", d)
	}
	if s := cfg.Devices[1].ReplaySpeed(); s != 1 {
		t.Errorf("default speed %v, want 1", s)
	}
}

func TestReplayDeviceErrors(t *testing.T) {
	dir := replayDir(t)
	tests := []struct {
		name string
		dev  string
		want []string
	}{
		{"missing fields", `{name: r, backend: replay}`, []string{
			`:5: devices[0].port: a replay device needs a UART port name, such as replay0`,
			`:5: devices[0].format: want skab, nab or perch, got ""`,
			`:5: devices[0].file: required: the recording to play`,
		}},
		{"bad row", `{name: r, backend: replay, port: p, file: bad.csv, format: nab}`, []string{
			`:5: devices[0].file: ` + filepath.Join(dir, "bad.csv") + `:3: column "value": want a number, got "x"`,
		}},
		{"missing file", `{name: r, backend: replay, port: p, file: nope.csv, format: nab}`, []string{
			`devices[0].file: replay: stat ` + filepath.Join(dir, "nope.csv") + `: no such file or directory`,
		}},
		{"wrong format", `{name: r, backend: replay, port: p, file: good.csv, format: nab}`, []string{
			`good.csv:1: the first column of a nab file is "timestamp", got "datetime;Current;Pressure;anomaly;changepoint"`,
		}},
		{"label without labels", `{name: r, backend: replay, port: p, file: good.csv, format: skab, columns: [anomaly]}`, []string{
			`devices[0].file: ` + filepath.Join(dir, "good.csv") + `:1: column "anomaly": a label column: set labels to replay it`,
		}},
		{"negative speed", `{name: r, backend: replay, port: p, file: good.csv, format: skab, speed: -1}`, []string{
			`devices[0].speed: want 0 (as fast as read) or more (1: the recorded pace), got -1`,
		}},
		{"sim fields", `{name: r, backend: replay, type: bme280, port: p, file: good.csv, format: skab, bus: 1, line: 2, faults: [{kind: stuck, at: 1s}]}`, []string{
			`devices[0].type: a replay device has no type other than replay, got "bme280"`,
			`devices[0].bus: not used by backend replay`,
			`devices[0].line: not used by backend replay`,
			`devices[0].faults: not used by backend replay`,
		}},
		{"replay fields on sim", `{name: r, backend: sim, type: pms5003, port: p, file: good.csv, speed: 2}`, []string{
			`devices[0].file: for backend replay, not sim`,
			`devices[0].speed: for backend replay, not sim`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte("site: s\ndevice: d\ndevices:\n\n  - "+tt.dev+"\n"))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("errors:\n%v\nwant one containing %s", err, w)
				}
			}
		})
	}
	// Two devices on one port.
	_, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(`site: s
device: d
devices:
  - {name: air, backend: sim, type: pms5003, port: p}
  - {name: r, backend: replay, port: p, file: good.csv, format: skab}
`))
	if err == nil || !strings.Contains(err.Error(), `devices[1].port: uart port "p" is taken by device "air"`) {
		t.Errorf("got %v", err)
	}
}
