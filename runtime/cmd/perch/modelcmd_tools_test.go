package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/perch-edge/perch/models/anomaly"
	"github.com/perch-edge/perch/models/card"
)

// fp32Card trains the default recipe on synthetic 8-feature data (SKAB's shape) and writes its
// fp32 model and card, with an evaluation entry, into a new folder. It returns the card's path
// and the detector.
func fp32Card(t *testing.T) (string, *anomaly.Detector) {
	t.Helper()
	r := rand.New(rand.NewPCG(5, 5))
	rows := make([][]float64, 500)
	var a, b float64
	for i := range rows {
		a = 0.9*a + r.NormFloat64()
		b = 0.5*b + r.NormFloat64()
		rows[i] = make([]float64, 8)
		for j := range rows[i] {
			rows[i][j] = float64(10*j) + float64(j%3)*a - float64(j%2)*b + 0.1*r.NormFloat64()
		}
	}
	feats := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	d, err := anomaly.Fit(rows, feats, anomaly.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	c := d.Card("pump", card.FP32)
	c.Evaluation = []card.Evaluation{{Protocol: "skab", Data: "synthetic", Metrics: map[string]float64{"f1": 0.8}}}
	model, err := d.ONNX(card.FP32)
	if err != nil {
		t.Fatal(err)
	}
	path, err := card.Write(t.TempDir(), c, model)
	if err != nil {
		t.Fatal(err)
	}
	return path, d
}

func TestModelQuantize(t *testing.T) {
	path, d := fp32Card(t)
	out := filepath.Join(t.TempDir(), "int8")
	var stdout, stderr bytes.Buffer
	if err := cmdModelQuantize([]string{path, "--out", out}, &stdout, &stderr); err != nil {
		t.Fatalf("%v (stderr %s)", err, stderr.String())
	}
	t.Log(stdout.String())
	qpath := filepath.Join(out, "pump-int8"+card.Suffix)
	if !strings.Contains(stdout.String(), qpath) || !strings.Contains(stdout.String(), "1 evaluation entries of the fp32 model dropped") {
		t.Errorf("stdout = %q", stdout.String())
	}
	qc, err := card.Load(qpath)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := card.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if qc.Name != "pump-int8" || qc.Precision != card.Int8 || qc.Model != "pump-int8.onnx" || qc.Evaluation != nil {
		t.Errorf("int8 card = %+v", qc)
	}
	if !reflect.DeepEqual(qc.Features, fc.Features) || qc.Window != fc.Window || !reflect.DeepEqual(qc.Normalization, fc.Normalization) ||
		!reflect.DeepEqual(qc.Score, fc.Score) || !reflect.DeepEqual(qc.Training, fc.Training) || qc.Detector != fc.Detector {
		t.Errorf("int8 card changed more than name, precision and evaluation:\n%+v\n%+v", qc, fc)
	}
	got, err := os.ReadFile(filepath.Join(out, qc.Model))
	if err != nil {
		t.Fatal(err)
	}
	want, err := d.ONNX(card.Int8)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("quantised model (%d bytes) is not the int8 model models/anomaly exports (%d bytes)", len(got), len(want))
	}

	// Default --out: beside the card.
	stdout.Reset()
	if err := cmdModelQuantize([]string{path}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if _, err := card.Load(filepath.Join(filepath.Dir(path), "pump-int8"+card.Suffix)); err != nil {
		t.Error(err)
	}
}

func TestModelQuantizeErrors(t *testing.T) {
	path, _ := fp32Card(t)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := cmdModelQuantize([]string{path, "--out", out}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	int8Card := filepath.Join(out, "pump-int8"+card.Suffix)
	tampered, _ := fp32Card(t)
	model := filepath.Join(filepath.Dir(tampered), "pump.onnx")
	b, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(model, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"no card", nil, []string{"give one CARD.card.yaml"}},
		{"two cards", []string{path, path}, []string{"give one CARD.card.yaml"}},
		{"missing", []string{filepath.Join(out, "nope.card.yaml")}, []string{"nope.card.yaml"}},
		{"int8", []string{int8Card}, []string{int8Card, "precision is int8"}},
		{"digest", []string{tampered}, []string{tampered, "sha256"}},
	} {
		err := cmdModelQuantize(c.args, &stdout, &stderr)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: err = %v, want it to contain %q", c.name, err, w)
			}
		}
	}
}

func TestModelInspect(t *testing.T) {
	path, d := fp32Card(t)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := cmdModelQuantize([]string{"--out", out, path}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	qpath := filepath.Join(out, "pump-int8"+card.Suffix)

	stdout.Reset()
	if err := cmdModelInspect([]string{qpath}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	text := stdout.String()
	t.Log(text)
	n := d.Inputs()
	for _, want := range []string{
		"card " + qpath, "precision int8", "features (8) × window 10 = 80 inputs per row", "score: smooth 20",
		fmt.Sprintf("threshold %.6g", d.Threshold), "training: ", "evaluation: none",
		"opset 17", "input  x FLOAT [N, 80]", "output score FLOAT [N]", "nodes (6):",
		"DequantizeLinear   Wq, Ws, Wz → Wd  (axis=1)", "MatMul             d, Wd → p",
		fmt.Sprintf("Wq           INT8   [%d, %d] %d bytes", n, n, n*n),
		fmt.Sprintf("initializers (5, %d bytes of data)", n*n+n+4*n+4*n+8),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("inspect output lacks %q", want)
		}
	}

	// --json, after the file, on the fp32 card.
	stdout.Reset()
	if err := cmdModelInspect([]string{path, "--json"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var ins inspection
	if err := json.Unmarshal(stdout.Bytes(), &ins); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if ins.CardPath != path || ins.Card["precision"] != "fp32" || len(ins.Card["features"].([]any)) != 8 || len(ins.Card["evaluation"].([]any)) != 1 {
		t.Errorf("card = %v", ins.Card)
	}
	m := ins.Model
	if m.Opset != 17 || len(m.Nodes) != 5 || m.Nodes[1].Op != "MatMul" || m.Inputs[0].Shape[1] != "80" ||
		m.Initializers[2].Name != "W" || m.Initializers[2].Bytes != 4*n*n || m.InitializerBytes != 4*n*n+4*n+8 || len(ins.Warnings) != 0 {
		t.Errorf("model = %+v", m)
	}

	// A bare .onnx file.
	stdout.Reset()
	onnxPath := filepath.Join(out, "pump-int8.onnx")
	if err := cmdModelInspect([]string{onnxPath}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if s := stdout.String(); strings.Contains(s, "card ") || !strings.Contains(s, "model "+onnxPath) {
		t.Errorf("inspect of the .onnx: %s", s)
	}

	// Errors name the file.
	bad := filepath.Join(out, "bad.onnx")
	if err := os.WriteFile(bad, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{bad}, {filepath.Join(out, "missing.onnx")}, {filepath.Join(out, "missing.card.yaml")}} {
		err := cmdModelInspect(args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("inspect %s: err = %v, want it to name the file", args[0], err)
		}
	}
}
