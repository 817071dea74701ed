// Package config decodes and validates Perch's pipeline configuration: one YAML document that
// names the site and device, the recorder, the HAL devices and the modules with their inputs,
// grants, limits and module config.
//
// # Overview
//
// Decoding is strict: unknown keys, wrong types, unknown module references, cycles and grants
// that a module's manifest does not declare are errors, and every error names the file, the line
// and the field, as in
//
//	examples/demo/perch.yaml:14: modules[1].inputs[0]: unknown module "envv"
//
// [Load] reports every problem at once (joined with errors.Join). Relative paths in the file are
// relative to the file's folder; [Load] makes them absolute.
//
// # Usage
//
//	cfg, err := config.Load("perch.yaml")
//	if err != nil { ... } // print err: one problem per line
package config

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/perch-edge/perch/hal/sim"
)

// Config is the root document.
type Config struct {
	Site    string   `yaml:"site"`    // site name, used in upstream topics
	Device  string   `yaml:"device"`  // this box's id
	Store   Store    `yaml:"store"`   // the flight recorder
	Engine  Engine   `yaml:"engine"`  // the Wasm engine
	Devices []Device `yaml:"devices"` // HAL devices
	Modules []Module `yaml:"modules"` // module instances, in any order
	Uplink  Uplink   `yaml:"uplink"`  // MQTT uplink; absent: none
	Sources []Source `yaml:"sources"` // southbound MQTT sources; see sources.go
	Models  []Model  `yaml:"models"`  // ONNX model nodes; see models.go
	API     API      `yaml:"api"`     // the local HTTP API; see api.go
	Update  Update   `yaml:"update"`  // the update agent; see update.go

	// File is the absolute path of the file the config was loaded from.
	File string `yaml:"-"`
}

// Store configures the flight recorder.
type Store struct {
	Path            string   `yaml:"path"`              // the SQLite file; default var/perch.db
	ReadingsMaxRows int      `yaml:"readings_max_rows"` // size of the readings ring; 0 = default
	MaxAge          Duration `yaml:"max_age"`           // retention by age; 0 = default
	MaxBytes        int64    `yaml:"max_bytes"`         // disk quota in bytes; 0 = default
}

// Engine configures the Wasm engine.
type Engine struct {
	// CacheDir is the on-disk compilation cache; default var/cache next to the store.
	CacheDir string `yaml:"cache_dir"`
	// ONNXRuntime is the path of libonnxruntime.so.1 for the model nodes; default
	// $PERCH_ORT_LIB, then the places models/ort searches (`make ort`'s cache).
	ONNXRuntime string `yaml:"onnxruntime"`
}

// Device is one HAL device: where it sits (bus and address, bus and chip select, line or
// port, as its type needs), what it measures and which faults it suffers. devices.go has the
// types and what each needs.
type Device struct {
	Name    string        `yaml:"name"`
	Backend string        `yaml:"backend"` // "sim" or "plugin"
	Type    string        `yaml:"type"`    // for sim: bme280, adxl345, button, relay, pms5003
	Bus     int           `yaml:"bus"`     // I2C or SPI bus number
	Address int           `yaml:"address"` // 7-bit I2C address, such as 0x76
	CS      *int          `yaml:"cs"`      // SPI chip select (an adxl345 on SPI)
	Line    *int          `yaml:"line"`    // GPIO line (button, relay)
	Port    string        `yaml:"port"`    // UART port, such as /dev/ttyS0 (pms5003)
	Signals DeviceSignals `yaml:"signals"` // for sim: the scripted truth
	Faults  []sim.Fault   `yaml:"faults"`  // for sim: scripted faults
	Command string        `yaml:"command"` // for plugin: the provider binary (see hal/plugin)
	Args    []string      `yaml:"args"`    // for plugin: its arguments
	File    string        `yaml:"file"`    // for replay: the recording (relative to the config file)
	Format  string        `yaml:"format"`  // for replay: skab, nab or perch
	Columns []string      `yaml:"columns"` // for replay: the columns to play; default all
	Labels  bool          `yaml:"labels"`  // for replay: also play SKAB's label columns
	Speed   *float64      `yaml:"speed"`   // for replay: 1 (default) the recorded pace; 0 as fast as read
	Loop    bool          `yaml:"loop"`    // for replay: start again after the last row
}

// Module is one module instance in the pipeline.
type Module struct {
	Name string `yaml:"name"` // unique instance name; the source of its records
	// Wasm is the module binary; its manifest is the file beside it named
	// <name>.manifest.yaml (for bme280.wasm, bme280.manifest.yaml).
	Wasm        string    `yaml:"wasm"`
	Inputs      []string  `yaml:"inputs"`           // upstream module names (filters, rules)
	Poll        Duration  `yaml:"poll"`             // poll interval (drivers)
	PollMax     int       `yaml:"poll_max_records"` // records per poll; default 1
	MemoryPages uint32    `yaml:"memory_pages"`     // 64 KiB pages; default 512 (32 MiB)
	Deadline    Duration  `yaml:"deadline"`         // per guest call; default 100ms
	Grants      Grants    `yaml:"grants"`           // what the module may reach
	Limits      Limits    `yaml:"limits"`           // quotas per call
	Record      *bool     `yaml:"record"`           // write outputs to the recorder; default true
	Config      yaml.Node `yaml:"config"`           // passed to the module as JSON

	// Manifest is read from the file beside Wasm by Load.
	Manifest Manifest `yaml:"-"`
	// ConfigJSON is Config as JSON, made by Load.
	ConfigJSON []byte `yaml:"-"`
}

// Recorded reports whether the module's outputs go to the recorder.
func (m *Module) Recorded() bool { return m.Record == nil || *m.Record }

// Grants lists what a module may reach; anything not listed is denied.
type Grants struct {
	I2C   []I2CGrant  `yaml:"i2c"`
	SPI   []SPIGrant  `yaml:"spi"`
	GPIO  []GPIOGrant `yaml:"gpio"`
	UART  []UARTGrant `yaml:"uart"`
	State bool        `yaml:"state"` // the module's own key/value state
	// Models are the models (by name) the module may score rows with (perch:infer/v1).
	Models []string `yaml:"models"`
}

// I2CGrant grants one device on one bus.
type I2CGrant struct {
	Bus     int `yaml:"bus"`
	Address int `yaml:"address"`
}

// SPIGrant grants one chip select on one bus.
type SPIGrant struct {
	Bus int `yaml:"bus"`
	CS  int `yaml:"cs"`
}

// GPIOGrant grants one line.
type GPIOGrant struct {
	Line int    `yaml:"line"`
	Mode string `yaml:"mode"` // "in" or "out"
}

// UARTGrant grants one port.
type UARTGrant struct {
	Port string `yaml:"port"`
}

// Limits are per-call quotas. Zero means the default.
type Limits struct {
	EmitRecords int `yaml:"emit_records"` // records emitted per call; default 4096
	EmitBytes   int `yaml:"emit_bytes"`   // bytes emitted per call; default 1 MiB
	LogBytes    int `yaml:"log_bytes"`    // log bytes per call; default 16 KiB
}

// Defaults.
const (
	DefaultMemoryPages = 512
	DefaultDeadline    = 100 * time.Millisecond
	DefaultEmitRecords = 4096
	DefaultEmitBytes   = 1 << 20
	DefaultLogBytes    = 16 << 10
)

// Duration is a time.Duration written as a string such as "250ms" or "10s".
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 0 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a duration such as \"10s\", got %q", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Load reads, decodes and validates the config file at path, reads every module's manifest,
// and fills in defaults. It returns every problem found, joined.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(abs, data)
}

// Parse decodes and validates data as the config file named file (an absolute path: relative
// paths inside are taken from its folder).
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file, lines: map[string]int{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, p.yamlErr(err)
	}
	p.index(&root, "")
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty document
		if err := p.textErr(&root, reflect.TypeFor[Config](), err); err != nil {
			return nil, err
		}
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, p.yamlErr(err)
		}
		// Type errors leave the rest of the document decoded: validate it too, so that every
		// problem is reported at once.
		p.errs = append(p.errs, p.yamlErr(err))
	}
	cfg.File = file
	p.validate(&cfg)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return &cfg, nil
}

// parser collects errors and maps field paths to lines.
type parser struct {
	file   string
	lines  map[string]int // field path -> line
	byLine map[int]string // line -> deepest field path that contains every field starting on it
	errs   []error
	bad    []string // field paths with a decoding error: later checks do not report them again
}

// index records the line of every field path under n.
func (p *parser) index(n *yaml.Node, path string) {
	if p.byLine == nil {
		p.byLine = map[int]string{}
	}
	if path != "" {
		if _, ok := p.lines[path]; !ok {
			p.lines[path] = n.Line
		}
		// A collection that starts on the line of its first entry ("- name: a", "[d]") is
		// named by its entries.
		if len(n.Content) == 0 || n.Content[0].Line != n.Line {
			p.mark(n.Line, path)
		}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			p.index(c, path)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			p.lines[sub] = k.Line
			p.mark(k.Line, sub)
			p.index(v, sub)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p.index(c, path+"["+strconv.Itoa(i)+"]")
		}
	}
}

// mark notes that path starts on line. A line with several fields ({bus: 1, address: 0x76})
// is named by their common parent: the YAML decoder gives only the line of a problem, and naming
// one of the fields could name the wrong one.
func (p *parser) mark(line int, path string) {
	if old, ok := p.byLine[line]; ok {
		for path != "" && old != path && !strings.HasPrefix(old, path+".") && !strings.HasPrefix(old, path+"[") {
			path = parent(path)
		}
	}
	p.byLine[line] = path
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// textErr finds where a decoding error that is not a yaml.TypeError came from. The YAML decoder
// stops at the first value that an encoding.TextUnmarshaler refuses (such as a signal's period
// "6x") and does not say where it is; textErr walks the document along the Go type t (that of the
// value decoded) and reports each scalar that the TextUnmarshaler of its field refuses, with its
// line and field. It returns nil if it finds none.
func (p *parser) textErr(root *yaml.Node, t reflect.Type, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return nil
	}
	var walk func(n *yaml.Node, t reflect.Type, path string)
	walk = func(n *yaml.Node, t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, t, path)
			}
		case yaml.ScalarNode:
			if reflect.PointerTo(t).Implements(textUnmarshalerType) && n.ShortTag() != "!!null" {
				u := reflect.New(t).Interface().(encoding.TextUnmarshaler)
				if err := u.UnmarshalText([]byte(n.Value)); err != nil {
					p.errf(path, "%v", err)
				}
			}
		case yaml.SequenceNode:
			if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
				for i, c := range n.Content {
					walk(c, t.Elem(), path+"["+strconv.Itoa(i)+"]")
				}
			}
		case yaml.MappingNode:
			if t.Kind() != reflect.Struct || t == reflect.TypeFor[yaml.Node]() {
				return
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i].Value
				for j := 0; j < t.NumField(); j++ {
					f := t.Field(j)
					name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
					if name == "" {
						name = strings.ToLower(f.Name)
					}
					if f.IsExported() && name == key {
						sub := key
						if path != "" {
							sub = path + "." + key
						}
						walk(n.Content[i+1], f.Type, sub)
					}
				}
			}
		}
	}
	walk(root, t, "")
	if len(p.errs) == 0 {
		return nil
	}
	return errors.Join(p.errs...)
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlErr turns the YAML library's errors into ours: one per problem, each with file, line and
// field path.
func (p *parser) yamlErr(err error) error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var out []error
	for _, m := range msgs {
		m = strings.TrimSpace(m)
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			line, _ := strconv.Atoi(sm[1])
			msg := strings.ReplaceAll(sm[2], "config.", "")
			field := p.byLine[line]
			if field != "" {
				p.bad = append(p.bad, field)
			}
			if field == "" {
				out = append(out, fmt.Errorf("%s:%d: %s", p.file, line, msg))
			} else {
				out = append(out, fmt.Errorf("%s:%d: %s: %s", p.file, line, field, msg))
			}
			continue
		}
		out = append(out, fmt.Errorf("%s: %s", p.file, m))
	}
	return errors.Join(out...)
}

// errf records a problem at a field path; the line is the field's, or its nearest parent's.
func (p *parser) errf(path, format string, args ...any) {
	for _, b := range p.bad {
		if related(b, path) {
			return // already reported as a decoding error
		}
	}
	line, at := 0, path
	for at != "" {
		if l, ok := p.lines[at]; ok {
			line = l
			break
		}
		at = parent(at)
	}
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		p.errs = append(p.errs, fmt.Errorf("%s:%d: %s: %s", p.file, line, path, msg))
	} else {
		p.errs = append(p.errs, fmt.Errorf("%s: %s: %s", p.file, path, msg))
	}
}

// related reports whether one field path is the other or inside it.
func related(a, b string) bool {
	inside := func(x, y string) bool {
		return x == y || strings.HasPrefix(x, y+".") || strings.HasPrefix(x, y+"[")
	}
	return inside(a, b) || inside(b, a)
}

func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func (p *parser) abs(path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(filepath.Dir(p.file), path)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (p *parser) validate(c *Config) {
	if c.Site == "" {
		p.errf("site", "required")
	}
	if c.Device == "" {
		p.errf("device", "required")
	}
	if c.Store.Path == "" {
		c.Store.Path = "var/perch.db"
	}
	c.Store.Path = p.abs(c.Store.Path)
	if c.Engine.CacheDir == "" {
		c.Engine.CacheDir = filepath.Join(filepath.Dir(c.Store.Path), "cache")
	}
	c.Engine.CacheDir = p.abs(c.Engine.CacheDir)
	if c.Store.ReadingsMaxRows < 0 {
		p.errf("store.readings_max_rows", "must not be negative")
	}
	if c.Store.MaxBytes < 0 {
		p.errf("store.max_bytes", "must not be negative")
	}
	p.uplink(c)
	p.api(c)
	p.update(c) // update.go

	p.devices(c.Devices)
	p.sources(c)
	p.models(c) // models.go

	mods := map[string]int{}
	for i := range c.Modules {
		m := &c.Modules[i]
		at := fmt.Sprintf("modules[%d]", i)
		if !nameRE.MatchString(m.Name) {
			p.errf(at+".name", "want a lowercase name of letters, digits, - and _, got %q", m.Name)
		} else if _, dup := mods[m.Name]; dup {
			p.errf(at+".name", "duplicate module %q", m.Name)
		}
		mods[m.Name] = i
		p.module(at, m)
	}
	for i := range c.Modules {
		m := &c.Modules[i]
		for j, in := range m.Inputs {
			if _, ok := mods[in]; !ok && c.Source(in) == nil && c.Model(in) == nil {
				p.errf(fmt.Sprintf("modules[%d].inputs[%d]", i, j), "unknown module %q", in)
			} else if in == m.Name {
				p.errf(fmt.Sprintf("modules[%d].inputs[%d]", i, j), "module %q reads its own output", in)
			}
		}
	}
	p.uplinkCommands(c, mods)
	p.modelGrants(c)
	if cyc, at := graphCycle(c); cyc != nil { // models.go: modules and models
		p.errf(at, "cycle: %s", strings.Join(cyc, " -> "))
	}
}

func (p *parser) module(at string, m *Module) {
	if m.MemoryPages == 0 {
		m.MemoryPages = DefaultMemoryPages
	} else if m.MemoryPages > 65536 {
		p.errf(at+".memory_pages", "at most 65536 (4 GiB), got %d", m.MemoryPages)
	}
	if m.Deadline == 0 {
		m.Deadline = Duration(DefaultDeadline)
	}
	if m.PollMax == 0 {
		m.PollMax = 1
	} else if m.PollMax < 0 {
		p.errf(at+".poll_max_records", "must be positive")
	}
	if m.Limits.EmitRecords <= 0 {
		m.Limits.EmitRecords = DefaultEmitRecords
	}
	if m.Limits.EmitBytes <= 0 {
		m.Limits.EmitBytes = DefaultEmitBytes
	}
	if m.Limits.LogBytes <= 0 {
		m.Limits.LogBytes = DefaultLogBytes
	}
	cfg, err := configJSON(&m.Config)
	if err != nil {
		p.errf(at+".config", "%v", err)
	}
	m.ConfigJSON = cfg

	if m.Wasm == "" {
		p.errf(at+".wasm", "required")
		return
	}
	m.Wasm = p.abs(m.Wasm)
	mf, err := LoadManifest(ManifestPath(m.Wasm))
	if err != nil {
		each(err, func(err error) { p.errf(at+".wasm", "%v", err) })
		return
	}
	m.Manifest = *mf
	switch mf.Kind {
	case KindDriver:
		if m.Poll <= 0 {
			p.errf(at+".poll", "a driver needs a poll interval such as \"1s\"")
		}
		if len(m.Inputs) > 0 {
			p.errf(at+".inputs", "a driver takes no inputs")
		}
	case KindFilter, KindRule, KindActuator:
		if len(m.Inputs) == 0 {
			article := "a"
			if mf.Kind == KindActuator {
				article = "an"
			}
			p.errf(at+".inputs", "%s %s needs at least one input", article, mf.Kind)
		}
		if m.Poll != 0 {
			p.errf(at+".poll", "only drivers are polled")
		}
	}
	for _, e := range CheckGrants(&m.Grants, &mf.Needs) {
		p.errf(at+".grants"+e.Field, "%s (manifest %s)", e.Msg, ManifestPath(m.Wasm))
	}
}

// each calls fn for each of the errors joined in err (by errors.Join), or for err alone; it does
// nothing for nil.
func each(err error, fn func(error)) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			each(e, fn)
		}
	} else if err != nil {
		fn(err)
	}
}

// configJSON converts a module's config node to JSON; an absent node becomes {}.
func configJSON(n *yaml.Node) ([]byte, error) {
	if n.Kind == 0 {
		return []byte("{}"), nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("want a mapping")
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// cycle returns the nodes of one cycle in the input graph, or nil: names[i] takes inputs[i],
// and idx maps a name to its index.
func cycle(names []string, inputs [][]string, idx map[string]int) []string {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(names))
	var stack []string
	var found []string
	var visit func(i int) bool
	visit = func(i int) bool {
		color[i] = grey
		stack = append(stack, names[i])
		ins := append([]string(nil), inputs[i]...)
		sort.Strings(ins)
		for _, in := range ins {
			j, ok := idx[in]
			if !ok || j == i {
				continue
			}
			switch color[j] {
			case grey:
				for k, name := range stack {
					if name == in {
						found = append(append([]string(nil), stack[k:]...), in)
					}
				}
				return true
			case white:
				if visit(j) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return false
	}
	for i := range names {
		if color[i] == white && visit(i) {
			return found
		}
	}
	return nil
}

// Downstream returns, for each module name, the names of the modules that take it as input, in
// config order.
func (c *Config) Downstream() map[string][]string {
	out := map[string][]string{}
	for _, m := range c.Modules {
		for _, in := range m.Inputs {
			out[in] = append(out[in], m.Name)
		}
	}
	return out
}
