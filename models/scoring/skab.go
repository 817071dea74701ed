package scoring

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// SKABWindow is the width of the SKAB changepoint scoring window, placed to the right of each true
// changepoint.
const SKABWindow = 60 * time.Second

// skabDetail is the number of points of the SKAB scoring curve (numpy linspace of 1000 points).
const skabDetail = 1000

// SKABProfile is a SKAB changepoint cost profile. Unlike [Profile], the weights carry their sign:
// ATP > 0 rewards a detected changepoint, AFP < 0 and AFN < 0 are costs.
type SKABProfile struct {
	Name          string
	ATP, AFP, AFN float64
}

// The three SKAB profiles (upstream core/metrics.py table_of_coef).
var (
	SKABStandard = SKABProfile{Name: "Standard", ATP: 1, AFP: -0.11, AFN: -1}
	SKABLowFP    = SKABProfile{Name: "LowFP", ATP: 1, AFP: -0.22, AFN: -1}
	SKABLowFN    = SKABProfile{Name: "LowFN", ATP: 1, AFP: -0.11, AFN: -2}
)

// SKABFile is one SKAB experiment's scored rows (normally the test rows, file rows 401 to the
// end) with a detector's output. All slices are indexed by row and must have the same length,
// except PredictedCP and NoOutput, which may be nil. Times must not decrease.
//
// Rows where the detector emitted nothing (the MSCRED and Vanilla LSTM warm-up rows of the
// published predictions) are marked in NoOutput: they are left out of the outlier confusion matrix
// and of the predicted changepoint series, but a true changepoint on them still gets its window,
// as upstream scores them.
type SKABFile struct {
	Name        string      // for error messages
	Times       []time.Time // row timestamps
	Anomaly     []bool      // true outlier label ("anomaly" column)
	Changepoint []bool      // true changepoint label ("changepoint" column)
	Predicted   []bool      // predicted outlier label
	// NoOutput, if not nil, marks rows where the detector emitted nothing; their Predicted and
	// PredictedCP values are ignored.
	NoOutput []bool
	// PredictedCP, if not nil, is the predicted changepoint series. If nil it is derived from
	// Predicted (over the rows with output) by [PredictedChangepoints] with the options' RollingMax.
	PredictedCP []bool
}

// SKABOptions adjusts [SKAB]. The zero value is the protocol of the SKAB leaderboard for every
// algorithm except Isolation forest, which uses RollingMax 30.
type SKABOptions struct {
	// RollingMax, if > 1, replaces the predicted outlier series by its trailing rolling maximum
	// over this many rows before changepoints are derived (see [PredictedChangepoints]).
	RollingMax int
	// Window is the changepoint window width; 0 means [SKABWindow].
	Window time.Duration
}

// SKABResult holds the SKAB metrics of one detector pooled over files.
type SKABResult struct {
	// Outlier detection, pooled confusion matrix over all rows of all files.
	TP, TN, FP, FN int
	F1             float64 // TP / (TP + (FP+FN)/2); 0 when the denominator is 0
	FAR            float64 // false alarm rate, percent: 100*FP/(FP+TN); 0 when no negatives
	MAR            float64 // missed alarm rate, percent: 100*FN/(FN+TP); 0 when no positives

	// Changepoint detection: the NAB-like scores normalised to 100 = perfect, 0 = null detector.
	// They are NaN if there is no true changepoint in any file.
	NABStandard, NABLowFP, NABLowFN float64
	TrueCPs                         int     // number of true changepoints (scoring windows)
	MissedCPs                       int     // windows with no predicted changepoint
	FalseCPs                        int     // predicted changepoints outside every window
	MeanDelay                       float64 // mean seconds from window start to its first detection; NaN if none detected
}

// PredictedChangepoints derives the predicted changepoint series from binary outlier predictions
// the SKAB way: |diff(p)|, with element 0 set to p[0]. If rollingMax > 1 the series is first
// replaced by its trailing rolling maximum over rollingMax rows, as pandas
// p.rolling(rollingMax).max() does, whose first rollingMax-1 rows have no value; those rows count
// as 0 and element 0 is then 0.
func PredictedChangepoints(p []bool, rollingMax int) []bool {
	src := p
	if rollingMax > 1 {
		src = make([]bool, len(p))
		last := -1 // index of the latest true element
		for i, v := range p {
			if v {
				last = i
			}
			src[i] = i >= rollingMax-1 && last >= 0 && i-last < rollingMax
		}
	}
	out := make([]bool, len(src))
	for i := range src {
		if i == 0 {
			out[i] = src[0]
		} else {
			out[i] = src[i] != src[i-1]
		}
	}
	return out
}

// SKAB scores a detector on SKAB files: the pooled outlier metrics and the SKAB changepoint score
// in the three profiles, as upstream core/metrics.py computes them. It returns an error naming the
// file if the slices of a file differ in length or its times do not increase.
// SKAB does not retain files; it is safe for concurrent use.
func SKAB(files []SKABFile, opts SKABOptions) (SKABResult, error) {
	width := opts.Window
	if width == 0 {
		width = SKABWindow
	}
	if width < 0 {
		return SKABResult{}, fmt.Errorf("scoring: SKAB window %v is negative", width)
	}
	var errs []error
	for k, f := range files {
		if err := f.validate(); err != nil {
			errs = append(errs, fmt.Errorf("scoring: SKAB file %d (%s): %w", k, f.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return SKABResult{}, err
	}

	var r SKABResult
	profiles := []SKABProfile{SKABStandard, SKABLowFP, SKABLowFN}
	scores := make([]float64, len(profiles))
	var delays []float64
	for _, f := range files {
		var outTimes []time.Time
		var outPred, outCP []bool
		for i := range f.Times {
			if f.NoOutput != nil && f.NoOutput[i] {
				continue
			}
			outTimes = append(outTimes, f.Times[i])
			outPred = append(outPred, f.Predicted[i])
			if f.PredictedCP != nil {
				outCP = append(outCP, f.PredictedCP[i])
			}
			switch {
			case f.Anomaly[i] && f.Predicted[i]:
				r.TP++
			case f.Anomaly[i]:
				r.FN++
			case f.Predicted[i]:
				r.FP++
			default:
				r.TN++
			}
		}
		if f.PredictedCP == nil {
			outCP = PredictedChangepoints(outPred, opts.RollingMax)
		}
		cm := skabChangepoints(f.Times, f.Changepoint, outTimes, outCP, width)
		r.TrueCPs += len(cm.windows)
		r.MissedCPs += cm.missed
		r.FalseCPs += cm.falsePos
		for _, d := range cm.detections {
			delays = append(delays, d.delay.Seconds())
		}
		for k, p := range profiles {
			scores[k] += cm.score(p)
		}
	}
	r.F1 = ratio(float64(r.TP), float64(r.TP)+float64(r.FP+r.FN)/2)
	r.FAR = 100 * ratio(float64(r.FP), float64(r.FP+r.TN))
	r.MAR = 100 * ratio(float64(r.FN), float64(r.FN+r.TP))
	norm := func(k int) float64 {
		p := profiles[k]
		null, perfect := p.AFN*float64(r.TrueCPs), p.ATP*float64(r.TrueCPs)
		if r.TrueCPs == 0 {
			return math.NaN()
		}
		return 100 * (scores[k] - null) / (perfect - null)
	}
	r.NABStandard, r.NABLowFP, r.NABLowFN = norm(0), norm(1), norm(2)
	r.MeanDelay = math.NaN()
	if len(delays) > 0 {
		s := 0.0
		for _, d := range delays {
			s += d
		}
		r.MeanDelay = s / float64(len(delays))
	}
	return r, nil
}

func ratio(num, den float64) float64 {
	if den == 0 {
		return 0
	}
	return num / den
}

func (f *SKABFile) validate() error {
	n := len(f.Times)
	if len(f.Anomaly) != n || len(f.Changepoint) != n || len(f.Predicted) != n {
		return fmt.Errorf("lengths differ: %d times, %d anomaly, %d changepoint, %d predicted labels",
			n, len(f.Anomaly), len(f.Changepoint), len(f.Predicted))
	}
	if f.PredictedCP != nil && len(f.PredictedCP) != n {
		return fmt.Errorf("%d predicted changepoints for %d rows", len(f.PredictedCP), n)
	}
	if f.NoOutput != nil && len(f.NoOutput) != n {
		return fmt.Errorf("%d no-output flags for %d rows", len(f.NoOutput), n)
	}
	for i := 1; i < n; i++ {
		if f.Times[i].Before(f.Times[i-1]) {
			return fmt.Errorf("row %d: time %s is before the previous row's", i, f.Times[i].Format(TimeLayout))
		}
	}
	return nil
}

// skabDetection is a window's first predicted changepoint.
type skabDetection struct {
	window int
	delay  time.Duration // from the window's (possibly cut) start
	pos    float64       // (t_det - start) / (end - start)
}

// skabCP is the changepoint confusion of one file.
type skabCP struct {
	windows    [][2]time.Time
	detections []skabDetection
	missed     int
	falsePos   int
}

// skabChangepoints builds the windows [t, t+width] to the right of every true changepoint, cuts
// overlaps from the later window's left edge (upstream "cut right window"), and matches predicted
// changepoints: a window's first prediction in [start, end] is its detection; predictions outside
// every window are false positives. A prediction on the shared edge of two cut windows counts in
// both, as upstream does. Predictions are given at their own times (predTimes, pred).
func skabChangepoints(times []time.Time, truth []bool, predTimes []time.Time, pred []bool, width time.Duration) skabCP {
	var cm skabCP
	for i, t := range times {
		if truth[i] {
			cm.windows = append(cm.windows, [2]time.Time{t, t.Add(width)})
		}
	}
	for i := 0; i+1 < len(cm.windows); i++ {
		if !cm.windows[i][1].Before(cm.windows[i+1][0]) {
			cm.windows[i+1][0] = cm.windows[i][1]
		}
	}
	var preds []time.Time
	for i, t := range predTimes {
		if pred[i] {
			preds = append(preds, t)
		}
	}
	ws := cm.windows
	if len(ws) == 0 {
		cm.falsePos = len(preds)
		return cm
	}
	for _, t := range preds {
		switch {
		case t.Before(ws[0][0]), t.After(ws[len(ws)-1][1]):
			cm.falsePos++
		default:
			for i := 0; i+1 < len(ws); i++ {
				if t.After(ws[i][1]) && t.Before(ws[i+1][0]) {
					cm.falsePos++
					break
				}
			}
		}
	}
	for k, w := range ws {
		found := false
		for _, t := range preds {
			if !t.Before(w[0]) && !t.After(w[1]) {
				d := skabDetection{window: k, delay: t.Sub(w[0])}
				if span := w[1].Sub(w[0]); span > 0 {
					d.pos = float64(d.delay) / float64(span)
				}
				cm.detections = append(cm.detections, d)
				found = true
				break
			}
		}
		if !found {
			cm.missed++
		}
	}
	return cm
}

// score returns the raw changepoint score of the file in profile p.
func (cm *skabCP) score(p SKABProfile) float64 {
	s := p.AFP*float64(cm.falsePos) + p.AFN*float64(cm.missed)
	for _, d := range cm.detections {
		s += skabCurve(p, d.pos)
	}
	return s
}

// skabCurve is upstream my_scale: the score of a detection at relative position pos in [0, 1] of
// its window, read from a 1000-point tanh curve that falls from ATP to AFP.
func skabCurve(p SKABProfile, pos float64) float64 {
	event := int(pos * skabDetail)
	if event >= skabDetail {
		event = skabDetail - 1
	}
	if event < 0 {
		event = 0
	}
	var x float64
	if event == skabDetail-1 {
		x = math.Pi / 2 // numpy linspace sets the last point to stop exactly
	} else {
		step := math.Pi / float64(skabDetail-1)
		x = float64(event)*step - math.Pi/2
	}
	half := (p.ATP - p.AFP) / 2
	return half*-1*math.Tanh(x)/math.Tanh(math.Pi/2) + half + p.AFP
}
