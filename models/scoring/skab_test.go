package scoring

import (
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2020, 3, 9, 10, 0, 0, 0, time.UTC)

// skabSeconds builds a SKABFile of n rows one second apart with true changepoints at the given
// rows, predicted outliers at the given rows and no true anomalies.
func skabSeconds(n int, cps, preds []int) SKABFile {
	f := SKABFile{Name: "synthetic", Times: make([]time.Time, n), Anomaly: make([]bool, n),
		Changepoint: make([]bool, n), Predicted: make([]bool, n), PredictedCP: make([]bool, n)}
	for i := range f.Times {
		f.Times[i] = t0.Add(time.Duration(i) * time.Second)
	}
	for _, i := range cps {
		f.Changepoint[i] = true
	}
	for _, i := range preds {
		f.PredictedCP[i] = true
	}
	return f
}

func near(t *testing.T, name string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9 && !(math.IsNaN(got) && math.IsNaN(want)) {
		t.Errorf("%s = %.12f, want %.12f", name, got, want)
	}
}

func TestSKABOutlierMetrics(t *testing.T) {
	f := skabSeconds(4, nil, nil)
	f.Anomaly = []bool{true, true, false, false}
	f.Predicted = []bool{true, false, true, false}
	r, err := SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.TP != 1 || r.FN != 1 || r.FP != 1 || r.TN != 1 {
		t.Fatalf("confusion %+v", r)
	}
	near(t, "F1", r.F1, 0.5)
	near(t, "FAR", r.FAR, 50)
	near(t, "MAR", r.MAR, 50)

	// Rows without output are left out of the counts.
	f.NoOutput = []bool{false, true, false, false}
	r, err = SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.TP != 1 || r.FN != 0 || r.FP != 1 || r.TN != 1 {
		t.Fatalf("confusion with a no-output row %+v", r)
	}
}

func TestSKABEmptyPredictions(t *testing.T) {
	f := skabSeconds(300, []int{10, 200}, nil)
	f.Anomaly[15] = true
	r, err := SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "F1", r.F1, 0)
	near(t, "FAR", r.FAR, 0)
	near(t, "MAR", r.MAR, 100)
	// The null detector scores 0 in every profile.
	near(t, "standard", r.NABStandard, 0)
	near(t, "low FP", r.NABLowFP, 0)
	near(t, "low FN", r.NABLowFN, 0)
	if r.TrueCPs != 2 || r.MissedCPs != 2 || r.FalseCPs != 0 || !math.IsNaN(r.MeanDelay) {
		t.Errorf("counts %+v", r)
	}

	// No files at all: no changepoint, so the normalised scores are undefined.
	r, err = SKAB(nil, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(r.NABStandard) || r.F1 != 0 || r.TrueCPs != 0 {
		t.Errorf("empty input %+v", r)
	}
}

func TestSKABCurve(t *testing.T) {
	// A detection on the changepoint scores A_tp, one on the window's right edge A_fp; values in
	// between come from the 1000-point tanh curve (reference values from numpy's linspace).
	cases := []struct {
		delay int // seconds after the changepoint
		want  float64
	}{
		{0, 1},
		{30, 0.44404850713138366},
		{45, 0.04734449984696025},
		{20, 0.7357503819229991},
		{60, -0.11},
	}
	for _, c := range cases {
		f := skabSeconds(200, []int{50}, []int{50 + c.delay})
		r, err := SKAB([]SKABFile{f}, SKABOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// One window: normalised = 100*(s+1)/2 in the standard profile.
		near(t, "standard", r.NABStandard, 100*(c.want+1)/2)
		near(t, "delay", r.MeanDelay, float64(c.delay))
	}
}

func TestSKABWindowWithTwoDetections(t *testing.T) {
	// Detections 30 s and 45 s after the changepoint: only the first counts, the second is neither
	// a TP nor a false positive.
	f := skabSeconds(200, []int{50}, []int{80, 95})
	r, err := SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.MissedCPs != 0 || r.FalseCPs != 0 {
		t.Errorf("missed %d, false %d; want 0, 0", r.MissedCPs, r.FalseCPs)
	}
	near(t, "standard", r.NABStandard, 100*(0.44404850713138366+1)/2)
	near(t, "delay", r.MeanDelay, 30)

	// A detection before the window and one after it are false positives.
	f = skabSeconds(200, []int{50}, []int{49, 50, 111})
	r, err = SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.FalseCPs != 2 {
		t.Errorf("false CPs %d, want 2", r.FalseCPs)
	}
	near(t, "standard", r.NABStandard, 100*((1-0.22)+1)/2)
	near(t, "low FP", r.NABLowFP, 100*((1-0.44)+1)/2)
}

func TestSKABOverlappingWindows(t *testing.T) {
	// Changepoints 30 s apart: windows [50,110] and [80,140] overlap, so the later one is cut to
	// [110,140]. A detection at 95 s belongs to the first window only (position 45/60).
	f := skabSeconds(300, []int{50, 80}, []int{95})
	r, err := SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.TrueCPs != 2 || r.MissedCPs != 1 || r.FalseCPs != 0 {
		t.Errorf("counts %+v", r)
	}
	near(t, "standard", r.NABStandard, 100*(0.04734449984696025-1+2)/4)

	// A detection on the shared edge (110 s) counts in both windows, as upstream: the right edge
	// of the first (A_fp) and the left edge of the cut second (A_tp).
	f = skabSeconds(300, []int{50, 80}, []int{110})
	r, err = SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.MissedCPs != 0 || r.FalseCPs != 0 {
		t.Errorf("counts %+v", r)
	}
	near(t, "standard", r.NABStandard, 100*(-0.11+1+2)/4)

	// In the cut window the position is relative to its cut width (30 s): 125 s is half-way.
	f = skabSeconds(300, []int{50, 80}, []int{125})
	r, err = SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "standard", r.NABStandard, 100*(-1+0.44404850713138366+2)/4)
	near(t, "delay", r.MeanDelay, 15)
}

func TestSKABFileWithoutChangepoints(t *testing.T) {
	quiet := skabSeconds(100, nil, []int{10, 20})
	busy := skabSeconds(200, []int{50}, []int{50})
	r, err := SKAB([]SKABFile{quiet, busy}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.TrueCPs != 1 || r.FalseCPs != 2 || r.MissedCPs != 0 {
		t.Errorf("counts %+v", r)
	}
	// Pooled: S = 1 - 2*0.11, null -1, perfect 1.
	near(t, "standard", r.NABStandard, 100*(1-0.22+1)/2)

	// Alone, a file without changepoints has no normalised score.
	r, err = SKAB([]SKABFile{quiet}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(r.NABStandard) || r.FalseCPs != 2 {
		t.Errorf("quiet file alone %+v", r)
	}
}

func TestPredictedChangepoints(t *testing.T) {
	b := func(s string) []bool {
		out := make([]bool, len(s))
		for i, c := range s {
			out[i] = c == '1'
		}
		return out
	}
	cases := []struct {
		in      string
		rolling int
		want    string
	}{
		{"00110", 0, "00101"},
		{"110", 0, "101"},
		{"", 0, ""},
		{"0100000", 3, "0010100"}, // rolled 0011000: the first 2 rows have no value (0)
		{"1000000", 3, "0011000"}, // rolled 0010000
		{"1111111", 1, "1000000"}, // rolling 1 is no rolling
	}
	for _, c := range cases {
		got := PredictedChangepoints(b(c.in), c.rolling)
		if len(got) != len(c.in) {
			t.Fatalf("%s: length %d", c.in, len(got))
		}
		for i := range got {
			if got[i] != (c.want[i] == '1') {
				t.Errorf("PredictedChangepoints(%s, %d) = %v, want %s", c.in, c.rolling, got, c.want)
				break
			}
		}
	}
}

func TestSKABDerivesChangepoints(t *testing.T) {
	f := skabSeconds(200, []int{50}, nil)
	f.PredictedCP = nil
	for i := 70; i < 150; i++ {
		f.Predicted[i] = true // changepoints derived at 70 (rise) and 150 (fall)
	}
	r, err := SKAB([]SKABFile{f}, SKABOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.MissedCPs != 0 || r.FalseCPs != 1 {
		t.Errorf("counts %+v", r)
	}
	near(t, "delay", r.MeanDelay, 20)
}

func TestSKABErrors(t *testing.T) {
	f := skabSeconds(10, nil, nil)
	f.Name = "valve1/3.csv"
	f.Predicted = f.Predicted[:9]
	_, err := SKAB([]SKABFile{f}, SKABOptions{})
	if err == nil || !strings.Contains(err.Error(), "valve1/3.csv") {
		t.Errorf("length mismatch: err = %v, want one naming the file", err)
	}
	g := skabSeconds(10, nil, nil)
	g.Times[5] = g.Times[3]
	if _, err := SKAB([]SKABFile{g}, SKABOptions{}); err == nil || !strings.Contains(err.Error(), "row 5") {
		t.Errorf("decreasing time: err = %v, want one naming row 5", err)
	}
}
