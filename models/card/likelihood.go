package card

import (
	"errors"
	"fmt"
	"math"
)

// LikelihoodOptions configure [Likelihood]. A zero Short, History, Eps or MinStd means its
// default; Holdoff, TwoSided and Spatial are off at their zero values.
type LikelihoodOptions struct {
	// Short is how many recent raw scores are averaged (samples, default 20).
	Short int `yaml:"short"`
	// History is how many recent averaged scores make the long-run distribution (samples,
	// default 4000).
	History int `yaml:"history"`
	// Eps is added to the averaged raw score before its logarithm (default 0.05; raw scores
	// have mean about 0.5 on training data).
	Eps float64 `yaml:"eps"`
	// MinStd is the smallest standard deviation the long-run distribution of log scores is
	// given (default 0.1).
	MinStd float64 `yaml:"min_std"`
	// Holdoff lowers an extreme score (tail probability ≤ 1e-5) to tail probability 1e-3 when
	// another extreme score came at most Holdoff samples before it (0: never). Holdoff 1 is
	// Numenta's likelihood filter; longer holdoffs keep a flickering anomaly from yielding a run
	// of detections, so NAB sees one sharp rise per event.
	Holdoff int `yaml:"holdoff"`
	// TwoSided makes unusually low scores anomalous too (Numenta's tail probability is
	// two-sided): a window that fits the model better than usual, e.g. a flat stretch in a
	// noisy signal.
	TwoSided bool `yaml:"two_sided"`
	// Spatial, when > 0, scores 1 any value outside the range of the values seen so far,
	// widened by Spatial × its width on each side (Numenta's detector uses 0.05).
	Spatial float64 `yaml:"spatial"`
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
		errs = append(errs, fmt.Errorf("score.likelihood.%s: %s", field, fmt.Sprintf(format, args...)))
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
// sample at a time, between the model and the [Alarm] when a card's score.likelihood is set. It
// is modelled on Numenta's anomaly likelihood (the NAB recipe of models/anomaly uses it):
//
//	a  = mean of the last Short raw scores
//	g  = ln(a + Eps)
//	μ, σ = mean and standard deviation of g over the previous History samples (σ ≥ MinStd)
//	p  = ½·erfc((g − μ)/(σ√2))        the upper tail probability of g under N(μ, σ²)
//	                                   (with TwoSided, of |g − μ|)
//	p  = 1e-3 if p ≤ 1e-5 and an unfiltered p ≤ 1e-5 came at most Holdoff samples before
//	score = ln(p + 1e-10) / ln(1e-10), clamped to [0, 1]   (p = 1e-5 gives 0.5)
//	score = 1 if Spatial > 0 and a feature is outside [lo − Spatial·(hi−lo), hi + Spatial·(hi−lo)],
//	        lo and hi the smallest and largest value of that feature seen before
//
// Because μ and σ follow the last History samples, a new normal level or noise scale is learnt
// within a few History lengths: this replaces a re-fit of the normalisation. The Spatial rule
// looks at the value, not at the model: on NAB it is worth about 25 points of the standard score
// (see models/anomaly/nab_test.go). Memory is Short + History + 2 × features float64s; Step allocates nothing and costs
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
	lastRed int       // sample number of the last unfiltered extreme score, or -1
	lo, hi  []float64 // per feature: the smallest and largest value seen
	seen    int
}

// NewLikelihood returns a Likelihood with options o (defaults filled in), or an error naming the
// bad option.
func NewLikelihood(o LikelihoodOptions, features int) (*Likelihood, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Likelihood{o: o, short: make([]float64, o.Short), hist: make([]float64, o.History), lastRed: -1,
		lo: make([]float64, features), hi: make([]float64, features)}, nil
}

// Step takes the next sample (its features in raw units, for the Spatial rule) and the model's
// raw score for the window ending at it, and returns the anomaly score in [0, 1]. The first
// sample scores 0. A NaN or infinite raw score is treated as a very large one.
func (l *Likelihood) Step(sample []float64, raw float64) float64 {
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
	for j, v := range sample[:len(l.lo)] {
		lo, hi := l.lo[j], l.hi[j]
		if l.o.Spatial > 0 && l.seen > 0 && hi > lo {
			tol := l.o.Spatial * (hi - lo)
			if v > hi+tol || v < lo-tol {
				score = 1
			}
		}
		if l.seen == 0 || v < lo {
			l.lo[j] = v
		}
		if l.seen == 0 || v > hi {
			l.hi[j] = v
		}
	}
	l.seen++
	if l.seen == 1 {
		return 0
	}
	return score
}
