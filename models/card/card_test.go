package card

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testCard() *Card {
	return &Card{Name: "pump", Version: "1", Precision: FP32, Detector: "pca-t2q",
		Features: []string{"a", "b"}, Window: 3,
		Normalization: Normalization{Mean: []float64{1, 10}, Std: []float64{2, 5}},
		Score:         Score{Smooth: 2, Threshold: 5, Clear: 3, Consecutive: 2},
		Training:      Training{Data: "sim", Rows: 400}}
}

func TestWriteLoad(t *testing.T) {
	dir := t.TempDir()
	path, err := Write(dir, testCard(), []byte("onnx bytes"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Inputs() != 6 || c.Model != "pump.onnx" {
		t.Fatalf("loaded %+v", c)
	}
	if err := os.WriteFile(filepath.Join(dir, "pump.onnx"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("tampered model: err = %v", err)
	}
}

func TestValidateNamesEveryField(t *testing.T) {
	c := testCard()
	c.Precision = "fp16"
	c.Window = 0
	c.Normalization.Std[1] = 0
	c.Score.Clear = 9
	c.Model, c.SHA256 = "../x.onnx", "zz"
	err := c.Validate()
	for _, want := range []string{"precision", "window", "normalization.std[1]", "score.clear", "model", "sha256"} {
		if err == nil || !strings.Contains(err.Error(), want+":") {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	if _, err := Parse([]byte("name: x\nbogus: 1\n")); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown field: err = %v", err)
	}
}

func TestFeeder(t *testing.T) {
	f := testCard().NewFeeder()
	row := make([]float32, 6)
	f.Push([]float64{3, 20}) // normalised (1, 2)
	if got := f.Row(row); got[0] != 0 || got[3] != 0 || got[4] != 1 || got[5] != 2 || f.Ready() {
		t.Fatalf("first row %v ready %v", got, f.Ready())
	}
	f.Push([]float64{5, 25}) // (2, 3)
	f.Push([]float64{-1, 0}) // (-1, -2)
	f.Push([]float64{1, 10}) // (0, 0)
	want := []float32{2, 3, -1, -2, 0, 0}
	got := f.Row(row)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("row %v, want %v", got, want)
		}
	}
	if !f.Ready() {
		t.Fatal("not ready after 4 samples")
	}
	if n := testing.AllocsPerRun(100, func() { f.Push([]float64{1, 2}[:]); f.Row(row) }); n > 1 {
		t.Errorf("%v allocs per sample", n)
	}
}

func TestAlarm(t *testing.T) {
	a := testCard().NewAlarm() // smooth 2, threshold 5, clear 3, consecutive 2
	steps := []struct {
		raw            float64
		smooth         float64
		active, change bool
	}{
		{4, 4, false, false},
		{8, 6, false, false}, // first above
		{6, 7, true, true},   // second above: raise
		{2, 4, true, false},  // between clear and threshold: stays
		{2, 2, false, true},  // below clear
		{10, 6, false, false},
	}
	for i, s := range steps {
		sm, act, ch := a.Step(s.raw)
		if sm != s.smooth || act != s.active || ch != s.change {
			t.Fatalf("step %d (%v): got %v %v %v, want %v %v %v", i, s.raw, sm, act, ch, s.smooth, s.active, s.change)
		}
	}
}
