package scoring

import (
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nabRowOutput is a published per-timestamp results file of one detector.
type nabRowOutput struct {
	times  []time.Time
	scores []float64
	label  []bool
	st     map[string][]float64 // profile -> S(t) column
}

func readNABRowOutput(t *testing.T, path string) nabRowOutput {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	col := map[string]int{}
	for c, h := range recs[0] {
		col[h] = c
	}
	for _, h := range []string{"timestamp", "anomaly_score", "label"} {
		if _, ok := col[h]; !ok {
			t.Fatalf("%s: no column %q", path, h)
		}
	}
	out := nabRowOutput{st: map[string][]float64{}}
	for i, r := range recs[1:] {
		ts, err := time.Parse(TimeLayout, r[col["timestamp"]])
		if err != nil {
			t.Fatalf("%s:%d: %v", path, i+2, err)
		}
		out.times = append(out.times, ts)
		out.scores = append(out.scores, parseF(t, path, r[col["anomaly_score"]]))
		out.label = append(out.label, parseF(t, path, r[col["label"]]) == 1)
		for _, p := range NABProfiles() {
			c, ok := col["S(t)_"+p.Name]
			if !ok {
				t.Fatalf("%s: no S(t) column for %s", path, p.Name)
			}
			out.st[p.Name] = append(out.st[p.Name], parseF(t, path, r[c]))
		}
	}
	return out
}

func parseF(t *testing.T, where, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return v
}

// nabScoreRow is one row of a published <det>_<profile>_scores.csv table.
type nabScoreRow struct {
	file                  string
	threshold, score      float64
	tp, tn, fp, fn, total int
}

func readNABScores(t *testing.T, path string) []nabScoreRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if h := strings.Join(recs[0], ","); h != "Detector,Profile,File,Threshold,Score,TP,TN,FP,FN,Total_Count" {
		t.Fatalf("%s: header %s", path, h)
	}
	var out []nabScoreRow
	for _, r := range recs[1:] {
		in := func(s string) int { return int(parseF(t, path, s)) }
		out = append(out, nabScoreRow{file: r[2], threshold: parseF(t, path, r[3]), score: parseF(t, path, r[4]),
			tp: in(r[5]), tn: in(r[6]), fp: in(r[7]), fn: in(r[8]), total: in(r[9])})
	}
	return out
}

// nabPerRowDetectors are the detectors whose per-timestamp outputs are published.
var nabPerRowDetectors = []string{"numenta", "windowedGaussian"}

// loadNABPerRow reads a detector's per-row outputs as NABFiles keyed like the windows file, checks
// them against the data files and the label column, and returns them sorted by name.
func loadNABPerRow(t *testing.T, root, det string, windows map[string][]Window) ([]NABFile, map[string]nabRowOutput) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "results", det, "*", det+"_*.csv"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	var files []NABFile
	outs := map[string]nabRowOutput{}
	for _, p := range paths {
		cat := filepath.Base(filepath.Dir(p))
		key := cat + "/" + strings.TrimPrefix(filepath.Base(p), det+"_")
		ws, ok := windows[key]
		if !ok {
			t.Fatalf("%s: no windows for %s", p, key)
		}
		o := readNABRowOutput(t, p)
		data, err := ReadNAB(filepath.Join(root, "data", key))
		if err != nil {
			t.Fatal(err)
		}
		if len(data.Times) != len(o.times) {
			t.Fatalf("%s: %d rows, data file has %d", p, len(o.times), len(data.Times))
		}
		for i := range o.times {
			if !o.times[i].Equal(data.Times[i]) {
				t.Fatalf("%s row %d: time %v, data file %v", p, i, o.times[i], data.Times[i])
			}
		}
		// The label column must be exactly our window membership.
		k := 0
		for i, ts := range o.times {
			for k < len(ws) && ts.After(ws[k].End) {
				k++
			}
			in := k < len(ws) && !ts.Before(ws[k].Start)
			if in != o.label[i] {
				t.Fatalf("%s row %d: label %v, windows say %v", p, i, o.label[i], in)
			}
		}
		files = append(files, NABFile{Name: key, Times: o.times, Scores: o.scores, Windows: ws})
		outs[key] = o
	}
	return files, outs
}

// TestNABGoldenPerFile recomputes the published per-file scores and row counts of every detector
// with per-row outputs, in every profile, and each file's sparse S(t) column row by row.
func TestNABGoldenPerFile(t *testing.T) {
	root := datasets(t, "nab")
	windows, err := ReadNABWindows(filepath.Join(root, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	profiles, err := ReadNABProfiles(filepath.Join(root, "config", "profiles.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range NABProfiles() {
		if profiles[p.Name] != p {
			t.Fatalf("profiles.json %s = %+v, package has %+v", p.Name, profiles[p.Name], p)
		}
	}
	pairs := 0
	for _, det := range nabPerRowDetectors {
		files, outs := loadNABPerRow(t, root, det, windows)
		if len(files) == 0 {
			t.Fatalf("%s: no per-row outputs", det)
		}
		for _, p := range NABProfiles() {
			published := map[string]nabScoreRow{}
			for _, r := range readNABScores(t, filepath.Join(root, "results", det, det+"_"+p.Name+"_scores.csv")) {
				published[r.file] = r
			}
			var threshold float64
			var sum float64
			for _, f := range files {
				want, ok := published[f.Name]
				if !ok {
					t.Fatalf("%s %s: no published score for %s", det, p.Name, f.Name)
				}
				threshold = want.threshold
				sum += want.score
				res, err := NAB([]NABFile{f}, p, want.threshold)
				if err != nil {
					t.Fatal(err)
				}
				got := res.Files[0]
				if math.Abs(got.Score-want.score) > 1e-6 {
					t.Errorf("%s %s %s: score %.9f, published %.9f", det, p.Name, f.Name, got.Score, want.score)
				}
				if got.TP != want.tp || got.TN != want.tn || got.FP != want.fp || got.FN != want.fn || got.Total != want.total {
					t.Errorf("%s %s %s: TP/TN/FP/FN/total %d/%d/%d/%d/%d, published %d/%d/%d/%d/%d", det, p.Name, f.Name,
						got.TP, got.TN, got.FP, got.FN, got.Total, want.tp, want.tn, want.fp, want.fn, want.total)
				}
				st := outs[f.Name].st[p.Name]
				for i, v := range got.RowScores {
					if math.Abs(v-st[i]) > 1e-6 {
						t.Errorf("%s %s %s row %d: S(t) %.9f, published %.9f", det, p.Name, f.Name, i, v, st[i])
						break
					}
				}
				pairs++
			}
			// The same files scored together: the corpus score is the sum of the published scores.
			res, err := NAB(files, p, threshold)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(res.Score-sum) > 1e-6 {
				t.Errorf("%s %s: corpus score %.9f, published files sum to %.9f", det, p.Name, res.Score, sum)
			}
		}
	}
	if pairs != 168 {
		t.Errorf("checked %d file/profile pairs, want 168", pairs)
	}
}

// TestNABGoldenNormalized checks the normalisation against the published scoreboards: for every
// detector, the per-file tables summed over the 55 dev files and normalised with our window count
// give baselines_by_subset.csv's dev55 row, and the published full-corpus raw sums give
// final_results.json.
func TestNABGoldenNormalized(t *testing.T) {
	root := datasets(t, "nab")
	windows, err := ReadNABWindows(filepath.Join(root, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	devWindows := 0
	for _, ws := range windows {
		devWindows += len(ws)
	}
	b, err := os.ReadFile(filepath.Join(root, "results", "final_results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var final map[string]map[string]float64
	if err := json.Unmarshal(b, &final); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "baselines_by_subset.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	profiles := map[string]Profile{}
	for _, p := range NABProfiles() {
		profiles[p.Name] = p
	}
	checked := map[string]int{}
	for _, r := range recs[1:] {
		det, prof, subset := r[0], r[1], r[2]
		if det == "random" {
			continue // per-file tables cover only 32 files and no normalised score is given (README)
		}
		p := profiles[prof]
		nWindows := int(parseF(t, "baselines_by_subset.csv", r[4]))
		rawSum := parseF(t, "baselines_by_subset.csv", r[7])
		norm := parseF(t, "baselines_by_subset.csv", r[8])
		switch subset {
		case "all58":
			want, ok := final[det][prof]
			if !ok {
				t.Logf("final_results.json has no %s; not checked", det)
				continue
			}
			// rawSum is printed to 6 decimals: its rounding moves the normalised score by < 1e-6.
			_, _, got := Normalize(rawSum, nWindows, p)
			if math.Abs(got-want) > 1e-6 {
				t.Errorf("%s %s: full corpus normalised %.9f, final_results.json %.9f", det, prof, got, want)
			}
			checked[subset]++
		case "dev55":
			if nWindows != devWindows {
				t.Fatalf("dev55 has %d windows, windows file %d", nWindows, devWindows)
			}
			sum := 0.0
			rows := readNABScores(t, filepath.Join(root, "results", det, det+"_"+prof+"_scores.csv"))
			for _, row := range rows {
				if _, ok := windows[row.file]; !ok {
					t.Fatalf("%s %s: score row for unknown file %s", det, prof, row.file)
				}
				sum += row.score
			}
			if len(rows) != len(windows) {
				t.Fatalf("%s %s: %d score rows, want %d", det, prof, len(rows), len(windows))
			}
			if math.Abs(sum-rawSum) > 1e-6 {
				t.Errorf("%s %s: dev55 raw sum %.9f, baselines %.6f", det, prof, sum, rawSum)
			}
			_, _, got := Normalize(sum, devWindows, p)
			if math.Abs(round(got, 2)-norm) > 1e-6 {
				t.Errorf("%s %s: dev55 normalised %.6f, baselines %.2f", det, prof, got, norm)
			}
			checked[subset]++
		}
	}
	// The numenta threshold file keeps the full-precision corpus score behind final_results.json.
	b, err = os.ReadFile(filepath.Join(root, "config", "thresholds.json"))
	if err != nil {
		t.Fatal(err)
	}
	var th map[string]map[string]struct{ Score, Threshold float64 }
	if err := json.Unmarshal(b, &th); err != nil {
		t.Fatal(err)
	}
	for _, p := range NABProfiles() {
		const fullCorpusWindows = 116 // the 107 windows here plus the 9 of the held-out files (README)
		_, _, got := Normalize(th["numenta"][p.Name].Score, fullCorpusWindows, p)
		if want := final["numenta"][p.Name]; math.Abs(got-want) > 1e-6 {
			t.Errorf("numenta %s: normalised thresholds.json score %.9f, final_results.json %.9f", p.Name, got, want)
		}
	}
	t.Logf("checked %v", checked)
	if checked["all58"] != 3*(len(final)-1) || checked["dev55"] < checked["all58"] {
		t.Errorf("checked %v rows; want every final_results.json detector but random", checked)
	}
}

// TestNABSweepGolden runs the threshold optimisation on the per-row outputs and checks it against
// direct scoring: the sweep's score at the published threshold is the sum of the published file
// scores, and its best threshold scores what the sweep says and no less.
func TestNABSweepGolden(t *testing.T) {
	root := datasets(t, "nab")
	windows, err := ReadNABWindows(filepath.Join(root, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, det := range nabPerRowDetectors {
		files, _ := loadNABPerRow(t, root, det, windows)
		for _, p := range NABProfiles() {
			rows := readNABScores(t, filepath.Join(root, "results", det, det+"_"+p.Name+"_scores.csv"))
			published := map[string]nabScoreRow{}
			for _, r := range rows {
				published[r.file] = r
			}
			sum, threshold := 0.0, 0.0
			for _, f := range files {
				sum += published[f.Name].score
				threshold = published[f.Name].threshold
			}
			best, sweep, err := NABSweep(files, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(sweep) < 2 || sweep[0].Threshold != 1.1 {
				t.Fatalf("%s %s: sweep starts %+v", det, p.Name, sweep[:1])
			}
			// NAB looks a threshold up in the sweep as the lowest swept threshold >= it.
			var at *ThresholdScore
			for i := range sweep {
				if sweep[i].Threshold >= threshold {
					at = &sweep[i]
				}
			}
			if at == nil || math.Abs(at.Score-sum) > 1e-6 {
				t.Errorf("%s %s: sweep at published threshold %v = %+v, published files sum to %.9f", det, p.Name, threshold, at, sum)
			}
			// A sample of sweep points, each scored directly.
			step := len(sweep)/8 + 1
			for i := 0; i < len(sweep); i += step {
				s := sweep[i]
				direct, err := NAB(files, p, s.Threshold)
				if err != nil {
					t.Fatal(err)
				}
				// Many thousand false-positive weights summed in another order: compare relatively.
				if math.Abs(direct.Score-s.Score) > 1e-9*math.Max(1, math.Abs(s.Score)) || direct.TP != s.TP || direct.FP != s.FP {
					t.Errorf("%s %s threshold %v: sweep %+v, direct score %.9f TP %d FP %d", det, p.Name, s.Threshold, s,
						direct.Score, direct.TP, direct.FP)
				}
			}
			top := sweep[0]
			for _, s := range sweep {
				if s.Score > top.Score {
					top = s
				}
			}
			if best.Threshold != top.Threshold || math.Abs(best.Score-top.Score) > 1e-9 {
				t.Errorf("%s %s: best %v scores %.9f, sweep's best is %v with %.9f", det, p.Name, best.Threshold, best.Score, top.Threshold, top.Score)
			}
			if best.TP != top.TP || best.FP != top.FP || best.TN != top.TN || best.FN != top.FN {
				t.Errorf("%s %s: best counts %d/%d/%d/%d, sweep %d/%d/%d/%d", det, p.Name,
					best.TP, best.TN, best.FP, best.FN, top.TP, top.TN, top.FP, top.FN)
			}
			t.Logf("%s %s on %d files: published threshold %.6f scores %.4f (norm %.2f); optimised %v scores %.4f (norm %.2f)",
				det, p.Name, len(files), threshold, sum, normOf(sum, best.Windows, p), best.Threshold, best.Score, best.Normalized)
		}
	}
}

func normOf(score float64, windows int, p Profile) float64 {
	_, _, n := Normalize(score, windows, p)
	return n
}
