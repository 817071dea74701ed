package scoring

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// nabMinutes builds a NABFile of n rows five minutes apart with windows given as row ranges.
func nabMinutes(name string, n int, windows [][2]int) NABFile {
	f := NABFile{Name: name, Times: make([]time.Time, n), Scores: make([]float64, n)}
	for i := range f.Times {
		f.Times[i] = t0.Add(time.Duration(i) * 5 * time.Minute)
	}
	for _, w := range windows {
		f.Windows = append(f.Windows, Window{Start: f.Times[w[0]], End: f.Times[w[1]]})
	}
	return f
}

func TestScaledSigmoid(t *testing.T) {
	near(t, "S(-1)", scaledSigmoid(-1), 0.9866142981514305)
	near(t, "S(0)", scaledSigmoid(0), 0)
	near(t, "S(2.999)", scaledSigmoid(2.999), 2/(1+math.Exp(5*2.999))-1)
	near(t, "S(3)", scaledSigmoid(3), -1)
}

func TestNABFileScore(t *testing.T) {
	// 20 rows: the first floor(0.15*20) = 3 are probationary. One window, rows 10..14.
	f := nabMinutes("a.csv", 20, [][2]int{{10, 14}})
	for _, i := range []int{1, 5, 12, 13, 14, 16} {
		f.Scores[i] = 0.9
	}
	res, err := NAB([]NABFile{f}, NABStandard, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	fs := res.Files[0]
	// Window: its earliest detection (row 12, position -3/5) counts; row 1 is probationary;
	// row 5 precedes every window (-fp); row 16 is 2 rows past a 5-row window (position 2/4).
	wantWin := 0.9174286804284079
	wantFP := -0.11 + -0.09331120039532642
	near(t, "score", fs.Score, wantWin+wantFP)
	if fs.TP != 3 || fs.FN != 2 || fs.FP != 2 || fs.TN != 10 || fs.Total != 20 || fs.Windows != 1 {
		t.Errorf("counts %+v", fs)
	}
	for i, v := range fs.RowScores {
		want := 0.0
		switch i {
		case 10:
			want = wantWin
		case 5:
			want = -0.11
		case 16:
			want = -0.09331120039532642
		}
		near(t, "row score", v, want)
	}
	null, perfect := -1.0, 1.0
	near(t, "normalised", res.Normalized, 100*(fs.Score-null)/(perfect-null))

	// A detection only on the window's last row scores S(-1/5)/S(-1).
	g := nabMinutes("b.csv", 20, [][2]int{{10, 14}})
	g.Scores[14] = 1
	res, err = NAB([]NABFile{g}, NABStandard, 1)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "last row", res.Score, 0.46838684390227814)

	// A detection on the window's first row earns exactly tpWeight.
	g.Scores[10] = 1
	res, err = NAB([]NABFile{g}, NABLowFN, 1)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "first row", res.Score, 1)
	near(t, "normalised first row", res.Normalized, 100)
}

func TestNABNullAndNoWindows(t *testing.T) {
	f := nabMinutes("a.csv", 50, [][2]int{{20, 24}, {30, 34}})
	quiet := nabMinutes("quiet.csv", 50, nil)
	quiet.Scores[40] = 1
	for _, p := range NABProfiles() {
		res, err := NAB([]NABFile{f, quiet}, p, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		near(t, p.Name+" raw", res.Score, -2*p.FN-p.FP)
		near(t, p.Name+" null", res.Null, -2*p.FN)
		near(t, p.Name+" perfect", res.Perfect, 2*p.TP)
		if res.Windows != 2 || res.Files[1].FP != 1 {
			t.Errorf("%s: %+v", p.Name, res)
		}
	}
	res, err := NAB([]NABFile{quiet}, NABStandard, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(res.Normalized) {
		t.Errorf("no windows: normalised %v, want NaN", res.Normalized)
	}
	res, err = NAB(nil, NABStandard, 0.5)
	if err != nil || res.Windows != 0 || !math.IsNaN(res.Normalized) {
		t.Errorf("no files: %+v, %v", res, err)
	}
}

func TestNABRepeatedTimestamp(t *testing.T) {
	// A repeated timestamp (daylight saving time in NAB's AWS files) stands for its first row.
	f := nabMinutes("dst.csv", 40, nil)
	f.Times[21] = f.Times[20]
	f.Windows = []Window{{Start: f.Times[20], End: f.Times[25]}}
	f.Scores[20] = 1
	res, err := NAB([]NABFile{f}, NABStandard, 1)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "score", res.Score, 1)
	if res.TP != 1 || res.FN != 5 {
		t.Errorf("counts %+v", res)
	}
}

func TestNABErrors(t *testing.T) {
	f := nabMinutes("bad.csv", 40, [][2]int{{20, 25}})
	f.Windows[0].End = f.Windows[0].End.Add(time.Second)
	if _, err := NAB([]NABFile{f}, NABStandard, 0.5); err == nil || !strings.Contains(err.Error(), "bad.csv") ||
		!strings.Contains(err.Error(), "not a row timestamp") {
		t.Errorf("bound off the rows: err = %v", err)
	}
	g := nabMinutes("early.csv", 40, [][2]int{{1, 3}})
	if _, err := NAB([]NABFile{g}, NABStandard, 0.5); err == nil || !strings.Contains(err.Error(), "probationary") {
		t.Errorf("window in probation: err = %v", err)
	}
	h := nabMinutes("overlap.csv", 40, [][2]int{{10, 20}, {15, 25}})
	if _, err := NAB([]NABFile{h}, NABStandard, 0.5); err == nil || !strings.Contains(err.Error(), "window 1") {
		t.Errorf("overlapping windows: err = %v", err)
	}
	k := nabMinutes("short.csv", 40, nil)
	k.Scores = k.Scores[:3]
	if _, err := NAB([]NABFile{k}, NABStandard, 0.5); err == nil || !strings.Contains(err.Error(), "short.csv") {
		t.Errorf("short scores: err = %v", err)
	}
	if _, err := NAB(nil, Profile{Name: "neg", TP: 1, FP: -1, FN: 1}, 0.5); err == nil {
		t.Error("negative weight accepted")
	}
}

// TestNABSweepMatchesDirectScoring checks every point of the sweep on a random corpus against
// scoring the corpus directly at that threshold.
func TestNABSweepMatchesDirectScoring(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var files []NABFile
	for k := 0; k < 4; k++ {
		f := nabMinutes("f"+string(rune('a'+k)), 200, [][2]int{{60, 79}, {120, 124}})
		if k == 3 {
			f.Windows = nil
		}
		for i := range f.Scores {
			// Few distinct values, so thresholds repeat across rows and files.
			f.Scores[i] = float64(rng.IntN(40)) / 40
		}
		files = append(files, f)
	}
	for _, p := range NABProfiles() {
		best, sweep, err := NABSweep(files, p)
		if err != nil {
			t.Fatal(err)
		}
		if sweep[0].Threshold != 1.1 || sweep[0].TP != 0 || sweep[0].FP != 0 {
			t.Errorf("%s: first sweep point %+v, want threshold 1.1 with no detection", p.Name, sweep[0])
		}
		top := sweep[0]
		for i, s := range sweep {
			if i > 0 && s.Threshold >= sweep[i-1].Threshold {
				t.Fatalf("%s: thresholds not decreasing at %d", p.Name, i)
			}
			direct, err := NAB(files, p, s.Threshold)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(direct.Score-s.Score) > 1e-9 || direct.TP != s.TP || direct.FP != s.FP ||
				direct.TN != s.TN || direct.FN != s.FN {
				t.Errorf("%s threshold %v: sweep %+v, direct score %v TP/TN/FP/FN %d/%d/%d/%d", p.Name, s.Threshold, s,
					direct.Score, direct.TP, direct.TN, direct.FP, direct.FN)
			}
			if s.Score > top.Score {
				top = s
			}
		}
		if len(sweep) != 41 {
			t.Errorf("%s: %d sweep points, want 41 (1.1 and 40 distinct scores)", p.Name, len(sweep))
		}
		if best.Threshold != top.Threshold || math.Abs(best.Score-top.Score) > 1e-9 {
			t.Errorf("%s: best %v (%v), want %v (%v)", p.Name, best.Threshold, best.Score, top.Threshold, top.Score)
		}
	}
}

func TestNABSweepTiesPickHighestThreshold(t *testing.T) {
	// The sweep is 1.1 (window missed), 0.8 (row 20 detects the window), 0.7 (row 21 adds
	// nothing: the same score) and 0 (every row detected). Of the tied 0.8 and 0.7, NAB keeps 0.8.
	f := nabMinutes("tie.csv", 40, [][2]int{{20, 25}})
	f.Scores[20] = 0.8
	f.Scores[21] = 0.7 // later in the same window: same score as 0.8 alone
	best, sweep, err := NABSweep([]NABFile{f}, NABStandard)
	if err != nil {
		t.Fatal(err)
	}
	if len(sweep) != 4 {
		t.Fatalf("sweep %+v", sweep)
	}
	if best.Threshold != 0.8 || best.Score != 1 {
		t.Errorf("best threshold %v score %v, want 0.8 and 1", best.Threshold, best.Score)
	}
}
