// Package evaluate scores anomaly models on labelled datasets the way the box runs them: for
// each file it fits a model (models/anomaly), writes the artifact (ONNX + card), and plays the
// file through a real pipeline — a replay device (hal/replay), the replay driver module (Wasm)
// and a model node (ONNX Runtime, card feeder, likelihood and alarm) — causally, one row at a
// time, as fast as it goes; then it reads the scores back from the recorder and hands them to
// the protocol's scorer (models/scoring).
//
// SKAB: per file, fit on the first 400 rows, predict with the alarm's state on the rest, pooled
// F1, FAR, MAR and the changepoint NAB scores. NAB: per file, fit on the probationary rows, score
// every row with the likelihood, one threshold swept across files per profile.
package evaluate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/perch-edge/perch/models/anomaly"
	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/scoring"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

// Env says where the pipeline's parts are.
type Env struct {
	// ReplayWasm is the replay driver module (build/modules/replay.wasm, its manifest beside it).
	ReplayWasm string
	// Work is where each evaluation makes its folder (models, recorders, compile cache); the
	// system's temporary folder if empty. The folder is removed when the evaluation returns.
	Work string
	// ONNXRuntime is the library path; empty: $PERCH_ORT_LIB, then `make ort`'s cache.
	ONNXRuntime string
}

// SKABResult is the SKAB protocol's outcome through the runtime.
type SKABResult struct {
	scoring.SKABResult
	Files     int
	Precision string
	ModelSize int // bytes of the last file's .onnx (every file's model has the same shape)
}

// SKAB evaluates opts on the SKAB files under dir (valve1, valve2, other).
func SKAB(ctx context.Context, dir string, opts anomaly.Options, precision string, env Env) (*SKABResult, error) {
	paths, err := anomaly.SKABFiles(dir)
	if err != nil {
		return nil, err
	}
	work, done, err := env.work()
	if err != nil {
		return nil, err
	}
	defer done()
	res := &SKABResult{Precision: precision}
	var files []scoring.SKABFile
	for i, path := range paths {
		t, err := scoring.ReadSKAB(path)
		if err != nil {
			return nil, err
		}
		if t.Len() <= anomaly.SKABTrainRows {
			return nil, fmt.Errorf("evaluate: %s: %d rows, want more than %d", path, t.Len(), anomaly.SKABTrainRows)
		}
		d, err := anomaly.Fit(t.Values[:anomaly.SKABTrainRows], t.Columns, opts)
		if err != nil {
			return nil, fmt.Errorf("evaluate: %s: %w", path, err)
		}
		c := d.Card(fmt.Sprintf("skab-%d", i), precision)
		model, err := d.ONNX(precision)
		if err != nil {
			return nil, err
		}
		res.ModelSize = len(model)
		fdir := filepath.Join(work, fmt.Sprintf("skab-%d", i))
		scores, err := env.play(ctx, fdir, path, "skab", t, c, model)
		if err != nil {
			return nil, fmt.Errorf("evaluate: %s: %w", path, err)
		}
		f := scoring.SKABFile{Name: path, Times: t.Times[anomaly.SKABTrainRows:], Anomaly: t.Anomaly[anomaly.SKABTrainRows:],
			Changepoint: t.Changepoint[anomaly.SKABTrainRows:], Predicted: make([]bool, t.Len()-anomaly.SKABTrainRows)}
		for row := anomaly.SKABTrainRows; row < t.Len(); row++ {
			f.Predicted[row-anomaly.SKABTrainRows] = scores[row].active
		}
		files = append(files, f)
	}
	r, err := scoring.SKAB(files, scoring.SKABOptions{})
	if err != nil {
		return nil, err
	}
	res.SKABResult, res.Files = r, len(files)
	return res, nil
}

// NABResult is the NAB protocol's outcome through the runtime: the sweep's best result per
// profile.
type NABResult struct {
	Files     int
	Precision string
	Profiles  map[string]scoring.NABResult // by profile name
}

// NAB evaluates opts on the NAB files under dir (data/<category>/*.csv, labels/).
func NAB(ctx context.Context, dir string, opts anomaly.NABOptions, env Env) (*NABResult, error) {
	series, err := anomaly.ReadNABDir(dir)
	if err != nil {
		return nil, err
	}
	work, done, err := env.work()
	if err != nil {
		return nil, err
	}
	defer done()
	if opts.Precision == "" {
		opts.Precision = card.FP32
	}
	var files []scoring.NABFile
	for i, s := range series {
		d, err := anomaly.FitNAB(s.Values, opts)
		if err != nil {
			return nil, fmt.Errorf("evaluate: %s: %w", s.Name, err)
		}
		c := d.Card(fmt.Sprintf("nab-%d", i), opts.Precision)
		post := opts.Post
		c.Score = card.Score{Likelihood: &post, Smooth: 1, Threshold: 0.5, Clear: 0.5, Consecutive: 1}
		model, err := d.ONNX(opts.Precision)
		if err != nil {
			return nil, err
		}
		t := &scoring.Table{Path: s.Name, Times: s.Times, Columns: []string{anomaly.NABFeature}}
		path := filepath.Join(dir, "data", filepath.FromSlash(s.Name))
		scores, err := env.play(ctx, filepath.Join(work, fmt.Sprintf("nab-%d", i)), path, "nab", t, c, model)
		if err != nil {
			return nil, fmt.Errorf("evaluate: %s: %w", s.Name, err)
		}
		f := scoring.NABFile{Name: s.Name, Times: s.Times, Windows: s.Windows, Scores: make([]float64, len(s.Times))}
		for row := range f.Scores {
			f.Scores[row] = scores[row].score
		}
		files = append(files, f)
	}
	res := &NABResult{Files: len(files), Precision: opts.Precision, Profiles: map[string]scoring.NABResult{}}
	for _, p := range scoring.NABProfiles() {
		best, _, err := scoring.NABSweep(files, p)
		if err != nil {
			return nil, err
		}
		res.Profiles[p.Name] = best
	}
	return res, nil
}

// rowScore is what the model node said about one row.
type rowScore struct {
	score  float64 // the score record's score (after the likelihood, if any)
	active bool    // the alarm's state after the row
}

// play writes the model artifact into dir and plays the file at path (format skab or nab,
// already read as t) through replay device → replay driver → model node. It returns one score
// per row of t; rows before the model's window was full score 0, inactive.
func (env Env) play(ctx context.Context, dir, path, format string, t *scoring.Table, c *card.Card, model []byte) ([]rowScore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cardPath, err := card.Write(dir, c, model)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	cols, err := json.Marshal(c.Features)
	if err != nil {
		return nil, err
	}
	engine := fmt.Sprintf("{cache_dir: %q}", filepath.Join(filepath.Dir(dir), "cache"))
	if env.ONNXRuntime != "" {
		engine = fmt.Sprintf("{cache_dir: %q, onnxruntime: %q}", filepath.Join(filepath.Dir(dir), "cache"), env.ONNXRuntime)
	}
	text := fmt.Sprintf(`site: eval
device: eval
store: {path: %q, max_age: 1000000h}
engine: %s
devices:
  - {name: data, backend: replay, port: replay0, file: %q, format: %s, columns: %s, speed: 0}
modules:
  - name: read
    wasm: %q
    poll: 1ms
    poll_max_records: 256
    deadline: 5s
    grants: {uart: [{port: replay0}], state: true}
    config: {port: replay0, series: data}
models:
  - name: model
    card: %q
    inputs: [read]
    series: data
`, filepath.Join(dir, "perch.db"), engine, abs, format, cols, env.ReplayWasm, cardPath)
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(text))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eof := make(chan struct{})
	rt, err := runtime.New(ctx, cfg, runtime.Options{OnRecords: func(module string, batch []byte) {
		if module != "read" {
			return
		}
		it := abi.Iter{Buf: batch}
		for it.Next() {
			if it.Rec.Kind == abi.KindEvent && string(it.Rec.Series) == "replay.eof" {
				select {
				case <-eof:
				default:
					close(eof)
				}
			}
		}
	}})
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	done := make(chan error, 1)
	go func() { done <- rt.Run(rctx) }()
	select {
	case <-eof:
	case err := <-done:
		return nil, fmt.Errorf("the pipeline stopped before the end of the file: %v", err)
	case <-ctx.Done():
		cancel()
		<-done
		return nil, ctx.Err()
	}
	cancel() // the driver stops; what it emitted drains through the model
	if err := <-done; err != nil {
		return nil, err
	}
	for _, m := range rt.Metrics().Models {
		if m.Error != "" {
			return nil, fmt.Errorf("model: %s", m.Error)
		}
	}
	return readScores(rt, t, c.Window)
}

// readScores reads the model's score records back from the recorder, in order, and lines them
// up with the rows of t: the first window−1 rows have none.
func readScores(rt *runtime.Runtime, t *scoring.Table, window int) ([]rowScore, error) {
	rows, err := rt.Store().DB().Query(`SELECT time_ns, json_extract(fields, '$.score'), json_extract(fields, '$.active')
		FROM scores WHERE source = 'model' ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]rowScore, t.Len())
	row := window - 1
	for rows.Next() {
		var ns int64
		var score, active float64
		if err := rows.Scan(&ns, &score, &active); err != nil {
			return nil, err
		}
		if row >= t.Len() {
			return nil, fmt.Errorf("more scores than rows (%d)", t.Len())
		}
		if want := t.Times[row].UnixNano(); ns != want {
			return nil, fmt.Errorf("score %d is for %s, row %d is at %s", row-window+1, time.Unix(0, ns).UTC(), row, t.Times[row].UTC())
		}
		if math.IsNaN(score) {
			return nil, fmt.Errorf("row %d: score NaN", row)
		}
		out[row] = rowScore{score: score, active: active == 1}
		row++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if row != t.Len() {
		return nil, fmt.Errorf("%d scores for %d rows (window %d): the pipeline lost rows", row-window+1, t.Len(), window)
	}
	return out, nil
}

func (env Env) work() (string, func(), error) {
	if env.ReplayWasm == "" {
		return "", nil, errors.New("evaluate: no replay module")
	}
	if env.Work != "" {
		if err := os.MkdirAll(env.Work, 0o755); err != nil {
			return "", nil, err
		}
	}
	dir, err := os.MkdirTemp(env.Work, "perch-eval-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// Summary is the one JSON object `perch model eval --json` prints.
type Summary struct {
	Protocol  string  `json:"protocol"`
	Precision string  `json:"precision"`
	Files     int     `json:"files"`
	F1        float64 `json:"f1"`
	FAR       float64 `json:"far"` // percent
	MAR       float64 `json:"mar"` // percent
	// NABStandard is the changepoint NAB score (SKAB) or the normalised NAB score (NAB), standard
	// profile; the others are the low-FP and low-FN profiles.
	NABStandard float64 `json:"nab_standard"`
	NABLowFP    float64 `json:"nab_low_fp"`
	NABLowFN    float64 `json:"nab_low_fn"`
	Threshold   float64 `json:"threshold,omitempty"` // NAB: the swept threshold (standard profile)
	ModelBytes  int     `json:"model_bytes,omitempty"`
	Seconds     float64 `json:"seconds"`
}

// Summary of a SKAB result.
func (r *SKABResult) Summary() Summary {
	return Summary{Protocol: "skab", Precision: r.Precision, Files: r.Files, F1: r.F1, FAR: r.FAR, MAR: r.MAR,
		NABStandard: r.NABStandard, NABLowFP: r.NABLowFP, NABLowFN: r.NABLowFN, ModelBytes: r.ModelSize}
}

// Summary of a NAB result. F1, FAR and MAR are those of the standard profile's detections at its
// threshold, row by row against the windows.
func (r *NABResult) Summary() Summary {
	s := Summary{Protocol: "nab", Precision: r.Precision, Files: r.Files}
	for name, p := range r.Profiles {
		switch {
		case strings.Contains(name, "low_FP"):
			s.NABLowFP = p.Normalized
		case strings.Contains(name, "low_FN"):
			s.NABLowFN = p.Normalized
		default:
			s.NABStandard, s.Threshold = p.Normalized, p.Threshold
			if d := float64(p.TP) + float64(p.FP+p.FN)/2; d > 0 {
				s.F1 = float64(p.TP) / d
			}
			if p.FP+p.TN > 0 {
				s.FAR = 100 * float64(p.FP) / float64(p.FP+p.TN)
			}
			if p.FN+p.TP > 0 {
				s.MAR = 100 * float64(p.FN) / float64(p.FN+p.TP)
			}
		}
	}
	return s
}
