package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/registry/artifact"
	perchupdate "github.com/perch-edge/perch/runtime/update"
)

// perch push model signs NAME.onnx and NAME.card.yaml as one model artifact; perch promote
// --model takes only model targets, and the deployment it signs names the model.
func TestIntegrationPromoteModel(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry and TUF keys")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	op := startOperatorRegistry(t)
	dir := t.TempDir()
	m, err := onnx.ReconstructionScorer(2, make([]float32, 4), make([]float32, 2))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c := &card.Card{Name: "env-ae", Version: "2", Precision: card.FP32, Detector: "test", Features: []string{"a", "b"}, Window: 1,
		Normalization: card.Normalization{Mean: []float64{0, 0}, Std: []float64{1, 1}},
		Score:         card.Score{Smooth: 1, Threshold: 1, Clear: 1, Consecutive: 1}}
	cardPath, err := card.Write(dir, c, raw)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := call(ctx, append([]string{"push", "model", c.ModelPath(cardPath), cardPath, "--target", "models/env", "--version", "2"}, op.flags()...)...)
	if err != nil || !strings.Contains(stdout, "models/env: model 2 release 1 signed and published") {
		t.Fatalf("push model: %v\n%s\n%s", err, stdout, stderr)
	}
	img := filepath.Join(dir, "fw.img")
	if err := os.WriteFile(img, []byte("firmware image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := call(ctx, append([]string{"push", "firmware", img, "--target", "firmware/pi4", "--version", "7", "--hardware", "pi4"}, op.flags()...)...); err != nil {
		t.Fatalf("push firmware: %v\n%s", err, stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", "env-ae"}, "want MODEL=TARGET"},
		{[]string{"--model", "env-ae=firmware/pi4"}, "--model env-ae=firmware/pi4: the target is a firmware, not a model"},
		{[]string{"--model", "env-ae=models/nothere"}, "push it first"},
		{[]string{"--model", "env-ae=Bad Target"}, "models[0].target"},
		{[]string{"--model", "env-ae=models/env", "--model", "env-ae=models/env"}, `models[1].model: "env-ae" listed twice`},
	} {
		args := append([]string{"promote", "--deployment", "pumps-1", "--group", "pumps", "--stage", "100"}, tc.args...)
		if _, _, err := call(ctx, append(args, op.flags()...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("promote %q: %v, want %q", tc.args, err, tc.want)
		}
	}
	stdout, stderr, err = call(ctx, append([]string{"promote", "--deployment", "pumps-1", "--group", "pumps", "--stage", "100",
		"--model", "env-ae=models/env"}, op.flags()...)...)
	if err != nil || !strings.Contains(stdout, "signed as release 1") {
		t.Fatalf("promote: %v\n%s\n%s", err, stdout, stderr)
	}
	// The signed deployment names the model, as the agent will read it.
	cl := &artifact.Client{PlainHTTP: true}
	host := strings.TrimPrefix(op.url, "http://")
	got, err := cl.Pull(ctx, host+"/deployments/pumps:r1", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(got.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	d, err := perchupdate.ParseDeployment(data)
	if err != nil || len(d.Models) != 1 || d.Models[0] != (perchupdate.DeploymentModel{Model: "env-ae", Target: "models/env"}) || len(d.Modules) != 0 {
		t.Errorf("deployment %+v, %v:\n%s", d, err, data)
	}
}
