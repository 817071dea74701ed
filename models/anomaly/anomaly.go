// Package anomaly fits anomaly detectors on normal data in pure Go, scores samples with them,
// and exports them as ONNX models (fp32, or int8 with static QDQ quantisation) with a model card.
//
// # Overview
//
// [Fit] learns from rows of normal operation (rows × features, raw units). It normalises each
// feature by its training mean and standard deviation (the card's normalisation, applied by the
// host), forms input rows of the last Window samples (see card.Feeder), and fits a PCA T²+Q
// detector: the raw score of a normalised row x is
//
//	score(x) = Σⱼ (((x − μ)·W)ⱼ)²,   W = V·diag(√c)
//
// where V holds the eigenvectors of the rows' covariance, cᵢ = 1/(2kλᵢ) for the k principal
// components (Hotelling's T² over k, mean 1/2 on training data) and cᵢ = 1/(2·Σλ_res) for the
// residual ones (Q, the squared prediction error, over its training mean, mean 1/2). One matrix
// product, a square and a sum: the same graph runs in ONNX Runtime. With Options.Sqrt the score
// is the square root of that (a distance rather than a squared distance), which keeps one wild
// sample from dominating the smoothed score.
//
// With Options.Detector = [KindAE] it trains a small autoencoder instead (one tanh hidden layer,
// full-batch Adam, deterministic for a seed; see [Autoencoder]); the score is its scaled squared
// reconstruction error.
//
// The alert threshold comes from the training data only: Factor × the Quantile of the training
// scores after the same moving average the alarm applies (see [Options]).
//
// # Usage
//
//	d, err := anomaly.Fit(rows, features, anomaly.DefaultOptions())
//	c := d.Card("pump", card.FP32)
//	model, err := d.ONNX(card.FP32)
//	_, err = card.Write(dir, c, model)
//
// A Detector is immutable after Fit and safe for concurrent use.
package anomaly

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// Detector kinds, as written into the card's detector field.
const (
	KindPCA = "pca-t2q"
)

// Options configure [Fit]. [DefaultOptions] is the recipe evaluated on SKAB. A zero numeric
// field takes the fallback its doc names (the plain detector: no window, no smoothing, threshold
// at the largest training score), not the recipe's value.
type Options struct {
	// Detector is KindPCA (fallback) or KindAE.
	Detector string
	// Window is the number of consecutive samples in one input row (fallback 1).
	Window int
	// Variance is the fraction of the training variance the k principal components keep
	// (0 < Variance ≤ 1; fallback 0.9). The rest is the residual subspace scored by Q.
	Variance float64
	// Ridge is added to the covariance's diagonal, relative to its mean eigenvalue (fallback
	// 1e-3): it keeps tiny eigenvalues (short training data, long windows) from blowing up T².
	Ridge float64
	// Sqrt makes the score the square root of the weighted squared distance.
	Sqrt bool
	// MinStd is the smallest standard deviation a feature is given, relative to its training
	// |mean| (0: std as measured, floored at 1e-9). A feature almost constant in training (a
	// thermocouple varying by 0.1 % over the training minutes) would otherwise turn slow drift
	// or sensor resolution into tens of standard deviations.
	MinStd float64

	// Hidden is the autoencoder's hidden width (KindAE; fallback 16).
	Hidden int
	// Epochs of full-batch Adam for the autoencoder (fallback 500).
	Epochs int
	// LearningRate of Adam for the autoencoder (fallback 0.01).
	LearningRate float64
	// Seed of the autoencoder's weight initialisation (training is deterministic).
	Seed uint64

	// Smooth is the moving average length of the alarm (samples, fallback 1).
	Smooth int
	// Quantile of the smoothed training scores the threshold is taken from (0..1, fallback 1:
	// their maximum).
	Quantile float64
	// Factor multiplies that quantile to give the threshold (fallback 1).
	Factor float64
	// Clear is the alarm's clear level relative to the threshold (0 < Clear ≤ 1, fallback 1: no
	// hysteresis).
	Clear float64
	// Consecutive is how many smoothed scores in a row must exceed the threshold to raise the
	// alarm (fallback 1).
	Consecutive int
}

// DefaultOptions is the recipe chosen on the 23 SKAB development files (see README.md): input
// rows of the last 10 samples, 90 % of the variance in T², the score as a distance (Sqrt),
// feature std floored at 0.5 % of the feature's training |mean|, a 20-sample moving average, and
// the threshold at 1.5 × the largest smoothed training score, no hysteresis.
func DefaultOptions() Options {
	return Options{
		Window:      10,
		Variance:    0.9,
		Ridge:       1e-3,
		Sqrt:        true,
		MinStd:      0.005,
		Smooth:      20,
		Quantile:    1,
		Factor:      1.5,
		Clear:       1,
		Consecutive: 1,
	}
}

func (o Options) withDefaults() Options {
	if o.Detector == "" {
		o.Detector = KindPCA
	}
	if o.Hidden == 0 {
		o.Hidden = 16
	}
	if o.Epochs == 0 {
		o.Epochs = 500
	}
	if o.LearningRate == 0 {
		o.LearningRate = 0.01
	}
	if o.Window == 0 {
		o.Window = 1
	}
	if o.Variance == 0 {
		o.Variance = 0.9
	}
	if o.Ridge == 0 {
		o.Ridge = 1e-3
	}
	if o.Smooth == 0 {
		o.Smooth = 1
	}
	if o.Quantile == 0 {
		o.Quantile = 1
	}
	if o.Factor == 0 {
		o.Factor = 1
	}
	if o.Clear == 0 {
		o.Clear = 1
	}
	if o.Consecutive == 0 {
		o.Consecutive = 1
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("anomaly: options: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if o.Detector != KindPCA && o.Detector != KindAE {
		bad("detector", "%q is not %s or %s", o.Detector, KindPCA, KindAE)
	}
	if o.Hidden < 1 || o.Epochs < 1 {
		bad("hidden, epochs", "%d, %d: must be at least 1", o.Hidden, o.Epochs)
	}
	if !(o.LearningRate > 0) || math.IsInf(o.LearningRate, 0) {
		bad("learning_rate", "%v: must be finite and > 0", o.LearningRate)
	}
	if o.Window < 1 {
		bad("window", "%d: must be at least 1", o.Window)
	}
	if !(o.Variance > 0 && o.Variance <= 1) {
		bad("variance", "%v: must be in (0, 1]", o.Variance)
	}
	if !(o.Ridge > 0) || math.IsInf(o.Ridge, 0) {
		bad("ridge", "%v: must be finite and > 0", o.Ridge)
	}
	if !(o.MinStd >= 0) || math.IsInf(o.MinStd, 0) {
		bad("min_std", "%v: must be finite and ≥ 0", o.MinStd)
	}
	if o.Smooth < 1 {
		bad("smooth", "%d: must be at least 1", o.Smooth)
	}
	if !(o.Quantile > 0 && o.Quantile <= 1) {
		bad("quantile", "%v: must be in (0, 1]", o.Quantile)
	}
	if !(o.Factor > 0) || math.IsInf(o.Factor, 0) {
		bad("factor", "%v: must be finite and > 0", o.Factor)
	}
	if !(o.Clear > 0 && o.Clear <= 1) {
		bad("clear", "%v: must be in (0, 1]", o.Clear)
	}
	if o.Consecutive < 1 {
		bad("consecutive", "%d: must be at least 1", o.Consecutive)
	}
	return errors.Join(errs...)
}

// Detector is a fitted anomaly detector. Its fields are plain data, read-only after [Fit].
type Detector struct {
	Kind     string
	Features []string
	Window   int
	// Mean and Std normalise each feature (the card's normalisation).
	Mean, Std []float64
	// Center is the mean normalised input row (len Inputs()).
	Center []float32
	// W is the Inputs()×Inputs() scoring matrix, row-major: score = Σⱼ (((x − Center)·W)ⱼ)².
	W []float32
	// AE is the autoencoder (Kind KindAE; W is then nil).
	AE *Autoencoder
	// Components is k, the number of principal components.
	Components int
	// Sqrt reports whether the score is the square root of the sum.
	Sqrt bool
	// Threshold and Clear are the alarm levels on the smoothed score.
	Threshold, Clear float64
	// Options are the options Fit used, defaults filled in.
	Options Options
	// TrainRows is the number of samples Fit was given; TrainSHA256 the hex SHA-256 of them
	// (float64 little-endian, row by row).
	TrainRows   int
	TrainSHA256 string
	// InputRange is the largest |x − Center| over the training input rows, for the record (an
	// input quantiser's range).
	InputRange float64
	// TrainScores are the raw scores of the training input rows (one per full window).
	TrainScores []float64
}

// Inputs is the width of one input row: len(Features) × Window.
func (d *Detector) Inputs() int { return len(d.Features) * d.Window }

// Fit fits a detector on rows of normal data: rows[i][j] is feature j (named features[j]) of
// sample i, in time order, raw units. It needs at least Window+1 rows, all finite.
func Fit(rows [][]float64, features []string, opts Options) (*Detector, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	nf := len(features)
	if nf == 0 {
		return nil, errors.New("anomaly: fit: no features")
	}
	seen := map[string]bool{}
	for j, f := range features {
		if f == "" || seen[f] {
			return nil, fmt.Errorf("anomaly: fit: feature %d (%q) is empty or repeated", j, f)
		}
		seen[f] = true
	}
	if len(rows) < opts.Window+1 {
		return nil, fmt.Errorf("anomaly: fit: %d rows; window %d needs at least %d", len(rows), opts.Window, opts.Window+1)
	}
	h := sha256.New()
	var buf [8]byte
	for i, r := range rows {
		if len(r) != nf {
			return nil, fmt.Errorf("anomaly: fit: row %d has %d values, want %d (one per feature)", i, len(r), nf)
		}
		for j, v := range r {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("anomaly: fit: row %d, feature %q: %v is not finite", i, features[j], v)
			}
			binary.LittleEndian.PutUint64(buf[:], math.Float64bits(v))
			h.Write(buf[:])
		}
	}
	d := &Detector{Kind: opts.Detector, Features: append([]string(nil), features...), Window: opts.Window,
		Sqrt: opts.Sqrt, Options: opts, TrainRows: len(rows), TrainSHA256: hex.EncodeToString(h.Sum(nil))}
	d.Mean, d.Std = meanStd(rows, nf, opts.MinStd)
	x := windowRows(rows, d.Mean, d.Std, opts.Window)
	fit := d.fitPCA
	if d.Kind == KindAE {
		fit = d.fitAE
	}
	if err := fit(x); err != nil {
		return nil, err
	}
	d.TrainScores = make([]float64, len(x))
	for i, r := range x {
		d.TrainScores[i] = d.Score(r)
		for j, v := range r {
			d.InputRange = max(d.InputRange, math.Abs(float64(v)-float64(d.Center[j])))
		}
	}
	d.Threshold = opts.Factor * quantile(movingAverage(d.TrainScores, opts.Smooth), opts.Quantile)
	d.Clear = opts.Clear * d.Threshold
	if math.IsNaN(d.Threshold) || math.IsInf(d.Threshold, 0) {
		return nil, fmt.Errorf("anomaly: fit: threshold %v is not finite", d.Threshold)
	}
	return d, nil
}

// meanStd returns each feature's mean and (population) standard deviation, the latter floored
// at minStd×max(|mean|, 1e-9) and at 1e-9.
func meanStd(rows [][]float64, nf int, minStd float64) (mean, std []float64) {
	mean, std = make([]float64, nf), make([]float64, nf)
	n := float64(len(rows))
	for _, r := range rows {
		for j, v := range r {
			mean[j] += v
		}
	}
	for j := range mean {
		mean[j] /= n
	}
	for _, r := range rows {
		for j, v := range r {
			std[j] += (v - mean[j]) * (v - mean[j])
		}
	}
	for j := range std {
		std[j] = math.Sqrt(std[j] / n)
		std[j] = max(std[j], minStd*max(math.Abs(mean[j]), 1e-9), 1e-9)
	}
	return mean, std
}

// windowRows returns the normalised input rows of every full window in rows, as card.Feeder
// builds them: oldest sample first.
func windowRows(rows [][]float64, mean, std []float64, window int) [][]float32 {
	nf := len(mean)
	var out [][]float32
	for t := window - 1; t < len(rows); t++ {
		r := make([]float32, nf*window)
		for a := range window {
			s := rows[t-window+1+a]
			for j := range nf {
				r[a*nf+j] = float32((s[j] - mean[j]) / std[j])
			}
		}
		out = append(out, r)
	}
	return out
}

// fitPCA fits Center and W on normalised input rows x.
func (d *Detector) fitPCA(x [][]float32) error {
	n := d.Inputs()
	center := make([]float64, n)
	for _, r := range x {
		for j, v := range r {
			center[j] += float64(v)
		}
	}
	for j := range center {
		center[j] /= float64(len(x))
	}
	cov := make([]float64, n*n)
	dev := make([]float64, n)
	for _, r := range x {
		for j, v := range r {
			dev[j] = float64(v) - center[j]
		}
		for i := range n {
			di := dev[i]
			row := cov[i*n:][:n]
			for j := i; j < n; j++ {
				row[j] += di * dev[j]
			}
		}
	}
	var trace float64
	for i := range n {
		for j := i; j < n; j++ {
			cov[i*n+j] /= float64(len(x))
			cov[j*n+i] = cov[i*n+j]
		}
		trace += cov[i*n+i]
	}
	ridge := d.Options.Ridge * max(trace/float64(n), 1e-12)
	for i := range n {
		cov[i*n+i] += ridge
	}
	vals, vecs := symEigen(cov, n)
	var total float64
	for _, v := range vals {
		total += max(v, 0)
	}
	k, cum := 0, 0.0
	for k < n && cum < d.Options.Variance*total {
		cum += max(vals[k], 0)
		k++
	}
	k = max(1, min(k, n))
	var resid float64
	for _, v := range vals[k:] {
		resid += max(v, ridge)
	}
	c := make([]float64, n)
	for i := range n {
		if i < k {
			c[i] = 1 / (2 * float64(k) * max(vals[i], ridge))
		} else {
			c[i] = 1 / (2 * resid)
		}
	}
	if k == n {
		for i := range c {
			c[i] *= 2 // no residual subspace: T² alone, mean 1
		}
	}
	d.Components = k
	d.Center = make([]float32, n)
	for j, v := range center {
		d.Center[j] = float32(v)
	}
	d.W = make([]float32, n*n)
	for i := range n {
		for j := range n {
			d.W[i*n+j] = float32(vecs[i*n+j] * math.Sqrt(c[j]))
		}
	}
	return nil
}

// Score is the raw score of one normalised input row (len Inputs()), computed in Go in float64:
// the reference the ONNX model is checked against. It allocates two slices of Inputs() floats.
func (d *Detector) Score(row []float32) float64 {
	if d.AE != nil {
		s := d.AE.Scale * d.aeSum(row)
		if d.Sqrt {
			return math.Sqrt(s)
		}
		return s
	}
	n := d.Inputs()
	p := make([]float64, n)
	for i := range n {
		di := float64(row[i]) - float64(d.Center[i])
		for j, w := range d.W[i*n : (i+1)*n] {
			p[j] += di * float64(w)
		}
	}
	var s float64
	for _, v := range p {
		s += v * v
	}
	if d.Sqrt {
		return math.Sqrt(s)
	}
	return s
}
