package scoring

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// Profile is a NAB cost profile. The weights are magnitudes (all >= 0): a detected window earns up
// to TP, a missed window costs FN, a false detection costs up to FP.
type Profile struct {
	Name       string
	TP, FP, FN float64
}

// The three NAB profiles (config/profiles.json).
var (
	NABStandard = Profile{Name: "standard", TP: 1, FP: 0.11, FN: 1}
	NABLowFP    = Profile{Name: "reward_low_FP_rate", TP: 1, FP: 0.22, FN: 1}
	NABLowFN    = Profile{Name: "reward_low_FN_rate", TP: 1, FP: 0.11, FN: 2}
)

// NABProfiles returns the three NAB profiles: standard, reward_low_FP_rate, reward_low_FN_rate.
func NABProfiles() []Profile { return []Profile{NABStandard, NABLowFP, NABLowFN} }

// NABProbation is the fraction of a file's rows, capped at NABProbationCap rows, that NAB ignores
// at its start.
const (
	NABProbation    = 0.15
	NABProbationCap = 750
)

// NABFile is one NAB data file with a detector's output. Times must not decrease; every window
// bound must be one of Times (a repeated timestamp stands for its first row, as in NAB). For binary detections use scores 0 and 1 with threshold 1.
type NABFile struct {
	Name    string      // key in the windows file, e.g. "realKnownCause/nyc_taxi.csv"
	Times   []time.Time // row timestamps
	Scores  []float64   // anomaly score per row, normally in [0, 1]
	Windows []Window    // anomaly windows in time order, non-overlapping
}

// BinaryScores turns binary detections into anomaly scores for [NAB] with threshold 1: 1 where
// detected, 0 elsewhere.
func BinaryScores(detected []bool) []float64 {
	out := make([]float64, len(detected))
	for i, d := range detected {
		if d {
			out[i] = 1
		}
	}
	return out
}

// NABFileScore is the score of one file at one threshold.
type NABFileScore struct {
	Name  string
	Score float64 // raw score: best weight per window (or -FN if missed) plus every false detection's weight
	// Row counts over the non-probationary rows: a row is positive if it lies in a window and
	// detected if its score >= the threshold (the TP/TN/FP/FN columns of NAB's score tables).
	TP, TN, FP, FN int
	Total          int // all rows of the file, probationary ones included (NAB's Total_Count)
	Windows        int // scorable windows in the file
	// RowScores lays the score out per row as NAB v1.0 results files do (column S(t)_<profile>):
	// each window's contribution on its first row, each false detection's weight on its row, 0
	// elsewhere. It sums to Score.
	RowScores []float64
}

// NABResult is a detector's score on a set of files in one profile at one threshold.
type NABResult struct {
	Profile   Profile
	Threshold float64
	Files     []NABFileScore // in input order
	Score     float64        // raw corpus score: the sum of the file scores
	Null      float64        // score of a detector that never fires: -FN * windows
	Perfect   float64        // score of a perfect detector: TP * windows
	// Normalized is 100*(Score-Null)/(Perfect-Null): 100 = perfect, 0 = null. NaN without windows.
	Normalized            float64
	TP, TN, FP, FN, Total int // row counts summed over files (see NABFileScore)
	Windows               int
}

// ThresholdScore is one point of NAB's threshold sweep: the corpus score when every row with
// score >= Threshold is a detection.
type ThresholdScore struct {
	Threshold      float64
	Score          float64
	TP, TN, FP, FN int
}

// nabRow is one non-probationary row prepared for scoring.
type nabRow struct {
	file, row int
	score     float64 // anomaly score
	window    int     // global window id, or -1 outside every window
	sig       float64 // unweighted scaled sigmoid of the row's position
}

// nabPrepared holds the prepared rows of a set of files.
type nabPrepared struct {
	rows        []nabRow // file order, then row order
	windowFirst []int    // global window id -> its file's first row index
	windowFile  []int    // global window id -> file index
	fileWindows []int    // file index -> number of windows
}

// scaledSigmoid is NAB's scoring curve: 2/(1+exp(5y)) - 1, and -1 for y >= 3.
func scaledSigmoid(y float64) float64 {
	if y >= 3 {
		return -1
	}
	return 2*(1/(1+math.Exp(5*y))) - 1
}

// probationLen returns min(floor(0.15*n), 750) as NAB's sweeper computes it.
func probationLen(n int) float64 {
	return math.Min(math.Floor(NABProbation*float64(n)), NABProbation*5000)
}

// prepareNAB validates the files and computes every row's window and unweighted sigmoid, as NAB's
// Sweeper.calcSweepScore does.
func prepareNAB(files []NABFile) (*nabPrepared, error) {
	var errs []error
	p := &nabPrepared{fileWindows: make([]int, len(files))}
	for k, f := range files {
		if err := p.addFile(k, f); err != nil {
			errs = append(errs, fmt.Errorf("scoring: NAB file %d (%s): %w", k, f.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *nabPrepared) addFile(k int, f NABFile) error {
	n := len(f.Times)
	if len(f.Scores) != n {
		return fmt.Errorf("%d scores for %d rows", len(f.Scores), n)
	}
	index := make(map[int64]int, n)
	for i, t := range f.Times {
		if i > 0 && t.Before(f.Times[i-1]) {
			return fmt.Errorf("row %d: time %s is before the previous row's", i, t.Format(TimeLayout))
		}
		if math.IsNaN(f.Scores[i]) {
			return fmt.Errorf("row %d: anomaly score is NaN", i)
		}
		if _, dup := index[t.UnixNano()]; !dup {
			index[t.UnixNano()] = i
		}
	}
	// Window bounds as row indices.
	bounds := make([][2]int, len(f.Windows))
	for w, win := range f.Windows {
		l, okL := index[win.Start.UnixNano()]
		r, okR := index[win.End.UnixNano()]
		if !okL || !okR {
			return fmt.Errorf("window %d [%s, %s]: bound is not a row timestamp", w,
				win.Start.Format(TimeLayout), win.End.Format(TimeLayout))
		}
		if r < l || (w > 0 && l <= bounds[w-1][1]) {
			return fmt.Errorf("window %d [%s, %s]: reversed, or overlaps or precedes the previous window", w,
				win.Start.Format(TimeLayout), win.End.Format(TimeLayout))
		}
		bounds[w] = [2]int{l, r}
	}
	prob := probationLen(n)
	base := len(p.windowFirst)
	for w, b := range bounds {
		if float64(b[1]) < prob {
			return fmt.Errorf("window %d [%s, %s] lies inside the probationary period (first %v rows)", w,
				f.Windows[w].Start.Format(TimeLayout), f.Windows[w].End.Format(TimeLayout), prob)
		}
		p.windowFirst = append(p.windowFirst, b[0])
		p.windowFile = append(p.windowFile, k)
	}
	p.fileWindows[k] = len(bounds)

	cur := -1                     // current window index in this file, or -1
	prevRight, prevWidth := -1, 0 // last window passed
	next := 0                     // next window to enter
	for i := 0; i < n; i++ {
		if next < len(bounds) && i == bounds[next][0] {
			cur = next
			next++
		}
		var sig float64
		win := -1
		if cur >= 0 {
			width := float64(bounds[cur][1] - bounds[cur][0] + 1)
			sig = scaledSigmoid(-float64(bounds[cur][1]-i+1) / width)
			win = base + cur
		} else if prevRight < 0 || prevWidth <= 1 {
			// Before the first window, and (a case NAB divides by zero on) after a one-row window.
			sig = scaledSigmoid(3)
		} else {
			sig = scaledSigmoid(math.Abs(float64(prevRight-i)) / float64(prevWidth-1))
		}
		if float64(i) >= prob {
			p.rows = append(p.rows, nabRow{file: k, row: i, score: f.Scores[i], window: win, sig: sig})
		}
		if cur >= 0 && i == bounds[cur][1] {
			prevRight, prevWidth = i, bounds[cur][1]-bounds[cur][0]+1
			cur = -1
		}
	}
	return nil
}

// weight is the row's weighted score in profile pr (NAB's sweepScore).
func (r *nabRow) weight(pr Profile) float64 {
	if r.window >= 0 {
		return r.sig * pr.TP / scaledSigmoid(-1)
	}
	return r.sig * pr.FP
}

func validProfile(pr Profile) error {
	for _, v := range []float64{pr.TP, pr.FP, pr.FN} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("scoring: NAB profile %q: weights must be finite and >= 0, got tp=%v fp=%v fn=%v",
				pr.Name, pr.TP, pr.FP, pr.FN)
		}
	}
	return nil
}

// NAB scores a detector on files in profile pr with one threshold: a row is a detection if its
// score >= threshold. This is what NAB's scorer reports per file (the *_scores.csv tables) and,
// summed and normalised, in final_results.json. It does not retain files and is safe for
// concurrent use.
func NAB(files []NABFile, pr Profile, threshold float64) (NABResult, error) {
	if err := validProfile(pr); err != nil {
		return NABResult{}, err
	}
	p, err := prepareNAB(files)
	if err != nil {
		return NABResult{}, err
	}
	return p.score(files, pr, threshold), nil
}

func (p *nabPrepared) score(files []NABFile, pr Profile, threshold float64) NABResult {
	res := NABResult{Profile: pr, Threshold: threshold, Files: make([]NABFileScore, len(files))}
	for k, f := range files {
		res.Files[k] = NABFileScore{Name: f.Name, Windows: p.fileWindows[k], Total: len(f.Times),
			RowScores: make([]float64, len(f.Times))}
	}
	best := make([]float64, len(p.windowFirst))
	for w := range best {
		best[w] = -pr.FN
	}
	fp := make([]float64, len(files))
	for _, r := range p.rows {
		fs := &res.Files[r.file]
		detected := r.score >= threshold
		switch {
		case r.window >= 0 && detected:
			fs.TP++
			best[r.window] = math.Max(best[r.window], r.weight(pr))
		case r.window >= 0:
			fs.FN++
		case detected:
			fs.FP++
			wt := r.weight(pr)
			fp[r.file] += wt
			fs.RowScores[r.row] = wt
		default:
			fs.TN++
		}
	}
	for k := range res.Files {
		res.Files[k].Score = fp[k]
	}
	for w, b := range best {
		fs := &res.Files[p.windowFile[w]]
		fs.Score += b
		fs.RowScores[p.windowFirst[w]] = b
	}
	for _, fs := range res.Files {
		res.Score += fs.Score
		res.TP += fs.TP
		res.TN += fs.TN
		res.FP += fs.FP
		res.FN += fs.FN
		res.Total += fs.Total
		res.Windows += fs.Windows
	}
	res.Null, res.Perfect, res.Normalized = Normalize(res.Score, res.Windows, pr)
	return res
}

// Normalize returns the null and perfect scores of a corpus with the given number of windows and
// the normalised score 100*(score-null)/(perfect-null), which is NaN when windows is 0.
func Normalize(score float64, windows int, pr Profile) (null, perfect, normalized float64) {
	null, perfect = -pr.FN*float64(windows), pr.TP*float64(windows)
	if perfect == null {
		return null, perfect, math.NaN()
	}
	return null, perfect, 100 * (score - null) / (perfect - null)
}

// NABSweep runs NAB's threshold optimisation (Sweeper.calcScoreByThreshold over the rows of all
// files pooled): every distinct anomaly score is tried as a threshold, from 1.1 (no detection) down.
// It returns the result at the threshold with the highest corpus score (the highest threshold
// among equal scores) and the whole sweep in decreasing threshold order.
func NABSweep(files []NABFile, pr Profile) (NABResult, []ThresholdScore, error) {
	if err := validProfile(pr); err != nil {
		return NABResult{}, nil, err
	}
	p, err := prepareNAB(files)
	if err != nil {
		return NABResult{}, nil, err
	}
	rows := make([]nabRow, len(p.rows))
	copy(rows, p.rows)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].score > rows[j].score })

	parts := make([]float64, len(p.windowFirst))
	for w := range parts {
		parts[w] = -pr.FN
	}
	fpPart := 0.0
	total := func() float64 {
		s := fpPart
		for _, v := range parts {
			s += v
		}
		return s
	}
	var tp, fp, tn, fn int
	for _, r := range rows {
		if r.window >= 0 {
			fn++
		} else {
			tn++
		}
	}
	var sweep []ThresholdScore
	cur := 1.1
	for _, r := range rows {
		if r.score != cur {
			sweep = append(sweep, ThresholdScore{Threshold: cur, Score: total(), TP: tp, TN: tn, FP: fp, FN: fn})
			cur = r.score
		}
		if r.window >= 0 {
			tp++
			fn--
			parts[r.window] = math.Max(parts[r.window], r.weight(pr))
		} else {
			fp++
			tn--
			fpPart += r.weight(pr)
		}
	}
	sweep = append(sweep, ThresholdScore{Threshold: cur, Score: total(), TP: tp, TN: tn, FP: fp, FN: fn})

	best := 0
	for i, s := range sweep {
		if s.Score > sweep[best].Score {
			best = i
		}
	}
	return p.score(files, pr, sweep[best].Threshold), sweep, nil
}
