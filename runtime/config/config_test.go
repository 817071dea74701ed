package config_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/config"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// manifests are written beside the fake module binaries of the tests; the loader reads only the
// manifest NAME.manifest.yaml beside NAME.wasm, never the binary itself.
var manifests = map[string]string{
	// A driver that may reach 0x76 on any bus or 0x77 on bus 2, and keep state.
	"bme": `name: bme
version: 0.1.0
abi: 1
kind: driver
emits: [reading]
needs:
  i2c:
    - address: 0x76
    - bus: 2
      address: 0x77
  state: true
`,
	"win": `name: win
version: "0.1.0"
abi: 1
kind: filter
emits: [summary]
needs: {}
`,
	"thr": `name: thr
version: "0.1.0"
abi: 1
kind: rule
emits: [alert]
`,
	// A driver with GPIO, SPI and UART needs.
	"io": `name: io
version: 0.1.0
abi: 1
kind: driver
emits: [reading, event]
needs:
  gpio:
    - {line: 4, mode: in}
    - {mode: out}
  spi:
    - {bus: 0}
  uart:
    - port: /dev/ttyS0
`,
	"badkey": `name: badkey
version: 0.1.0
abi: 1
kind: driver
emit: [reading]
`,
	"abi2": `name: abi2
version: 0.1.0
abi: 2
kind: driver
`,
	// Several problems at once.
	"badmf": `name: Bad
abi: 1
kind: sensor
emits: [reading, metric]
needs:
  i2c:
    - address: 0x80
  gpio:
    - {line: 1, mode: both}
`,
	"badtype": `name: badtype
version: 0.1.0
abi: "one"
kind: driver
`,
}

// testDir writes the manifests into a fresh folder and returns it.
func testDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, text := range manifests {
		if err := os.WriteFile(filepath.Join(dir, name+".manifest.yaml"), []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// goodConfigs decode and validate; they also seed FuzzParse.
var goodConfigs = map[string]string{
	"minimal": `site: s
device: d
`,
	"demo": `# a driver, a filter and a rule
site: demo
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
          - {shape: sine, mean: 22, amplitude: 1.5, period: 60s}
          - {shape: spike, value: 0, amplitude: 12, at: 15s, width: 25s}
      pressure: {shape: sine, mean: 1013.25, amplitude: 2, period: 300s}
      humidity: {shape: noise, mean: 45, sigma: 0.5, seed: 7}
modules:
  - name: env
    wasm: bme.wasm
    poll: 500ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
      state: true
    config:
      bus: 1
      address: 0x76
  - name: env-window
    wasm: win.wasm
    inputs: [env]
    config:
      window: 10s
      nested: {list: [1, 2.5, "x"], flag: true}
  - name: env-hot
    wasm: thr.wasm
    inputs: [env, env-window]
    record: false
`,
	"explicit": `site: s
device: d
store:
  path: /var/lib/perch/perch.db
  readings_max_rows: 1000
  max_age: 72h
  max_bytes: 1048576
engine:
  cache_dir: cache/wasm
modules:
  - name: io
    wasm: /MODDIR/io.wasm
    poll: 2s
    poll_max_records: 16
    memory_pages: 16
    deadline: 250ms
    grants:
      gpio: [{line: 4, mode: in}, {line: 9, mode: out}]
      spi: [{bus: 0, cs: 1}]
      uart: [{port: /dev/ttyS0}]
    limits:
      emit_records: 10
      emit_bytes: 2048
      log_bytes: 512
    record: true
`,
}

// parse parses text as the file perch.yaml in dir, with /MODDIR/ standing for dir.
func parse(dir, text string) (*config.Config, error) {
	text = strings.ReplaceAll(text, "/MODDIR/", dir+"/")
	return config.Parse(filepath.Join(dir, "perch.yaml"), []byte(text))
}

func TestParseGood(t *testing.T) {
	dir := testDir(t)
	for name, text := range goodConfigs {
		t.Run(name, func(t *testing.T) {
			cfg, err := parse(dir, text)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.File != filepath.Join(dir, "perch.yaml") {
				t.Errorf("File = %q", cfg.File)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	dir := testDir(t)
	cfg, err := parse(dir, goodConfigs["demo"])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Store.Path, filepath.Join(dir, "var", "perch.db"); got != want {
		t.Errorf("Store.Path = %q, want %q", got, want)
	}
	if got, want := cfg.Engine.CacheDir, filepath.Join(dir, "var", "cache"); got != want {
		t.Errorf("Engine.CacheDir = %q, want %q", got, want)
	}
	if cfg.Site != "demo" || cfg.Device != "sim-01" {
		t.Errorf("Site, Device = %q, %q", cfg.Site, cfg.Device)
	}
	if len(cfg.Devices) != 1 || cfg.Devices[0].Address != 0x76 || cfg.Devices[0].Bus != 1 {
		t.Errorf("Devices = %+v", cfg.Devices)
	}
	if len(cfg.Modules) != 3 {
		t.Fatalf("%d modules, want 3", len(cfg.Modules))
	}
	for _, m := range cfg.Modules {
		if m.MemoryPages != config.DefaultMemoryPages {
			t.Errorf("%s: MemoryPages = %d", m.Name, m.MemoryPages)
		}
		if m.Deadline.D() != config.DefaultDeadline {
			t.Errorf("%s: Deadline = %v", m.Name, m.Deadline.D())
		}
		if m.PollMax != 1 {
			t.Errorf("%s: PollMax = %d", m.Name, m.PollMax)
		}
		want := config.Limits{EmitRecords: config.DefaultEmitRecords, EmitBytes: config.DefaultEmitBytes, LogBytes: config.DefaultLogBytes}
		if m.Limits != want {
			t.Errorf("%s: Limits = %+v, want %+v", m.Name, m.Limits, want)
		}
		if !filepath.IsAbs(m.Wasm) || filepath.Dir(m.Wasm) != dir {
			t.Errorf("%s: Wasm = %q, want it in %s", m.Name, m.Wasm, dir)
		}
	}
	env, win, hot := &cfg.Modules[0], &cfg.Modules[1], &cfg.Modules[2]
	if env.Poll.D() != 500*time.Millisecond {
		t.Errorf("env: Poll = %v", env.Poll.D())
	}
	if env.Manifest.Name != "bme" || env.Manifest.Kind != config.KindDriver || len(env.Manifest.Needs.I2C) != 2 {
		t.Errorf("env: Manifest = %+v", env.Manifest)
	}
	if win.Manifest.Kind != config.KindFilter || hot.Manifest.Kind != config.KindRule {
		t.Errorf("kinds = %q, %q", win.Manifest.Kind, hot.Manifest.Kind)
	}
	if !env.Recorded() || !win.Recorded() || hot.Recorded() {
		t.Errorf("Recorded = %v %v %v, want true true false", env.Recorded(), win.Recorded(), hot.Recorded())
	}
	for _, tc := range []struct {
		m    *config.Module
		want string
	}{
		{env, `{"address":118,"bus":1}`},
		{win, `{"nested":{"flag":true,"list":[1,2.5,"x"]},"window":"10s"}`},
		{hot, `{}`},
	} {
		if string(tc.m.ConfigJSON) != tc.want {
			t.Errorf("%s: ConfigJSON = %s, want %s", tc.m.Name, tc.m.ConfigJSON, tc.want)
		}
	}
	want := map[string][]string{"env": {"env-window", "env-hot"}, "env-window": {"env-hot"}}
	if got := cfg.Downstream(); !reflect.DeepEqual(got, want) {
		t.Errorf("Downstream() = %v, want %v", got, want)
	}
}

func TestParseExplicit(t *testing.T) {
	dir := testDir(t)
	cfg, err := parse(dir, goodConfigs["explicit"])
	if err != nil {
		t.Fatal(err)
	}
	want := config.Store{Path: "/var/lib/perch/perch.db", ReadingsMaxRows: 1000,
		MaxAge: config.Duration(72 * time.Hour), MaxBytes: 1 << 20}
	if cfg.Store != want {
		t.Errorf("Store = %+v, want %+v", cfg.Store, want)
	}
	if got, want := cfg.Engine.CacheDir, filepath.Join(dir, "cache", "wasm"); got != want {
		t.Errorf("Engine.CacheDir = %q, want %q", got, want)
	}
	m := cfg.Modules[0]
	if m.Wasm != filepath.Join(dir, "io.wasm") {
		t.Errorf("Wasm = %q", m.Wasm)
	}
	if m.Poll.D() != 2*time.Second || m.PollMax != 16 || m.MemoryPages != 16 || m.Deadline.D() != 250*time.Millisecond {
		t.Errorf("Poll, PollMax, MemoryPages, Deadline = %v, %d, %d, %v", m.Poll.D(), m.PollMax, m.MemoryPages, m.Deadline.D())
	}
	if want := (config.Limits{EmitRecords: 10, EmitBytes: 2048, LogBytes: 512}); m.Limits != want {
		t.Errorf("Limits = %+v, want %+v", m.Limits, want)
	}
	wantGrants := config.Grants{
		GPIO: []config.GPIOGrant{{Line: 4, Mode: "in"}, {Line: 9, Mode: "out"}},
		SPI:  []config.SPIGrant{{Bus: 0, CS: 1}},
		UART: []config.UARTGrant{{Port: "/dev/ttyS0"}},
	}
	if !reflect.DeepEqual(m.Grants, wantGrants) {
		t.Errorf("Grants = %+v, want %+v", m.Grants, wantGrants)
	}
	if !m.Recorded() {
		t.Error("Recorded() = false")
	}
	if string(m.ConfigJSON) != "{}" {
		t.Errorf("ConfigJSON = %s", m.ConfigJSON)
	}
	if len(cfg.Downstream()) != 0 {
		t.Errorf("Downstream() = %v", cfg.Downstream())
	}
}

func TestLoad(t *testing.T) {
	dir := testDir(t)
	if err := os.WriteFile(filepath.Join(dir, "perch.yaml"), []byte(goodConfigs["demo"]), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	cfg, err := config.Load("perch.yaml") // relative: made absolute
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != filepath.Join(dir, "perch.yaml") {
		t.Errorf("File = %q", cfg.File)
	}
	if cfg.Store.Path != filepath.Join(dir, "var", "perch.db") {
		t.Errorf("Store.Path = %q", cfg.Store.Path)
	}
	if cfg.Modules[0].Wasm != filepath.Join(dir, "bme.wasm") {
		t.Errorf("Wasm = %q", cfg.Modules[0].Wasm)
	}

	_, err = config.Load("missing.yaml")
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("Load(missing) = %v, want a config: error matching os.ErrNotExist", err)
	}
}

// badConfigs are configs that must be refused; testdata/errors.golden holds the exact errors,
// with the test's folder written as $DIR. Keep every case's text self-contained so that its line
// numbers can be read off it.
var badConfigs = []struct{ name, text string }{
	{"yaml syntax error", `site: s
device: d
modules:
  - name: a
   wasm: x.wasm
`},
	{"tab indentation", "site: s\n\tdevice: d\n"},
	{"empty document", ``},
	{"comments only", "# nothing here\n"},
	{"not a mapping", "- site\n- device\n"},
	{"duplicate key", `site: s
device: d
site: t
`},
	{"first key of a list item", `site: s
device: d
modules:
  - nmae: a
    wasm: bme.wasm
  - poll: 5
`},
	{"unknown top-level key", `site: s
device: d
modules: []
sitee: t
`},
	{"unknown key inside a module", `site: s
device: d
modules:
  - name: a
    wasm: bme.wasm
    poll: 1s
  - name: b
    wasm: win.wasm
    inputs: [a]
    pol: 1s
`},
	{"unknown key in grants and limits", `site: s
device: d
modules:
  - name: a
    wasm: bme.wasm
    poll: 1s
    grants:
      i2c: [{bus: 1, address: 0x76}]
      i2s: true
    limits:
      emit_recs: 5
`},
	{"wrong types", `site: s
device: [d]
devices:
  - name: env0
    backend: sim
    type: bme280
    bus: "one"
    address: 0x76
modules:
  - name: a
    wasm: bme.wasm
    poll: 5
    memory_pages: -1
    inputs: a
`},
	{"wrong type in a flow mapping", `site: s
device: d
modules:
  - name: a
    wasm: bme.wasm
    poll: 1s
    grants:
      i2c: [{bus: "one", address: 0x76}]
`},
	{"bad durations", `site: s
device: d
store:
  max_age: forever
modules:
  - name: a
    wasm: bme.wasm
    poll: -1s
    deadline: {ms: 5}
`},
	{"missing site and device", `store:
  path: x.db
`},
	{"negative store sizes", `site: s
device: d
store:
  readings_max_rows: -1
  max_bytes: -5
`},
	{"bad module names", `site: s
device: d
modules:
  - name: Env
    wasm: bme.wasm
    poll: 1s
  - wasm: bme.wasm
    poll: 1s
`},
	{"duplicate module names", `site: s
device: d
modules:
  - name: a
    wasm: bme.wasm
    poll: 1s
  - name: b
    wasm: win.wasm
    inputs: [a]
  - name: a
    wasm: thr.wasm
    inputs: [b]
`},
	{"unknown input", `site: s
device: d
modules:
  - name: env
    wasm: bme.wasm
    poll: 1s
  - name: win
    wasm: win.wasm
    inputs:
      - env
      - envv
`},
	{"self input", `site: s
device: d
modules:
  - name: win
    wasm: win.wasm
    inputs: [win]
`},
	{"two-cycle", `site: s
device: d
modules:
  - name: a
    wasm: win.wasm
    inputs: [b]
  - name: b
    wasm: win.wasm
    inputs: [a]
`},
	{"three-cycle", `site: s
device: d
modules:
  - name: env
    wasm: bme.wasm
    poll: 1s
  - name: a
    wasm: win.wasm
    inputs: [c]
  - name: b
    wasm: win.wasm
    inputs: [env, a]
  - name: c
    wasm: thr.wasm
    inputs: [b]
`},
	{"driver without poll and with inputs", `site: s
device: d
modules:
  - name: env
    wasm: bme.wasm
    grants:
      i2c: [{bus: 1, address: 0x76}]
  - name: env2
    wasm: bme.wasm
    poll: 1s
    inputs: [env]
    grants:
      i2c: [{bus: 1, address: 0x76}]
`},
	{"filter without inputs, filter and rule with poll", `site: s
device: d
modules:
  - name: win
    wasm: win.wasm
  - name: env
    wasm: bme.wasm
    poll: 1s
    grants:
      i2c: [{bus: 1, address: 0x76}]
      state: true
  - name: win2
    wasm: win.wasm
    inputs: [env]
    poll: 1s
  - name: hot
    wasm: thr.wasm
    inputs: [env]
    poll: 1s
`},
	{"module limits out of range", `site: s
device: d
modules:
  - name: env
    wasm: bme.wasm
    poll: 1s
    memory_pages: 65537
    poll_max_records: -2
    grants:
      i2c: [{bus: 1, address: 0x76}]
`},
	{"module config not a mapping", `site: s
device: d
modules:
  - name: win
    wasm: win.wasm
    inputs: [win2]
    config: [1, 2]
  - name: win2
    wasm: win.wasm
    inputs: [win]
    config: {.nan: 1}
`},
	{"missing wasm", `site: s
device: d
modules:
  - name: env
    poll: 1s
`},
	{"missing manifest file", `site: s
device: d
modules:
  - name: env
    wasm: nothing.wasm
    poll: 1s
`},
	{"bad manifests", `site: s
device: d
modules:
  - name: a
    wasm: badkey.wasm
    poll: 1s
  - name: b
    wasm: abi2.wasm
    poll: 1s
  - name: c
    wasm: badmf.wasm
    poll: 1s
  - name: d
    wasm: badtype.wasm
    poll: 1s
`},
	{"i2c grant not declared", `site: s
device: d
modules:
  - name: env
    wasm: bme.wasm
    poll: 1s
    grants:
      i2c:
        - bus: 1
          address: 0x76
        - bus: 1
          address: 0x77
        - {bus: 3, address: 0x40}
      state: true
`},
	{"gpio, spi and uart grants not declared", `site: s
device: d
modules:
  - name: io
    wasm: io.wasm
    poll: 1s
    grants:
      gpio:
        - {line: 5, mode: in}
        - {line: 4, mode: out}
        - {line: 4, mode: sideways}
      spi:
        - {bus: 1, cs: 0}
      uart:
        - port: /dev/ttyUSB0
`},
	{"state grant not declared", `site: s
device: d
modules:
  - name: win
    wasm: win.wasm
    inputs: [win2]
    grants:
      state: true
  - name: win2
    wasm: win.wasm
    inputs: [win]
`},
	{"needs not granted", `site: s
device: d
modules:
  - name: env
    wasm: bme.wasm
    poll: 1s
  - name: io
    wasm: io.wasm
    poll: 1s
    grants: {}
`},
	{"bad devices", `site: s
device: d
devices:
  - name: env0
    backend: i2c-dev
    type: bme680
    bus: 1
    address: 0x78
  - name: env0
    backend: sim
    type: bme280
    address: 0x02
  - name: Env
    backend: sim
    type: bme280
    address: 0x76
`},
	{"bad device signals", `site: s
device: d
devices:
  - name: env0
    backend: sim
    type: bme280
    address: 0x76
    signals:
      temperature:
        shape: sinus
      pressure:
        shape: sine
        mean: 1013
      humidity:
        sum:
          - {shape: step, from: 1, to: 2, width: 1s}
`},
	{"bad device signal duration", `site: s
device: d
devices:
  - name: env0
    backend: sim
    type: bme280
    address: 0x76
    signals:
      temperature:
        shape: sine
        period: 6x
modules:
  - name: a
    wasm: bme.wasm
    poll: five
`},
	{"unknown device signal key", `site: s
device: d
devices:
  - name: env0
    backend: sim
    type: bme280
    address: 0x76
    signals:
      temperature: {shape: sine, periode: 1s}
`},
}

func TestParseErrors(t *testing.T) {
	dir := testDir(t)
	file := filepath.Join(dir, "perch.yaml")
	var out bytes.Buffer
	for _, tc := range badConfigs {
		cfg, err := parse(dir, tc.text)
		if err == nil {
			t.Errorf("%s: no error, config %+v", tc.name, cfg)
			continue
		}
		if cfg != nil {
			t.Errorf("%s: a config with the error", tc.name)
		}
		// Every problem names the file.
		for _, e := range flatten(err) {
			if !strings.HasPrefix(e.Error(), file+":") {
				t.Errorf("%s: error does not start with the file name: %q", tc.name, e)
			}
		}
		out.WriteString("=== " + tc.name + "\n")
		out.WriteString(strings.ReplaceAll(err.Error(), dir, "$DIR") + "\n\n")
	}
	golden(t, "errors.golden", out.Bytes())
}

// TestParseErrorsJoined checks that several problems come back as one error per problem.
func TestParseErrorsJoined(t *testing.T) {
	dir := testDir(t)
	for _, tc := range []struct {
		name string
		n    int
	}{
		{"wrong types", 7}, // five decoding errors, then what validation finds in the rest
		{"missing site and device", 2},
		{"empty document", 2},
		{"bad devices", 6},
		{"bad device signals", 3},
		{"bad manifests", 9},
		{"i2c grant not declared", 2},
		{"needs not granted", 3},
	} {
		text, ok := "", false
		for _, bc := range badConfigs {
			if bc.name == tc.name {
				text, ok = bc.text, true
			}
		}
		if !ok {
			t.Fatalf("no bad config named %q", tc.name)
		}
		_, err := parse(dir, text)
		if got := len(flatten(err)); got != tc.n {
			t.Errorf("%s: %d errors, want %d:\n%v", tc.name, got, tc.n, err)
		}
	}
}

// flatten returns the leaves of a tree of errors.Join errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// golden compares got with testdata/name, or rewrites the file under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update and review the diff):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// lineDiff lists the lines that differ, by line number.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl + "\n")
		}
	}
	return b.String()
}
