package config_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/config"
)

// FuzzParse checks that no input makes Parse panic, that every problem it reports names the
// file, and that what it accepts is complete: defaults filled and paths absolute.
func FuzzParse(f *testing.F) {
	dir := testDir(f)
	for _, text := range goodConfigs {
		f.Add(strings.ReplaceAll(text, "/MODDIR/", dir+"/"))
	}
	for _, tc := range badConfigs {
		f.Add(tc.text)
	}
	file := filepath.Join(dir, "perch.yaml")
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := config.Parse(file, []byte(text))
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
		if cfg.Site == "" || cfg.Device == "" || cfg.File != file {
			t.Errorf("Site, Device, File = %q, %q, %q", cfg.Site, cfg.Device, cfg.File)
		}
		if !filepath.IsAbs(cfg.Store.Path) || !filepath.IsAbs(cfg.Engine.CacheDir) {
			t.Errorf("Store.Path, Engine.CacheDir = %q, %q", cfg.Store.Path, cfg.Engine.CacheDir)
		}
		names := map[string]bool{}
		for _, m := range cfg.Modules {
			if names[m.Name] {
				t.Errorf("duplicate module %q accepted", m.Name)
			}
			names[m.Name] = true
			if !filepath.IsAbs(m.Wasm) || m.MemoryPages == 0 || m.Deadline <= 0 || m.PollMax <= 0 ||
				m.Limits.EmitRecords <= 0 || m.Limits.EmitBytes <= 0 || m.Limits.LogBytes <= 0 || len(m.ConfigJSON) == 0 {
				t.Errorf("module %q not complete: %+v", m.Name, m)
			}
			if m.Manifest.ABI != 1 {
				t.Errorf("module %q: manifest ABI %d accepted", m.Name, m.Manifest.ABI)
			}
			if ge := config.CheckGrants(&m.Grants, &m.Manifest.Needs); len(ge) > 0 {
				t.Errorf("module %q: grants accepted with %v", m.Name, ge)
			}
		}
		for _, m := range cfg.Modules {
			for _, in := range m.Inputs {
				if !names[in] || in == m.Name {
					t.Errorf("module %q: input %q accepted", m.Name, in)
				}
			}
		}
		_ = cfg.Downstream()
	})
}

// FuzzParseManifest checks that no input makes ParseManifest panic, that every problem names
// the file, and that what it accepts is valid.
func FuzzParseManifest(f *testing.F) {
	for _, text := range manifests {
		f.Add(text)
	}
	f.Add("")
	f.Add("name: a\nversion: 1\nabi: 1\nkind: filter\nneeds: {i2c: [{bus: 1, address: 0x76}], spi: [{cs: 0}], uart: [{}], state: true}\n")
	const file = "/m/x.manifest.yaml"
	f.Fuzz(func(t *testing.T, text string) {
		m, err := config.ParseManifest(file, []byte(text))
		if err != nil {
			if m != nil {
				t.Error("a manifest with an error")
			}
			for _, e := range flatten(err) {
				if !strings.HasPrefix(e.Error(), file+":") {
					t.Errorf("error does not name the file: %q", e)
				}
			}
			return
		}
		if m.ABI != 1 || m.Version == "" || m.Name == "" {
			t.Errorf("invalid manifest accepted: %+v", m)
		}
		switch m.Kind {
		case config.KindDriver, config.KindFilter, config.KindRule:
		default:
			t.Errorf("kind %q accepted", m.Kind)
		}
		for _, n := range m.Needs.I2C {
			if n.Address < 0x03 || n.Address > 0x77 {
				t.Errorf("address %#x accepted", n.Address)
			}
		}
		for _, n := range m.Needs.GPIO {
			if n.Mode != "in" && n.Mode != "out" {
				t.Errorf("gpio mode %q accepted", n.Mode)
			}
		}
		// Whatever it needs can be granted.
		var g config.Grants
		for _, n := range m.Needs.I2C {
			g.I2C = append(g.I2C, config.I2CGrant{Bus: deref(n.Bus), Address: n.Address})
		}
		for _, n := range m.Needs.SPI {
			g.SPI = append(g.SPI, config.SPIGrant{Bus: deref(n.Bus), CS: deref(n.CS)})
		}
		for _, n := range m.Needs.GPIO {
			g.GPIO = append(g.GPIO, config.GPIOGrant{Line: deref(n.Line), Mode: n.Mode})
		}
		for _, n := range m.Needs.UART {
			g.UART = append(g.UART, config.UARTGrant{Port: n.Port})
		}
		g.State = m.Needs.State
		if ge := config.CheckGrants(&g, &m.Needs); len(ge) > 0 {
			t.Errorf("granting exactly the needs: %v", ge)
		}
	})
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}
