package scoring

import (
	"bufio"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// datasets returns the datasets folder, skipping the test when it is absent.
func datasets(t *testing.T, sub string) string {
	t.Helper()
	dir := filepath.Join(DatasetsDir(filepath.Join("..", "..", "..", "shared", "datasets")), sub)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("datasets folder %s absent (set %s to its location): %v", dir, DatasetsEnv, err)
	}
	return dir
}

// skabTrainRows is the SKAB per-file train split: the first 400 rows.
const skabTrainRows = 400

// skabPredictions reads a baselines/predictions file: datetime plus one column per algorithm whose
// cells are "0", "1" or empty (no output). Missing cells are reported by ok[alg][i] == false.
func skabPredictions(t *testing.T, path string) (times []time.Time, algs []string, pred, ok map[string][]bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	header := strings.Split(sc.Text(), ";")
	algs = header[1:]
	pred, ok = map[string][]bool{}, map[string][]bool{}
	line := 1
	for sc.Scan() {
		line++
		cells := strings.Split(sc.Text(), ";")
		if len(cells) != len(header) {
			t.Fatalf("%s:%d: %d cells", path, line, len(cells))
		}
		ts, err := time.Parse(TimeLayout, cells[0])
		if err != nil {
			t.Fatalf("%s:%d: %v", path, line, err)
		}
		times = append(times, ts)
		for k, a := range algs {
			c := cells[k+1]
			ok[a] = append(ok[a], c != "")
			pred[a] = append(pred[a], c == "1")
			if c != "" && c != "0" && c != "1" {
				t.Fatalf("%s:%d: %s cell %q", path, line, a, c)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return times, algs, pred, ok
}

type skabGolden struct {
	alg                        string
	f1, far, mar               float64
	tp, tn, fp, fn             int
	nabStd, nabLowFP, nabLowFN float64
	trueCPs, missedCPs, fpCPs  int
	meanDelay                  float64
	hasDelay                   bool
}

func readSKABGolden(t *testing.T, path string) []skabGolden {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := "algorithm,n_files,F1,FAR_pct,MAR_pct,TP,TN,FP,FN,NAB_Standard,NAB_LowFP,NAB_LowFN,true_CPs,missed_CPs,FP_CPs,mean_delay_s"
	if got := strings.Join(recs[0], ","); got != want {
		t.Fatalf("%s header = %s, want %s", path, got, want)
	}
	fl := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return v
	}
	in := func(s string) int { return int(fl(s)) }
	var out []skabGolden
	for _, r := range recs[1:] {
		g := skabGolden{alg: r[0], f1: fl(r[2]), far: fl(r[3]), mar: fl(r[4]),
			tp: in(r[5]), tn: in(r[6]), fp: in(r[7]), fn: in(r[8]),
			nabStd: fl(r[9]), nabLowFP: fl(r[10]), nabLowFN: fl(r[11]),
			trueCPs: in(r[12]), missedCPs: in(r[13]), fpCPs: in(r[14])}
		if r[15] != "" {
			g.meanDelay, g.hasDelay = fl(r[15]), true
		}
		out = append(out, g)
	}
	return out
}

// round rounds half away from zero to d decimals, like the published tables.
func round(x float64, d int) float64 {
	p := math.Pow(10, float64(d))
	return math.Round(x*p) / p
}

// TestSKABGolden recomputes every column of baselines/metrics_dev23.csv from the published per-row
// predictions in baselines/predictions and the 23 dev files.
func TestSKABGolden(t *testing.T) {
	root := datasets(t, "skab")
	goldens := readSKABGolden(t, filepath.Join(root, "baselines", "metrics_dev23.csv"))
	dataFiles, err := filepath.Glob(filepath.Join(root, "data", "*", "*.csv"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dataFiles)
	type loaded struct {
		name      string
		table     *Table
		predTimes []time.Time
		pred, ok  map[string][]bool
	}
	var files []loaded
	for _, p := range dataFiles {
		if strings.Contains(p, "anomaly-free") {
			continue
		}
		tab, err := ReadSKAB(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(filepath.Join(root, "data"), p)
		times, _, pred, ok := skabPredictions(t, filepath.Join(root, "baselines", "predictions", rel))
		if got, want := len(times), tab.Len()-skabTrainRows; got != want {
			t.Fatalf("%s: %d prediction rows, want %d test rows", rel, got, want)
		}
		for i, ts := range times {
			if !ts.Equal(tab.Times[skabTrainRows+i]) {
				t.Fatalf("%s: prediction row %d time %v, data row %v", rel, i, ts, tab.Times[skabTrainRows+i])
			}
		}
		files = append(files, loaded{rel, tab, times, pred, ok})
	}
	if len(files) != 23 {
		t.Fatalf("found %d SKAB dev files, want 23", len(files))
	}
	for _, g := range goldens {
		t.Run(g.alg, func(t *testing.T) {
			var in []SKABFile
			for _, f := range files {
				pred, ok := f.pred[g.alg], f.ok[g.alg]
				if pred == nil {
					t.Fatalf("%s: no predictions column", f.name)
				}
				sf := SKABFile{Name: f.name}
				for i := range f.predTimes {
					r := skabTrainRows + i
					sf.Times = append(sf.Times, f.table.Times[r])
					sf.Anomaly = append(sf.Anomaly, f.table.Anomaly[r])
					sf.Changepoint = append(sf.Changepoint, f.table.Changepoint[r])
					sf.Predicted = append(sf.Predicted, pred[i])
					sf.NoOutput = append(sf.NoOutput, !ok[i])
				}
				in = append(in, sf)
			}
			var opts SKABOptions
			if g.alg == "Isolation_Forest" {
				opts.RollingMax = 30
			}
			r, err := SKAB(in, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkF := func(name string, got, want float64) {
				t.Helper()
				if math.Abs(got-want) > 1e-6 {
					t.Errorf("%s = %.6f, want %.6f", name, got, want)
				}
			}
			checkI := func(name string, got, want int) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
			checkI("TP", r.TP, g.tp)
			checkI("TN", r.TN, g.tn)
			checkI("FP", r.FP, g.fp)
			checkI("FN", r.FN, g.fn)
			checkF("F1", round(r.F1, 2), g.f1)
			checkF("FAR", round(r.FAR, 2), g.far)
			checkF("MAR", round(r.MAR, 2), g.mar)
			checkF("NAB standard", round(r.NABStandard, 2), g.nabStd)
			checkF("NAB low FP", round(r.NABLowFP, 2), g.nabLowFP)
			checkF("NAB low FN", round(r.NABLowFN, 2), g.nabLowFN)
			checkI("true CPs", r.TrueCPs, g.trueCPs)
			checkI("missed CPs", r.MissedCPs, g.missedCPs)
			checkI("FP CPs", r.FalseCPs, g.fpCPs)
			if g.hasDelay {
				checkF("mean delay", round(r.MeanDelay, 1), g.meanDelay)
			} else if !math.IsNaN(r.MeanDelay) {
				t.Errorf("mean delay = %v, want none (no detection)", r.MeanDelay)
			}
			t.Logf("F1 %.4f FAR %.4f MAR %.4f NAB %.4f/%.4f/%.4f missed %d FP %d delay %.3f",
				r.F1, r.FAR, r.MAR, r.NABStandard, r.NABLowFP, r.NABLowFN, r.MissedCPs, r.FalseCPs, r.MeanDelay)
		})
	}
}
