package anomaly

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// skabDir is the SKAB data folder, from $PERCH_DATASETS or /work/shared/datasets; the test is
// skipped when it is absent. SKAB is GPL-3.0: it is read in place, never copied.
func skabDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv("PERCH_DATASETS")
	if root == "" {
		root = "/work/shared/datasets"
	}
	dir := filepath.Join(root, "skab", "data")
	if _, err := os.Stat(filepath.Join(dir, "valve1")); err != nil {
		t.Skipf("SKAB data not found under %s (set PERCH_DATASETS)", root)
	}
	return dir
}

func TestEvaluateSKABEmpty(t *testing.T) {
	if _, err := EvaluateSKAB(t.TempDir(), DefaultOptions(), "fp32", nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty dir: err = %v", err)
	}
}

func TestCounts(t *testing.T) {
	var c Counts
	for _, p := range [][2]bool{{true, true}, {true, true}, {true, false}, {false, true}, {false, false}, {false, false}, {false, false}} {
		c.Add(p[0], p[1])
	}
	// TP 2, FP 1, FN 1, TN 3: F1 = 2/(2+1) , FAR 1/4, MAR 1/3.
	if c != (Counts{TP: 2, FP: 1, TN: 3, FN: 1}) || math.Abs(c.F1()-2.0/3) > 1e-12 || c.FAR() != 0.25 || math.Abs(c.MAR()-1.0/3) > 1e-12 {
		t.Errorf("counts %+v: F1 %v FAR %v MAR %v", c, c.F1(), c.FAR(), c.MAR())
	}
}
