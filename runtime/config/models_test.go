package config_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/runtime/config"
)

// modelManifests are the test modules that use models.
var modelManifests = map[string]string{
	"scorer": `name: scorer
version: 0.1.0
abi: 1
kind: filter
emits: [score]
needs: {models: true}
`,
}

// modelDir is testDir plus a model artifact: env.card.yaml (features a and b, window 2) and
// env.onnx beside it, a card whose model file was changed after it was written (tampered), and
// the model-using manifests.
func modelDir(t *testing.T) string {
	t.Helper()
	dir := testDir(t)
	for name, text := range modelManifests {
		if err := os.WriteFile(filepath.Join(dir, name+".manifest.yaml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"env", "tampered"} {
		m, err := onnx.ReconstructionScorer(4, make([]float32, 16), make([]float32, 4))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c := &card.Card{Name: name, Version: "1", Precision: card.FP32, Detector: "test",
			Features: []string{"a", "b"}, Window: 2,
			Normalization: card.Normalization{Mean: []float64{0, 0}, Std: []float64{1, 1}},
			Score:         card.Score{Smooth: 1, Threshold: 1, Clear: 0.5, Consecutive: 1},
			Training:      card.Training{Data: "none", Rows: 1}}
		if _, err := card.Write(dir, c, raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "tampered.onnx"), []byte("not the model"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestModels(t *testing.T) {
	dir := modelDir(t)
	cfg, err := parse(dir, `site: s
device: d
engine:
  onnxruntime: lib/libonnxruntime.so.1
sources:
  - name: sensors
    broker: tcp://127.0.0.1:1883
    topics: [a/#]
models:
  - name: env-ae
    card: env.card.yaml
    inputs: [sensors]
  - name: env-ae2
    card: /MODDIR/env.card.yaml
    inputs: [env-ae]
    series: environment
    fields: {b: b_mean}
    batch: 8
    intra_op_threads: 2
    severity: critical
    record: false
modules:
  - name: hot
    wasm: thr.wasm
    inputs: [env-ae2]
  - name: sc
    wasm: scorer.wasm
    inputs: [sensors]
    grants: {models: [env-ae, env-ae2]}
`)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "lib/libonnxruntime.so.1"); cfg.Engine.ONNXRuntime != want {
		t.Errorf("onnxruntime %q, want %q (relative to the config file)", cfg.Engine.ONNXRuntime, want)
	}
	m := cfg.Models[0]
	if m.Card != filepath.Join(dir, "env.card.yaml") || m.Batch != 64 || m.IntraOpThreads != 1 || m.Severity != "warning" ||
		!m.Recorded() || m.Loaded == nil || m.Loaded.Name != "env" || strings.Join(m.FieldNames, ",") != "a,b" {
		t.Errorf("defaults: %+v", m)
	}
	if m.ModelPath() != filepath.Join(dir, "env.onnx") {
		t.Errorf("ModelPath %q", m.ModelPath())
	}
	m = cfg.Models[1]
	if m.Batch != 8 || m.IntraOpThreads != 2 || m.Severity != "critical" || m.Recorded() || m.Series != "environment" ||
		strings.Join(m.FieldNames, ",") != "a,b_mean" {
		t.Errorf("explicit: %+v", m)
	}
	if cfg.Model("env-ae2") != &cfg.Models[1] || cfg.Model("hot") != nil {
		t.Error("Model: wrong lookup")
	}
	if g := cfg.Modules[1].Grants.Models; strings.Join(g, ",") != "env-ae,env-ae2" || !cfg.Modules[1].Manifest.Needs.Models {
		t.Errorf("grants %v, needs %+v", g, cfg.Modules[1].Manifest.Needs)
	}
}

// badModelConfigs are model configs that must be refused; testdata/models_errors.golden holds
// the exact errors (as errors.golden does for badConfigs).
var badModelConfigs = []struct{ name, text string }{
	{"model without card, bad name, bad numbers", `site: s
device: d
models:
  - name: Env
    batch: 5000
    intra_op_threads: -1
  - name: e2
    card: env.card.yaml
    batch: -1
`},
	{"missing card and tampered model", `site: s
device: d
models:
  - name: a
    card: nothing.card.yaml
  - name: b
    card: tampered.card.yaml
`},
	{"unknown feature and clashing fields", `site: s
device: d
models:
  - name: a
    card: env.card.yaml
    fields: {c: x, a: b}
`},
	{"names taken and unknown inputs", `site: s
device: d
models:
  - name: hot
    card: env.card.yaml
    inputs: [nope, hot]
  - name: e
    card: env.card.yaml
  - name: e
    card: env.card.yaml
modules:
  - name: hot
    wasm: thr.wasm
    inputs: [e, ghost]
`},
	{"cycle through a model", `site: s
device: d
models:
  - name: m
    card: env.card.yaml
    inputs: [r]
modules:
  - name: r
    wasm: thr.wasm
    inputs: [m]
`},
	{"model grants", `site: s
device: d
models:
  - name: m
    card: env.card.yaml
modules:
  - name: a
    wasm: scorer.wasm
    inputs: [m]
  - name: b
    wasm: scorer.wasm
    inputs: [m]
    grants: {models: [m, m, nope]}
  - name: c
    wasm: win.wasm
    inputs: [m]
    grants: {models: [m]}
`},
	{"unknown key in a model", `site: s
device: d
models:
  - name: m
    card: env.card.yaml
    window: 3
`},
	{"onnxruntime not a string", `site: s
device: d
engine:
  onnxruntime: [a]
`},
}

func TestModelParseErrors(t *testing.T) {
	dir := modelDir(t)
	file := filepath.Join(dir, "perch.yaml")
	var out bytes.Buffer
	for _, tc := range badModelConfigs {
		cfg, err := parse(dir, tc.text)
		if err == nil {
			t.Errorf("%s: no error, config %+v", tc.name, cfg)
			continue
		}
		for _, e := range flatten(err) {
			if !strings.HasPrefix(e.Error(), file+":") {
				t.Errorf("%s: error does not start with the file name: %q", tc.name, e)
			}
		}
		out.WriteString("=== " + tc.name + "\n")
		out.WriteString(strings.ReplaceAll(err.Error(), dir, "$DIR") + "\n\n")
	}
	golden(t, "models_errors.golden", out.Bytes())
}

// TestModelFieldsDefault checks that a card's features are read from fields of their own names
// unless mapped, and that a model with no inputs is allowed (it scores for modules only).
func TestModelFieldsDefault(t *testing.T) {
	dir := modelDir(t)
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte("site: s\ndevice: d\nmodels:\n  - {name: m, card: env.card.yaml, fields: {a: temperature_c}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Models[0].FieldNames, ","); got != "temperature_c,b" {
		t.Errorf("field names %s", got)
	}
}
