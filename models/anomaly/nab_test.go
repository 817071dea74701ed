package anomaly

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/models/scoring"
)

// windowedGaussianDev55 is the published Windowed Gaussian detector's standard score re-normalised
// over the 55 dev files (nab/baselines_by_subset.csv): the floor the recipe must stay above.
const windowedGaussianDev55 = 40.36

// TestNABEvaluate runs the default recipe on the NAB dev files and logs the normalised scores of
// the three profiles; it checks the outputs are valid anomaly scores and the standard score
// beats the Windowed Gaussian baseline on the same files.
func TestNABEvaluate(t *testing.T) {
	dir := nabDir(t)
	start := time.Now()
	e, err := EvaluateNAB(dir, DefaultNABOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NAB dev (%d files, %d windows), default recipe %+v, %s:", len(e.Files), e.Results[0].Windows,
		DefaultNABOptions().Post, time.Since(start).Round(time.Millisecond))
	for _, r := range e.Results {
		t.Logf("  %-20s normalised %6.2f  threshold %.6f  raw %8.3f  TP %d FP %d FN %d rows", r.Profile.Name,
			r.Normalized, r.Threshold, r.Score, r.TP, r.FP, r.FN)
	}
	if len(e.Files) != 55 {
		t.Logf("note: %d files, the dev split has 55", len(e.Files))
	}
	for _, f := range e.Files {
		for i, v := range f.Scores {
			if !(v >= 0 && v <= 1) {
				t.Fatalf("%s row %d: score %v outside [0, 1]", f.Name, i, v)
			}
		}
	}
	if got := e.Normalized(scoring.NABStandard.Name); !(got > windowedGaussianDev55) {
		t.Errorf("standard score %.2f, want above Windowed Gaussian's %.2f on these files", got, windowedGaussianDev55)
	}
	for _, r := range e.Results[1:] {
		if !(r.Normalized > 0) {
			t.Errorf("%s score %.2f, want above the null detector's 0", r.Profile.Name, r.Normalized)
		}
	}
}

// TestNABONNXMatchesGo scores one NAB file's rows through the exported ONNX model in ONNX
// Runtime (fp32 and int8) and checks the raw scores against the Go reference.
func TestNABONNXMatchesGo(t *testing.T) {
	series, err := ReadNABDir(nabDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := ort.Init(""); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ONNX Runtime library required under CI: %v", err)
		}
		t.Skipf("ONNX Runtime library not available (run `make ort`): %v", err)
	}
	var s NABSeries
	for _, x := range series {
		if x.Name == "realKnownCause/ambient_temperature_system_failure.csv" {
			s = x
		}
	}
	if s.Name == "" {
		t.Skip("ambient_temperature_system_failure.csv not in the dev files")
	}
	for _, w := range []int{DefaultNABOptions().Model.Window, 8} {
		o := DefaultNABOptions()
		o.Model.Window = w
		nabCheckONNX(t, s, o)
	}
}

// nabCheckONNX compares the raw scores of s through ONNX Runtime with the Go reference.
func nabCheckONNX(t *testing.T, s NABSeries, o NABOptions) {
	t.Helper()
	want, err := RawScoresNAB(s, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, prec := range []string{card.FP32, card.Int8} {
		o.Precision, o.Run = prec, nabORTRunner
		got, err := RawScoresNAB(s, o)
		if err != nil {
			t.Fatal(err)
		}
		var worst float64
		for i := range want {
			worst = max(worst, math.Abs(got[i]-want[i])/max(1, math.Abs(want[i])))
		}
		tol := 1e-4
		if prec == card.Int8 {
			tol = 0.1
		}
		t.Logf("window %d, %s: largest relative difference from Go %.3g over %d rows", o.Model.Window, prec, worst, len(want))
		if worst > tol {
			t.Errorf("%s: ONNX scores differ from Go by %.3g (relative), want ≤ %g", prec, worst, tol)
		}
	}
}

// nabORTRunner scores with the detector's ONNX model in ONNX Runtime, one row per call.
func nabORTRunner(d *Detector, precision string) (ScoreFunc, func(), error) {
	model, err := d.ONNX(precision)
	if err != nil {
		return nil, nil, err
	}
	s, err := ort.NewSession(model, ort.Options{})
	if err != nil {
		return nil, nil, err
	}
	dst := make([]float32, 1)
	return func(row []float32) (float64, error) {
		if err := s.ScoreFlat(dst, row); err != nil {
			return 0, err
		}
		return float64(dst[0]), nil
	}, func() { s.Close() }, nil
}

func TestFitNABCentredIgnoresLevel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float64, 600)
	for i := range vals {
		vals[i] = 10 + math.Sin(float64(i)/5) + 0.1*rng.NormFloat64()
	}
	o := DefaultNABOptions()
	o.Model.Window, o.Centre = 8, true
	d, err := FitNAB(vals, o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != KindPCACentred {
		t.Errorf("kind %q, want %q", d.Kind, KindPCACentred)
	}
	row := make([]float32, 8)
	for j := range row {
		row[j] = float32(math.Sin(float64(j) / 5))
	}
	base := d.Score(row)
	for j := range row {
		row[j] += 3 // the same shape, 3 standard deviations higher
	}
	if shifted := d.Score(row); math.Abs(shifted-base) > 1e-3*max(1, base) {
		t.Errorf("score %v after a level shift of the whole window, %v before: want equal", shifted, base)
	}
	o.Centre = false
	u, err := FitNAB(vals, o)
	if err != nil {
		t.Fatal(err)
	}
	if s := u.Score(row); !(s > 2*base) {
		t.Errorf("uncentred model: score %v for a shifted window, want well above %v", s, base)
	}
}

func TestNABInputErrors(t *testing.T) {
	if _, err := PostNAB([]float64{1}, []float64{1, 2}, card.LikelihoodOptions{}); err == nil {
		t.Error("PostNAB with mismatched lengths: no error")
	}
	if _, err := ReadNABDir(t.TempDir()); err == nil {
		t.Error("ReadNABDir on an empty folder: no error")
	}
}

// TestNABArtifact writes the recipe's model for one series as a model artifact (ONNX + card)
// and loads it back: the model part of the recipe is expressible as a card.
func TestNABArtifact(t *testing.T) {
	vals := make([]float64, 500)
	for i := range vals {
		vals[i] = 20 + 5*math.Sin(float64(i)/10)
	}
	d, err := FitNAB(vals, DefaultNABOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, prec := range []string{card.FP32, card.Int8} {
		model, err := d.ONNX(prec)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		path, err := card.Write(dir, d.Card("nab-"+prec, prec), model)
		if err != nil {
			t.Fatal(err)
		}
		c, err := card.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Window != d.Window || len(c.Features) != 1 || c.Features[0] != NABFeature {
			t.Errorf("%s card: window %d features %q, want %d [%s]", prec, c.Window, c.Features, d.Window, NABFeature)
		}
	}
}

// nabDir is the NAB folder, from $PERCH_DATASETS or /work/shared/datasets; the test is skipped
// when it is absent.
func nabDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv(scoring.DatasetsEnv)
	if root == "" {
		root = "/work/shared/datasets"
	}
	dir := filepath.Join(root, "nab")
	if _, err := os.Stat(filepath.Join(dir, "labels", "combined_windows.json")); err != nil {
		t.Skipf("NAB data not found under %s (set %s)", root, scoring.DatasetsEnv)
	}
	return dir
}

// TestNABSweepTool measures the recipe's variants on the dev files (PERCH_NAB_SWEEP=1): the
// default and one change at a time. It is a tool for honest model selection, not a check. Raw
// model scores are computed once per model and re-used for every post-processing.
func TestNABSweepTool(t *testing.T) {
	if os.Getenv("PERCH_NAB_SWEEP") == "" {
		t.Skip("set PERCH_NAB_SWEEP=1")
	}
	series, err := ReadNABDir(nabDir(t))
	if err != nil {
		t.Fatal(err)
	}
	type variant struct {
		name string
		edit func(*NABOptions)
	}
	post := func(f func(*card.LikelihoodOptions)) func(*NABOptions) { return func(o *NABOptions) { f(&o.Post) } }
	variants := []variant{{"default", func(*NABOptions) {}}}
	for _, w := range []int{2, 4, 8, 16} {
		variants = append(variants, variant{fmt.Sprintf("window %d", w), func(o *NABOptions) { o.Model.Window = w }})
	}
	variants = append(variants,
		variant{"window 8, centred", func(o *NABOptions) { o.Model.Window, o.Centre = 8, true }},
		variant{"short 10", post(func(o *card.LikelihoodOptions) { o.Short = 10 })},
		variant{"short 40", post(func(o *card.LikelihoodOptions) { o.Short = 40 })},
		variant{"history 1000", post(func(o *card.LikelihoodOptions) { o.History = 1000 })},
		variant{"history 2000", post(func(o *card.LikelihoodOptions) { o.History = 2000 })},
		variant{"history 8000", post(func(o *card.LikelihoodOptions) { o.History = 8000 })},
		variant{"holdoff 0", post(func(o *card.LikelihoodOptions) { o.Holdoff = 0 })},
		variant{"holdoff 1 (Numenta)", post(func(o *card.LikelihoodOptions) { o.Holdoff = 1 })},
		variant{"holdoff 200", post(func(o *card.LikelihoodOptions) { o.Holdoff = 200 })},
		variant{"one-sided", post(func(o *card.LikelihoodOptions) { o.TwoSided = false })},
		variant{"min std 0.3", post(func(o *card.LikelihoodOptions) { o.MinStd = 0.3 })},
		variant{"no spatial rule", post(func(o *card.LikelihoodOptions) { o.Spatial = 0 })},
		variant{"window 8, no spatial rule", func(o *NABOptions) { o.Model.Window, o.Post.Spatial = 8, 0 }},
	)
	raws := map[string][][]float64{}
	for _, v := range variants {
		o := DefaultNABOptions()
		v.edit(&o)
		key := fmt.Sprintf("%d/%v", o.Model.Window, o.Centre)
		if raws[key] == nil {
			raws[key] = make([][]float64, len(series))
			for k, s := range series {
				if raws[key][k], err = RawScoresNAB(s, o); err != nil {
					t.Fatal(err)
				}
			}
		}
		files := make([]scoring.NABFile, len(series))
		for k, s := range series {
			sc, err := PostNAB(s.Values, raws[key][k], o.Post)
			if err != nil {
				t.Fatal(err)
			}
			files[k] = scoring.NABFile{Name: s.Name, Times: s.Times, Scores: sc, Windows: s.Windows}
		}
		e, err := SweepNAB(files)
		if err != nil {
			t.Fatal(err)
		}
		r := e.Results
		fmt.Printf("| %-26s | %6.2f | %6.2f | %6.2f | %.4f |\n", v.name, r[0].Normalized, r[1].Normalized, r[2].Normalized, r[0].Threshold)
	}
}

// TestNABDiagTool prints per-file scores beside Numenta HTM's (PERCH_NAB_DIAG=1); a tool.
func TestNABDiagTool(t *testing.T) {
	if os.Getenv("PERCH_NAB_DIAG") == "" {
		t.Skip("set PERCH_NAB_DIAG=1")
	}
	dir := nabDir(t)
	htm := map[string]string{}
	b, err := os.ReadFile(filepath.Join(dir, "results", "numenta", "numenta_standard_scores.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) > 4 {
			htm[f[2]] = f[4]
		}
	}
	o := DefaultNABOptions()
	if v := os.Getenv("PERCH_NAB_SPATIAL"); v != "" {
		if o.Post.Spatial, err = strconv.ParseFloat(v, 64); err != nil {
			t.Fatal(err)
		}
	}
	e, err := EvaluateNAB(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	r := e.Results[0]
	for _, f := range r.Files {
		fmt.Printf("%-60s win=%d mine=%7.3f htm=%s TP=%d FP=%d\n", f.Name, f.Windows, f.Score, htm[f.Name], f.TP, f.FP)
	}
	fmt.Printf("std=%.2f thr=%.4f\n", r.Normalized, r.Threshold)
}

// TestNABFileTool prints one file's raw and post-processed scores (PERCH_NAB_FILE=name); a tool.
func TestNABFileTool(t *testing.T) {
	name := os.Getenv("PERCH_NAB_FILE")
	if name == "" {
		t.Skip("set PERCH_NAB_FILE")
	}
	series, err := ReadNABDir(nabDir(t))
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultNABOptions()
	for _, s := range series {
		if !strings.Contains(s.Name, name) {
			continue
		}
		raw, err := RawScoresNAB(s, o)
		if err != nil {
			t.Fatal(err)
		}
		sc, _ := PostNAB(s.Values, raw, o.Post)
		fmt.Println(s.Name, "prob", NABProbationRows(len(s.Values)), "windows", s.Windows)
		step := max(1, len(raw)/400)
		for i := 0; i < len(raw); i += step {
			m, mi := 0.0, i
			for j := i; j < min(i+step, len(raw)); j++ {
				if sc[j] > m {
					m, mi = sc[j], j
				}
			}
			fmt.Printf("%5d %s v=%.3g raw=%.3g maxscore=%.3f@%d\n", i, s.Times[i].Format("01-02 15:04"), s.Values[i], raw[i], m, mi)
		}
	}
}
