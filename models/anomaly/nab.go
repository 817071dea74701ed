package anomaly

// The NAB recipe: a univariate streaming detector evaluated with the Numenta Anomaly Benchmark.
//
// Per file, the recipe fits a windowed PCA T²+Q detector ([FitNAB]) on the probationary rows,
// feeds every row through the card's Feeder and the model (the part that runs in ONNX Runtime on
// the box), and turns the raw scores into an anomaly score in [0, 1] with [Likelihood], host
// post-processing the card cannot express yet (see Likelihood's doc: a proposal for the card's
// Score section). [EvaluateNAB] runs it on every file and sweeps one threshold across files per
// NAB profile, as NAB does.

import (
	"errors"
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
	Post LikelihoodOptions
	// Precision is the model precision, card.FP32 (default) or card.Int8.
	Precision string
	// Run scores input rows; nil means [NativeRunner].
	Run Runner
}

// DefaultNABOptions is the NAB recipe chosen on the 55 dev files: a one-sample model (the
// distance of the value from its probationary mean, in probationary standard deviations) and
// [DefaultLikelihoodOptions]. Longer windows (2 to 32 samples, with and without Centre) scored
// 2 to 10 points lower in the standard profile; see the package's NAB notes in nab_test.go.
func DefaultNABOptions() NABOptions {
	m := DefaultOptions()
	m.Window = 1
	m.Sqrt = true
	return NABOptions{Model: m, Post: DefaultLikelihoodOptions(), Precision: card.FP32}
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

// LikelihoodOptions configure [Likelihood]. A zero Short, History, Eps or MinStd means its
// default; Holdoff, TwoSided and Spatial are off at their zero values.
type LikelihoodOptions struct {
	// Short is how many recent raw scores are averaged (samples, default 20).
	Short int
	// History is how many recent averaged scores make the long-run distribution (samples,
	// default 4000).
	History int
	// Eps is added to the averaged raw score before its logarithm (default 0.05; raw scores
	// have mean about 0.5 on training data).
	Eps float64
	// MinStd is the smallest standard deviation the long-run distribution of log scores is
	// given (default 0.1).
	MinStd float64
	// Holdoff lowers an extreme score (tail probability ≤ 1e-5) to tail probability 1e-3 when
	// another extreme score came at most Holdoff samples before it (0: never). Holdoff 1 is
	// Numenta's likelihood filter; longer holdoffs keep a flickering anomaly from yielding a run
	// of detections, so NAB sees one sharp rise per event.
	Holdoff int
	// TwoSided makes unusually low scores anomalous too (Numenta's tail probability is
	// two-sided): a window that fits the model better than usual, e.g. a flat stretch in a
	// noisy signal.
	TwoSided bool
	// Spatial, when > 0, scores 1 any value outside the range of the values seen so far,
	// widened by Spatial × its width on each side (Numenta's detector uses 0.05).
	Spatial float64
}

// DefaultLikelihoodOptions is the post-processing of [DefaultNABOptions].
func DefaultLikelihoodOptions() LikelihoodOptions {
	return LikelihoodOptions{Short: 20, History: 4000, Eps: 0.05, MinStd: 0.1, Holdoff: 50, TwoSided: true, Spatial: 0.05}
}

func (o LikelihoodOptions) withDefaults() LikelihoodOptions {
	if o.Short == 0 {
		o.Short = 20
	}
	if o.History == 0 {
		o.History = 4000
	}
	if o.Eps == 0 {
		o.Eps = 0.05
	}
	if o.MinStd == 0 {
		o.MinStd = 0.1
	}
	return o
}

func (o LikelihoodOptions) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("anomaly: likelihood options: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if o.Short < 1 {
		bad("short", "%d: must be at least 1", o.Short)
	}
	if o.History < 2 {
		bad("history", "%d: must be at least 2", o.History)
	}
	if !(o.Eps > 0) || math.IsInf(o.Eps, 0) {
		bad("eps", "%v: must be finite and > 0", o.Eps)
	}
	if !(o.MinStd > 0) || math.IsInf(o.MinStd, 0) {
		bad("min_std", "%v: must be finite and > 0", o.MinStd)
	}
	if o.Holdoff < 0 {
		bad("holdoff", "%d: must be ≥ 0", o.Holdoff)
	}
	if !(o.Spatial >= 0) || math.IsInf(o.Spatial, 0) {
		bad("spatial", "%v: must be finite and ≥ 0", o.Spatial)
	}
	return errors.Join(errs...)
}

// Tail probabilities of the likelihood filter (Numenta's red and yellow levels) and the floor
// that maps a tail probability to a score in [0, 1].
const (
	likelihoodRed    = 1e-5
	likelihoodYellow = 1e-3
	likelihoodFloor  = 1e-10
)

// Likelihood turns a stream of raw model scores into anomaly scores in [0, 1], causally, one
// sample at a time. It is the host post-processing of the NAB recipe, modelled on Numenta's
// anomaly likelihood, and a proposal for the card's Score section:
//
//	a  = mean of the last Short raw scores
//	g  = ln(a + Eps)
//	μ, σ = mean and standard deviation of g over the previous History samples (σ ≥ MinStd)
//	p  = ½·erfc((g − μ)/(σ√2))        the upper tail probability of g under N(μ, σ²)
//	                                   (with TwoSided, of |g − μ|)
//	p  = 1e-3 if p ≤ 1e-5 and an unfiltered p ≤ 1e-5 came at most Holdoff samples before
//	score = ln(p + 1e-10) / ln(1e-10), clamped to [0, 1]   (p = 1e-5 gives 0.5)
//	score = 1 if Spatial > 0 and the value is outside [lo − Spatial·(hi−lo), hi + Spatial·(hi−lo)],
//	        lo and hi the smallest and largest value seen before it
//
// Because μ and σ follow the last History samples, a new normal level or noise scale is learnt
// within a few History lengths: this replaces a re-fit of the normalisation. The Spatial rule
// looks at the value, not at the model: on NAB it is worth about 25 points of the standard score
// (see nab_test.go). Memory is Short + History float64s; Step allocates nothing and costs
// amortised O(1) (running sums, re-added from scratch every Short and History samples against
// rounding drift). A Likelihood is not safe for concurrent use.
type Likelihood struct {
	o       LikelihoodOptions
	short   []float64 // last Short raw scores, ring
	shortN  int
	sumRaw  float64
	hist    []float64 // last History values of g, ring
	histN   int
	sum     float64
	sumSq   float64
	lastRed int // sample number of the last unfiltered extreme score, or -1
	lo, hi  float64
	seen    int
}

// NewLikelihood returns a Likelihood with options o (defaults filled in), or an error naming the
// bad option.
func NewLikelihood(o LikelihoodOptions) (*Likelihood, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Likelihood{o: o, short: make([]float64, o.Short), hist: make([]float64, o.History), lastRed: -1}, nil
}

// Step takes the next sample's value (raw units, for the Spatial rule) and the model's raw score
// for the window ending at it, and returns the anomaly score in [0, 1]. The first sample scores 0.
// A NaN or infinite raw score is treated as a very large one.
func (l *Likelihood) Step(value, raw float64) float64 {
	if math.IsNaN(raw) || raw > math.MaxFloat32 {
		raw = math.MaxFloat32
	}
	raw = max(raw, 0)
	// Short average of raw scores.
	slot := l.shortN % len(l.short)
	if l.shortN >= len(l.short) {
		l.sumRaw -= l.short[slot]
	}
	l.short[slot] = raw
	l.sumRaw += raw
	l.shortN++
	if l.shortN%len(l.short) == 0 {
		l.sumRaw = 0
		for _, v := range l.short {
			l.sumRaw += v
		}
	}
	a := max(l.sumRaw/float64(min(l.shortN, len(l.short))), 0)
	g := math.Log(a + l.o.Eps)

	// Tail probability of g under the distribution of the previous History values.
	p := 0.5
	if n := min(l.histN, len(l.hist)); n >= 2 {
		mu := l.sum / float64(n)
		sd := math.Sqrt(max(l.sumSq/float64(n)-mu*mu, 0))
		sd = max(sd, l.o.MinStd)
		z := (g - mu) / sd
		if l.o.TwoSided {
			z = math.Abs(z)
		}
		p = 0.5 * math.Erfc(z/math.Sqrt2)
	}
	if p <= likelihoodRed {
		if l.lastRed >= 0 && l.seen-l.lastRed <= l.o.Holdoff {
			p = likelihoodYellow
		}
		l.lastRed = l.seen
	}

	// Push g into the history.
	slot = l.histN % len(l.hist)
	if l.histN >= len(l.hist) {
		old := l.hist[slot]
		l.sum -= old
		l.sumSq -= old * old
	}
	l.hist[slot] = g
	l.sum += g
	l.sumSq += g * g
	l.histN++
	if l.histN%len(l.hist) == 0 {
		l.sum, l.sumSq = 0, 0
		for _, v := range l.hist {
			l.sum += v
			l.sumSq += v * v
		}
	}

	score := math.Log(p+likelihoodFloor) / math.Log(likelihoodFloor)
	score = min(max(score, 0), 1)
	if l.o.Spatial > 0 && l.seen > 0 && l.hi > l.lo {
		tol := l.o.Spatial * (l.hi - l.lo)
		if value > l.hi+tol || value < l.lo-tol {
			score = 1
		}
	}
	if l.seen == 0 || value < l.lo {
		l.lo = value
	}
	if l.seen == 0 || value > l.hi {
		l.hi = value
	}
	l.seen++
	if l.seen == 1 {
		return 0
	}
	return score
}

// Reset forgets every sample.
func (l *Likelihood) Reset() {
	*l = Likelihood{o: l.o, short: l.short, hist: l.hist, lastRed: -1}
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
func PostNAB(values, raw []float64, o LikelihoodOptions) ([]float64, error) {
	if len(values) != len(raw) {
		return nil, fmt.Errorf("anomaly: nab: %d values and %d raw scores", len(values), len(raw))
	}
	l, err := NewLikelihood(o)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(raw))
	for i, r := range raw {
		out[i] = l.Step(values[i], r)
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
