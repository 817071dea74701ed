package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/config"
)

// actuatorManifests are the manifests of the actuator tests, written beside those of testDir.
var actuatorManifests = map[string]string{
	// A relay actuator: a GPIO output on any line.
	"act": `name: act
version: 0.1.0
abi: 1
kind: actuator
emits: [event]
needs:
  gpio:
    - mode: out
`,
	// An actuator that would emit only alerts: it must say what it did with events.
	"actnoevent": `name: actnoevent
version: 0.1.0
abi: 1
kind: actuator
emits: [alert]
`,
}

// TestActuator checks the config rules of the actuator kind: it takes inputs like a rule (it
// needs at least one and is never polled), its grants are checked against its needs like any
// module's (an output line must be declared and granted with mode out), and its manifest must
// list event in emits.
func TestActuator(t *testing.T) {
	dir := testDir(t)
	for name, text := range actuatorManifests {
		if err := os.WriteFile(filepath.Join(dir, name+".manifest.yaml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const head = `site: s
device: d
modules:
  - name: env
    wasm: /MODDIR/bme.wasm
    poll: 1s
    grants: {i2c: [{bus: 1, address: 0x76}], state: true}
  - name: hot
    wasm: /MODDIR/thr.wasm
    inputs: [env]
`
	for _, c := range []struct {
		name, module string
		want         string // a part of the error; empty: valid
	}{
		{"valid", `inputs: [hot]
    grants: {gpio: [{line: 22, mode: out}]}`, ""},
		{"several inputs", `inputs: [hot, env]
    grants: {gpio: [{line: 22, mode: out}]}`, ""},
		{"no inputs", `grants: {gpio: [{line: 22, mode: out}]}`,
			`modules[2].inputs: an actuator needs at least one input`},
		{"polled", `inputs: [hot]
    poll: 1s
    grants: {gpio: [{line: 22, mode: out}]}`, `modules[2].poll: only drivers are polled`},
		{"no grant", `inputs: [hot]`, `modules[2].grants: the module needs a device (gpio) and none is granted`},
		{"input line", `inputs: [hot]
    grants: {gpio: [{line: 22, mode: in}]}`, `modules[2].grants.gpio[0]: line 22 (in) is not declared in the module's needs`},
		{"undeclared device", `inputs: [hot]
    grants: {gpio: [{line: 22, mode: out}], i2c: [{bus: 1, address: 0x76}]}`,
			`modules[2].grants.i2c[0]: bus 1 address 0x76 is not declared in the module's needs`},
		{"unknown input", `inputs: [nothing]
    grants: {gpio: [{line: 22, mode: out}]}`, `unknown module "nothing"`},
		{"no event in emits", `inputs: [hot]`, `emits: an actuator emits events saying what it did: list event`},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm := "act"
			if c.name == "no event in emits" {
				wasm = "actnoevent"
			}
			text := head + "  - name: relay\n    wasm: /MODDIR/" + wasm + ".wasm\n    " + c.module + "\n"
			cfg, err := parse(dir, text)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("error: %v\n%s", err, text)
			case c.want == "":
				if k := cfg.Modules[2].Manifest.Kind; k != config.KindActuator {
					t.Errorf("kind %q", k)
				}
				if got := cfg.Downstream()["hot"]; len(got) != 1 || got[0] != "relay" {
					t.Errorf("downstream of hot: %v", got)
				}
			case err == nil:
				t.Fatalf("no error, want %q\n%s", c.want, text)
			case !strings.Contains(err.Error(), c.want):
				t.Errorf("error %v\nwant %q", err, c.want)
			}
		})
	}
}
