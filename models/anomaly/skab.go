package anomaly

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/scoring"
)

// SKABTrainRows is the SKAB protocol's per-file training split: the first 400 rows.
const SKABTrainRows = 400

// SKABGroups are the SKAB data folders that hold labelled experiments.
var SKABGroups = []string{"valve1", "valve2", "other"}

// SKABFiles lists the experiment files under dir/{valve1,valve2,other}, in a fixed order.
func SKABFiles(dir string) ([]string, error) {
	var files []string
	for _, g := range SKABGroups {
		ents, err := os.ReadDir(filepath.Join(dir, g))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("anomaly: skab: %w", err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".csv") {
				files = append(files, filepath.Join(dir, g, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("anomaly: skab: no experiment files under %s/{%s}: %w", dir, strings.Join(SKABGroups, ","), fs.ErrNotExist)
	}
	slices.Sort(files)
	return files, nil
}

// Counts are pointwise confusion counts.
type Counts struct{ TP, FP, TN, FN int }

// Add accumulates one prediction against its label.
func (c *Counts) Add(pred, label bool) {
	switch {
	case pred && label:
		c.TP++
	case pred:
		c.FP++
	case label:
		c.FN++
	default:
		c.TN++
	}
}

// F1 is TP / (TP + (FP+FN)/2) (0 when there is nothing to find and nothing found).
func (c Counts) F1() float64 {
	d := float64(c.TP) + float64(c.FP+c.FN)/2
	if d == 0 {
		return 0
	}
	return float64(c.TP) / d
}

// FAR is the false alarm rate FP / (FP + TN), a fraction.
func (c Counts) FAR() float64 { return ratio(c.FP, c.FP+c.TN) }

// MAR is the missed alarm rate FN / (FN + TP), a fraction.
func (c Counts) MAR() float64 { return ratio(c.FN, c.FN+c.TP) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// ScoreFunc scores one normalised input row.
type ScoreFunc func(row []float32) (float64, error)

// Runner returns the ScoreFunc for a detector at a precision (card.FP32 or card.Int8) and a
// function that releases it. [NativeRunner] scores in Go; the ONNX Runtime runner lives with
// the caller (this package does not load the library).
type Runner func(d *Detector, precision string) (ScoreFunc, func(), error)

// NativeRunner scores with [Detector.Score] (fp32 only).
func NativeRunner(d *Detector, precision string) (ScoreFunc, func(), error) {
	if precision != card.FP32 {
		return nil, nil, fmt.Errorf("anomaly: native runner scores fp32 only, not %q", precision)
	}
	return func(row []float32) (float64, error) { return d.Score(row), nil }, func() {}, nil
}

// FileResult is one SKAB file's outcome.
type FileResult struct {
	Path string
	Counts
}

// SKABResult is a pooled SKAB outlier-detection evaluation.
type SKABResult struct {
	Counts
	Files []FileResult
}

// EvaluateSKAB runs the SKAB outlier-detection protocol on every experiment under
// dir/{valve1,valve2,other}: per file, Fit on its first [SKABTrainRows] rows with opts, then feed
// every row in order through the card's Feeder, run's score and the card's Alarm, causally, one
// row at a time; the training rows only warm the feeder and the alarm up, and the prediction for
// each test row is whether the alarm is active after it. Counts are pooled over files
// (micro-average). run nil means [NativeRunner].
func EvaluateSKAB(dir string, opts Options, precision string, run Runner) (*SKABResult, error) {
	if run == nil {
		run = NativeRunner
	}
	paths, err := SKABFiles(dir)
	if err != nil {
		return nil, err
	}
	res := &SKABResult{}
	for _, p := range paths {
		f, err := scoring.ReadSKAB(p)
		if err != nil {
			return nil, err
		}
		fr, err := evaluateFile(f, opts, precision, run)
		if err != nil {
			return nil, fmt.Errorf("anomaly: skab: %s: %w", p, err)
		}
		res.Files = append(res.Files, fr)
		res.TP += fr.TP
		res.FP += fr.FP
		res.TN += fr.TN
		res.FN += fr.FN
	}
	return res, nil
}

func evaluateFile(f *scoring.Table, opts Options, precision string, run Runner) (FileResult, error) {
	fr := FileResult{Path: f.Path}
	if f.Len() <= SKABTrainRows || len(f.Anomaly) != f.Len() {
		return fr, fmt.Errorf("%d labelled rows: needs more than %d", len(f.Anomaly), SKABTrainRows)
	}
	d, err := Fit(f.Values[:SKABTrainRows], f.Columns, opts)
	if err != nil {
		return fr, err
	}
	c := d.Card("skab", precision)
	score, release, err := run(d, precision)
	if err != nil {
		return fr, err
	}
	defer release()
	feed, alarm := c.NewFeeder(), c.NewAlarm()
	row := make([]float32, c.Inputs())
	for i, s := range f.Values {
		feed.Push(s)
		raw, err := score(feed.Row(row))
		if err != nil {
			return fr, fmt.Errorf("row %d: %w", i, err)
		}
		_, active, _ := alarm.Step(raw)
		if i >= SKABTrainRows {
			fr.Add(active, f.Anomaly[i])
		}
	}
	return fr, nil
}
