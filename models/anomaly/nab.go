package anomaly

// The NAB recipe: a univariate streaming detector evaluated with the Numenta Anomaly Benchmark.
//
// Per file, the recipe fits this package's PCA T²+Q detector ([FitNAB]; by default on windows of
// one sample, which makes it the distance from the probationary mean) on the probationary rows,
// feeds every row through the card's Feeder and the model (the part that runs in ONNX Runtime on
// the box), and turns the raw scores into an anomaly score in [0, 1] with [Likelihood], host
// post-processing the card cannot express yet (see Likelihood's doc: a proposal for the card's
// Score section). [EvaluateNAB] runs it on every file and sweeps one threshold across files per
// NAB profile, as NAB does.

import (
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/scoring"
)

// NABFeature is the single feature of a NAB stream: the file's value column.
const NABFeature = "value"

// KindPCACentred is the detector kind of a windowed PCA fitted on windows with their own mean
// removed (see [NABOptions].Centre).
const KindPCACentred = "pca-t2q-centred"

// NABProbationRows is the length of a NAB file's probationary period, min(floor(0.15·n), 750)
// rows: the rows a detector may learn from without being scored.
func NABProbationRows(n int) int {
	return min(int(math.Floor(scoring.NABProbation*float64(n))), scoring.NABProbationCap)
}

// NABOptions configure the NAB recipe. [DefaultNABOptions] is the recipe chosen on the 55 dev
// files (see nab_test.go).
type NABOptions struct {
	// Model configures the PCA detector fitted on each file's probationary rows. Only Window,
	// Variance, Ridge, Sqrt and MinStd matter: the alarm fields are unused, the threshold is
	// swept.
	Model Options
	// Centre removes each input row's own mean before the PCA, so the model scores the window's
	// shape and not its level: a level shift gives a burst of high scores while the window
	// straddles it, then the scores fall back. The centring is folded into the model's matrix,
	// so the ONNX graph is unchanged.
	Centre bool
	// Post configures the host post-processing of raw scores.
	Post card.LikelihoodOptions
	// Precision is the model precision, card.FP32 (default) or card.Int8.
	Precision string
	// Run scores input rows; nil means [NativeRunner].
	Run Runner
}

// DefaultNABOptions is the NAB recipe chosen on the 55 dev files: a one-sample model (the
// distance of the value from its probationary mean, in probationary standard deviations) and
// [DefaultLikelihoodOptions]. Windows of 2 to 16 samples (and 8, centred) scored 3.6 to 10.6
// points lower in the standard profile; TestNABSweepTool in nab_test.go measures the variants.
func DefaultNABOptions() NABOptions {
	m := DefaultOptions()
	m.Window = 1
	m.Sqrt = true
	return NABOptions{Model: m, Post: card.DefaultLikelihoodOptions(), Precision: card.FP32}
}

// FitNAB fits the recipe's detector on a univariate series (one value per sample, raw units),
// normally a NAB file's probationary rows.
func FitNAB(values []float64, opts NABOptions) (*Detector, error) {
	rows := make([][]float64, len(values))
	for i, v := range values {
		rows[i] = []float64{v}
	}
	d, err := Fit(rows, []string{NABFeature}, opts.Model)
	if err != nil || !opts.Centre {
		return d, err
	}
	// Refit the PCA on the centred rows x·C (C = I − J/n) and fold C into W:
	// ((x·C − x̄·C)·W) = (x − x̄)·(C·W), so Center is the mean of the uncentred rows.
	x := windowRows(rows, d.Mean, d.Std, d.Window)
	n := d.Inputs()
	xc := make([][]float32, len(x))
	mean := make([]float64, n)
	for i, r := range x {
		var m float64
		for _, v := range r {
			m += float64(v)
		}
		m /= float64(n)
		xc[i] = make([]float32, n)
		for j, v := range r {
			xc[i][j] = float32(float64(v) - m)
			mean[j] += float64(v)
		}
	}
	if err := d.fitPCA(xc); err != nil {
		return nil, err
	}
	for j := range n {
		var colMean float64
		for i := range n {
			colMean += float64(d.W[i*n+j])
		}
		colMean /= float64(n)
		for i := range n {
			d.W[i*n+j] -= float32(colMean)
		}
		d.Center[j] = float32(mean[j] / float64(len(x)))
	}
	d.Kind = KindPCACentred
	d.InputRange = 0
	for i, r := range x {
		d.TrainScores[i] = d.Score(r)
		for j, v := range r {
			d.InputRange = max(d.InputRange, math.Abs(float64(v)-float64(d.Center[j])))
		}
	}
	o := d.Options
	d.Threshold = o.Factor * quantile(movingAverage(d.TrainScores, o.Smooth), o.Quantile)
	d.Clear = o.Clear * d.Threshold
	if math.IsNaN(d.Threshold) || math.IsInf(d.Threshold, 0) {
		return nil, fmt.Errorf("anomaly: fit: threshold %v is not finite", d.Threshold)
	}
	return d, nil
}

// NABSeries is one NAB data file: its rows and its anomaly windows.
type NABSeries struct {
	Name    string // key in the windows file, e.g. "realKnownCause/nyc_taxi.csv"
	Times   []time.Time
	Values  []float64
	Windows []scoring.Window
}

// ReadNABDir reads every data file under root/data/<category>/*.csv (sorted by name) with its
// windows from root/labels/combined_windows.json. A data file without an entry in the windows
// file is an error.
func ReadNABDir(root string) ([]NABSeries, error) {
	wpath := filepath.Join(root, "labels", "combined_windows.json")
	wins, err := scoring.ReadNABWindows(wpath)
	if err != nil {
		return nil, fmt.Errorf("anomaly: nab: %w", err)
	}
	paths, err := filepath.Glob(filepath.Join(root, "data", "*", "*.csv"))
	if err != nil {
		return nil, fmt.Errorf("anomaly: nab: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("anomaly: nab: no data files under %s: %w", filepath.Join(root, "data", "*", "*.csv"), fs.ErrNotExist)
	}
	slices.Sort(paths)
	out := make([]NABSeries, 0, len(paths))
	for _, p := range paths {
		key, err := scoring.NABDataPath(root, p)
		if err != nil {
			return nil, fmt.Errorf("anomaly: nab: %w", err)
		}
		w, ok := wins[key]
		if !ok {
			return nil, fmt.Errorf("anomaly: nab: %s: no entry %q in %s", p, key, wpath)
		}
		t, err := scoring.ReadNAB(p)
		if err != nil {
			return nil, fmt.Errorf("anomaly: nab: %w", err)
		}
		v, err := t.Column("value")
		if err != nil {
			return nil, fmt.Errorf("anomaly: nab: %w", err)
		}
		out = append(out, NABSeries{Name: key, Times: t.Times, Values: v, Windows: w})
	}
	return out, nil
}

// RawScoresNAB fits the recipe's detector on s's probationary rows and returns the model's raw
// score of every row, computed causally through the card's Feeder (before the window is full,
// the missing samples are the training mean, as on the box).
func RawScoresNAB(s NABSeries, opts NABOptions) ([]float64, error) {
	n := len(s.Values)
	prob := NABProbationRows(n)
	d, err := FitNAB(s.Values[:prob], opts)
	if err != nil {
		return nil, fmt.Errorf("anomaly: nab: %s: %w", s.Name, err)
	}
	precision := opts.Precision
	if precision == "" {
		precision = card.FP32
	}
	run := opts.Run
	if run == nil {
		run = NativeRunner
	}
	score, release, err := run(d, precision)
	if err != nil {
		return nil, fmt.Errorf("anomaly: nab: %s: %w", s.Name, err)
	}
	defer release()
	c := d.Card("nab", precision)
	feed := c.NewFeeder()
	row := make([]float32, c.Inputs())
	sample := make([]float64, 1)
	raw := make([]float64, n)
	for i, v := range s.Values {
		sample[0] = v
		feed.Push(sample)
		if raw[i], err = score(feed.Row(row)); err != nil {
			return nil, fmt.Errorf("anomaly: nab: %s: row %d: %w", s.Name, i, err)
		}
	}
	return raw, nil
}

// PostNAB runs [Likelihood] with options o over one file's values and raw scores and returns the
// anomaly scores, one per row.
func PostNAB(values, raw []float64, o card.LikelihoodOptions) ([]float64, error) {
	if len(values) != len(raw) {
		return nil, fmt.Errorf("anomaly: nab: %d values and %d raw scores", len(values), len(raw))
	}
	l, err := card.NewLikelihood(o, 1)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(raw))
	for i, r := range raw {
		out[i] = l.Step(values[i:i+1], r)
	}
	return out, nil
}

// NABEvaluation is the recipe's NAB result on a set of files.
type NABEvaluation struct {
	// Results holds one result per profile (standard, reward_low_FP_rate, reward_low_FN_rate),
	// each at the threshold NAB's sweep chose for that profile across all files.
	Results []scoring.NABResult
	// Files are the detector's outputs, one per file, for re-scoring.
	Files []scoring.NABFile
}

// Normalized returns the normalised score of the named profile, or NaN if it was not scored.
func (e *NABEvaluation) Normalized(profile string) float64 {
	for _, r := range e.Results {
		if r.Profile.Name == profile {
			return r.Normalized
		}
	}
	return math.NaN()
}

// EvaluateNAB runs the recipe on every NAB data file under dir (the folder holding data/ and
// labels/): per file, fit on the probationary rows, score every row causally, post-process
// with [Likelihood]; then, per NAB profile, sweep one threshold across all files with
// scoring.NABSweep. Files are processed one after another.
func EvaluateNAB(dir string, opts NABOptions) (*NABEvaluation, error) {
	series, err := ReadNABDir(dir)
	if err != nil {
		return nil, err
	}
	files := make([]scoring.NABFile, len(series))
	for k, s := range series {
		raw, err := RawScoresNAB(s, opts)
		if err != nil {
			return nil, err
		}
		sc, err := PostNAB(s.Values, raw, opts.Post)
		if err != nil {
			return nil, err
		}
		files[k] = scoring.NABFile{Name: s.Name, Times: s.Times, Scores: sc, Windows: s.Windows}
	}
	return SweepNAB(files)
}

// SweepNAB scores files in every NAB profile at the threshold NAB's sweep picks for it.
func SweepNAB(files []scoring.NABFile) (*NABEvaluation, error) {
	e := &NABEvaluation{Files: files}
	for _, pr := range scoring.NABProfiles() {
		best, _, err := scoring.NABSweep(files, pr)
		if err != nil {
			return nil, fmt.Errorf("anomaly: nab: %w", err)
		}
		e.Results = append(e.Results, best)
	}
	return e, nil
}
