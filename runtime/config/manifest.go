package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Module kinds a manifest can declare.
const (
	KindDriver = "driver" // polled; reads devices and emits readings
	KindFilter = "filter" // takes records in, emits records
	KindRule   = "rule"   // takes records in, emits alerts
	// KindActuator takes records in (alerts, commands) like a rule and drives output devices
	// (GPIO lines granted with mode out, and what else its manifest declares); it emits events
	// saying what it did.
	KindActuator = "actuator"
)

// Manifest is what a module declares about itself: what it is, what it emits and what it needs.
// It is plain data; anything it does not declare cannot be granted.
type Manifest struct {
	Name        string   `yaml:"name"`
	Version     string   `yaml:"version"`
	ABI         int      `yaml:"abi"`   // 1
	Kind        string   `yaml:"kind"`  // driver, filter, rule or actuator
	Emits       []string `yaml:"emits"` // record kinds: reading, summary, score, alert, event
	Description string   `yaml:"description"`
	Needs       Needs    `yaml:"needs"`
}

// Needs declares the devices and capabilities a module may be granted.
type Needs struct {
	I2C   []I2CNeed  `yaml:"i2c"`
	SPI   []SPINeed  `yaml:"spi"`
	GPIO  []GPIONeed `yaml:"gpio"`
	UART  []UARTNeed `yaml:"uart"`
	State bool       `yaml:"state"`
	// Models: the module scores rows with models granted to it (perch:infer/v1).
	Models bool `yaml:"models"`
}

// I2CNeed is an I2C device the module can drive: an address, on a given bus or any bus.
type I2CNeed struct {
	Bus     *int `yaml:"bus"` // nil: any bus
	Address int  `yaml:"address"`
}

// SPINeed is an SPI device: a bus and chip select, each optional.
type SPINeed struct {
	Bus *int `yaml:"bus"`
	CS  *int `yaml:"cs"`
}

// GPIONeed is a GPIO line of a given direction; a nil Line means any line.
type GPIONeed struct {
	Line *int   `yaml:"line"`
	Mode string `yaml:"mode"` // "in" or "out"
}

// UARTNeed is a serial port; an empty Port means any port.
type UARTNeed struct {
	Port string `yaml:"port"`
}

// ManifestPath returns the path of the manifest that belongs to a module binary: the file beside
// it with .wasm replaced by .manifest.yaml.
func ManifestPath(wasm string) string {
	return strings.TrimSuffix(wasm, filepath.Ext(wasm)) + ".manifest.yaml"
}

// LoadManifest reads and validates a manifest file strictly.
func LoadManifest(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return ParseManifest(path, data)
}

// ParseManifest decodes and validates a manifest; file names it in errors.
func ParseManifest(file string, data []byte) (*Manifest, error) {
	p := &parser{file: file, lines: map[string]int{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, p.yamlErr(err)
	}
	p.index(&root, "")
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty document
		return nil, p.yamlErr(err)
	}
	if !nameRE.MatchString(m.Name) {
		p.errf("name", "want a lowercase name, got %q", m.Name)
	}
	if m.Version == "" {
		p.errf("version", "required")
	}
	if m.ABI != 1 {
		p.errf("abi", "this runtime speaks ABI 1, the module wants %d", m.ABI)
	}
	switch m.Kind {
	case KindDriver, KindFilter, KindRule, KindActuator:
	default:
		p.errf("kind", "want driver, filter, rule or actuator, got %q", m.Kind)
	}
	for i, k := range m.Emits {
		switch k {
		case "reading", "summary", "score", "alert", "event":
		default:
			p.errf(fmt.Sprintf("emits[%d]", i), "unknown record kind %q", k)
		}
	}
	for i, n := range m.Needs.I2C {
		if n.Address < 0x03 || n.Address > 0x77 {
			p.errf(fmt.Sprintf("needs.i2c[%d].address", i), "7-bit I2C address out of range: %#x", n.Address)
		}
	}
	for i, n := range m.Needs.GPIO {
		if n.Mode != "in" && n.Mode != "out" {
			p.errf(fmt.Sprintf("needs.gpio[%d].mode", i), "want in or out, got %q", n.Mode)
		}
	}
	if m.Kind == KindActuator && !slices.Contains(m.Emits, "event") {
		p.errf("emits", "an actuator emits events saying what it did: list event")
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return &m, nil
}

// GrantError is one mismatch between a module's grants and its manifest's needs. Field is the
// path under "grants" (such as ".i2c[0]").
type GrantError struct {
	Field, Msg string
}

// CheckGrants compares grants against needs: every grant must be declared by a need, a module
// that needs devices must be granted at least one, and state must be granted if it is needed.
// It returns every mismatch.
func CheckGrants(g *Grants, n *Needs) []GrantError {
	var errs []GrantError
	add := func(field, format string, args ...any) {
		errs = append(errs, GrantError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for i, gr := range g.I2C {
		ok := false
		for _, nd := range n.I2C {
			ok = ok || (nd.Address == gr.Address && (nd.Bus == nil || *nd.Bus == gr.Bus))
		}
		if !ok {
			add(fmt.Sprintf(".i2c[%d]", i), "bus %d address %#x is not declared in the module's needs", gr.Bus, gr.Address)
		}
	}
	for i, gr := range g.SPI {
		ok := false
		for _, nd := range n.SPI {
			ok = ok || ((nd.Bus == nil || *nd.Bus == gr.Bus) && (nd.CS == nil || *nd.CS == gr.CS))
		}
		if !ok {
			add(fmt.Sprintf(".spi[%d]", i), "bus %d chip select %d is not declared in the module's needs", gr.Bus, gr.CS)
		}
	}
	for i, gr := range g.GPIO {
		if gr.Mode != "in" && gr.Mode != "out" {
			add(fmt.Sprintf(".gpio[%d].mode", i), "want in or out, got %q", gr.Mode)
			continue
		}
		ok := false
		for _, nd := range n.GPIO {
			ok = ok || ((nd.Line == nil || *nd.Line == gr.Line) && nd.Mode == gr.Mode)
		}
		if !ok {
			add(fmt.Sprintf(".gpio[%d]", i), "line %d (%s) is not declared in the module's needs", gr.Line, gr.Mode)
		}
	}
	for i, gr := range g.UART {
		ok := false
		for _, nd := range n.UART {
			ok = ok || nd.Port == "" || nd.Port == gr.Port
		}
		if !ok {
			add(fmt.Sprintf(".uart[%d]", i), "port %q is not declared in the module's needs", gr.Port)
		}
	}
	if g.State && !n.State {
		add(".state", "state is not declared in the module's needs")
	}
	// Needs list the devices a module can use, sometimes alternatives (an accelerometer on SPI
	// or on I2C): a module that needs devices must be granted at least one.
	needsDevice := len(n.I2C)+len(n.SPI)+len(n.GPIO)+len(n.UART) > 0
	if needsDevice && len(g.I2C)+len(g.SPI)+len(g.GPIO)+len(g.UART) == 0 {
		add("", "the module needs a device (%s) and none is granted", needKinds(n))
	}
	if n.State && !g.State {
		add(".state", "the module needs state and it is not granted")
	}
	if len(g.Models) > 0 && !n.Models {
		add(".models", "models are not declared in the module's needs")
	}
	if n.Models && len(g.Models) == 0 {
		add(".models", "the module needs a model and none is granted")
	}
	seen := map[string]bool{}
	for i, name := range g.Models {
		if seen[name] {
			add(fmt.Sprintf(".models[%d]", i), "model %q is granted twice", name)
		}
		seen[name] = true
	}
	return errs
}

// needKinds names the kinds of device a manifest declares, such as "i2c or spi".
func needKinds(n *Needs) string {
	var kinds []string
	for _, k := range []struct {
		name string
		n    int
	}{{"i2c", len(n.I2C)}, {"spi", len(n.SPI)}, {"gpio", len(n.GPIO)}, {"uart", len(n.UART)}} {
		if k.n > 0 {
			kinds = append(kinds, k.name)
		}
	}
	return strings.Join(kinds, " or ")
}
