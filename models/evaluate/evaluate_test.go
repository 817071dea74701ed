package evaluate_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/anomaly"
	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/evaluate"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/models/scoring"
	"github.com/perch-edge/perch/sdk/perchtest"
)

func env(t *testing.T) evaluate.Env {
	t.Helper()
	perchtest.Built(t, "replay")
	if err := ort.Init(""); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ONNX Runtime: %v", err)
		}
		t.Skipf("ONNX Runtime: %v (run make ort)", err)
	}
	wasm, err := filepath.Abs(filepath.Join("..", "..", "build", "modules", "replay.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return evaluate.Env{ReplayWasm: wasm, Work: t.TempDir()}
}

func datasets(t *testing.T, sub string) string {
	t.Helper()
	dir := filepath.Join(scoring.DatasetsDir(filepath.Join("..", "..", "..", "shared", "datasets")), sub)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no datasets at %s: %v", dir, err)
	}
	return dir
}

// TestSKABThroughRuntime runs the SKAB protocol through the runtime path, fp32 and int8, and
// holds it to the acceptance (F1 ≥ 0.75 with FAR ≤ 20 %, |ΔF1| ≤ 0.02 for int8).
func TestSKABThroughRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("plays 23 files through the runtime")
	}
	e := env(t)
	dir := datasets(t, "skab/data")
	f1 := map[string]float64{}
	for _, prec := range []string{card.FP32, card.Int8} {
		t0 := time.Now()
		r, err := evaluate.SKAB(context.Background(), dir, anomaly.DefaultOptions(), prec, e)
		if err != nil {
			t.Fatal(err)
		}
		s := r.Summary()
		t.Logf("%s: %d files, F1 %.3f FAR %.2f%% MAR %.2f%% NAB %.2f/%.2f/%.2f, model %d B, %v",
			prec, s.Files, s.F1, s.FAR, s.MAR, s.NABStandard, s.NABLowFP, s.NABLowFN, s.ModelBytes, time.Since(t0).Round(time.Millisecond))
		if s.Files != 23 || s.F1 < 0.75 || s.FAR > 20 {
			t.Errorf("%s: %+v", prec, s)
		}
		f1[prec] = s.F1
	}
	if d := f1[card.FP32] - f1[card.Int8]; d > 0.02 || d < -0.02 {
		t.Errorf("|ΔF1| = %v", d)
	}
}

// TestNABThroughRuntime runs the NAB protocol through the runtime path.
func TestNABThroughRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("plays 55 files through the runtime")
	}
	e := env(t)
	dir := datasets(t, "nab")
	t0 := time.Now()
	r, err := evaluate.NAB(context.Background(), dir, anomaly.DefaultNABOptions(), e)
	if err != nil {
		t.Fatal(err)
	}
	s := r.Summary()
	t.Logf("NAB: %d files, standard %.2f low-FP %.2f low-FN %.2f at threshold %.6f, %v", s.Files, s.NABStandard, s.NABLowFP, s.NABLowFN, s.Threshold, time.Since(t0).Round(time.Millisecond))
	// Windowed Gaussian scores 40.36 on these files: the recipe must beat it.
	if s.Files != 55 || !(s.NABStandard > 40.36) {
		t.Errorf("%+v", s)
	}
}
