// Package modules_test checks that every first-party module folder follows the house layout:
// README.md, manifest.yaml, sample.yaml, tests and testdata where it has golden files, and a
// sample config that decodes and validates against the module built by make modules.
package modules_test

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/perch-edge/perch/runtime/config"
)

func TestModuleFolders(t *testing.T) {
	dirs, err := filepath.Glob("*/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 4 {
		t.Fatalf("found %d module folders, want at least 4", len(dirs))
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		t.Run(dir, func(t *testing.T) {
			for _, f := range []string{"README.md", "manifest.yaml", "sample.yaml"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("missing %s", f)
				}
			}
			tests, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
			if len(tests) == 0 {
				t.Errorf("no tests")
			}
			mf, err := config.LoadManifest(filepath.Join(dir, "manifest.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if mf.Name != filepath.Base(dir) {
				t.Errorf("manifest name %q, want the folder's name %q", mf.Name, filepath.Base(dir))
			}
			// The sample is a snippet of a pipeline config: complete it and validate it as if it
			// stood at the repository root, where its wasm paths point.
			sample, err := os.ReadFile(filepath.Join(dir, "sample.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var snippet struct {
				Modules []map[string]any `yaml:"modules"`
			}
			if err := yaml.Unmarshal(sample, &snippet); err != nil {
				t.Fatalf("sample.yaml: %v", err)
			}
			// Filters and rules read from a driver named env: give them one.
			mods := append([]map[string]any{{
				"name": "env", "wasm": "build/modules/bme280.wasm", "poll": "1s",
				"grants": map[string]any{"i2c": []any{map[string]any{"bus": 1, "address": 0x76}}},
			}}, snippet.Modules...)
			if mf.Kind == config.KindDriver {
				mods = snippet.Modules
			}
			doc, err := yaml.Marshal(map[string]any{"site": "test", "device": "test", "modules": mods})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := config.Parse(filepath.Join(root, "sample.yaml"), doc); err != nil {
				t.Errorf("sample.yaml does not validate:\n%v", err)
			}
		})
	}
}
