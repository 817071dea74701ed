package runtime

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/wasm"
)

// swapCard writes a variant of em's card, edited by edit, with model (nil: em's own model) as
// NAME.onnx beside it in a new folder, and returns the card's path.
func swapCard(t testing.TB, em *envModel, edit func(c *card.Card), model []byte) string {
	t.Helper()
	c := *em.card
	c.Features = append([]string(nil), c.Features...)
	c.Normalization = card.Normalization{Mean: append([]float64(nil), c.Normalization.Mean...), Std: append([]float64(nil), c.Normalization.Std...)}
	if edit != nil {
		edit(&c)
	}
	if model == nil {
		model = marshalScorer(t, len(c.Features)*c.Window, em.w, em.b)
	}
	path, err := card.Write(t.TempDir(), &c, model)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func marshalScorer(t testing.TB, n int, w, b []float32) []byte {
	t.Helper()
	m, err := onnx.ReconstructionScorer(n, w, b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestIntegrationModelSwap swaps the model of a running pipeline (a driver polling every 10 ms,
// the model node, a module scoring with the model through perch:infer/v1) back and forth between
// two models with the same features and window but another normalisation, weights and threshold,
// then to a model that scores NaN and back. Every reading after the first is scored or, under the
// NaN model, counted as dropped (no sample lost, no window restarted), each score is the one the
// model that scored it computes over the raw window (the carried window re-normalised), Health
// reports the NaN model's errors, and the module's calls never fail.
func TestIntegrationModelSwap(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	cfg, em := modelPipeline(t, "")
	for i := range cfg.Modules {
		if cfg.Modules[i].Name == "env" {
			cfg.Modules[i].Poll = config.Duration(10 * time.Millisecond)
		}
	}
	// B: |x|² of the window under another normalisation, threshold 50.
	zeroW, zeroB := make([]float32, 36), make([]float32, 6)
	pathA := em.path
	pathB := swapCard(t, em, func(c *card.Card) {
		c.Version = "2"
		c.Normalization = card.Normalization{Mean: []float64{20, 1000, 40}, Std: []float64{2, 5, 3}}
		c.Score.Threshold, c.Score.Clear = 50, 20
	}, marshalScorer(t, 6, zeroW, zeroB))
	nanW := make([]float32, 36)
	for i := range nanW {
		nanW[i] = float32(math.Inf(1))
	}
	pathNaN := swapCard(t, em, func(c *card.Card) { c.Version = "nan" }, marshalScorer(t, 6, nanW, zeroB))

	rt, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()

	time.Sleep(300 * time.Millisecond)
	swaps := 0
	var reps []ModelSwapReport
	for i := range 12 {
		path, want := pathB, "2"
		if i%2 == 1 {
			path, want = pathA, "1"
		}
		rep, err := rt.SwapModel(ctx, "env-ae", path)
		if err != nil {
			t.Fatalf("swap %d: %v", i, err)
		}
		swaps++
		reps = append(reps, rep)
		if h, err := rt.Health("env-ae"); err != nil || h.Version != want || !h.Up || h.Errors != 0 {
			t.Fatalf("swap %d: health %+v, %v", i, h, err)
		}
		time.Sleep(120 * time.Millisecond)
	}
	// The NaN model loads, but every score is an error that Health reports.
	if _, err := rt.SwapModel(ctx, "env-ae", pathNaN); err != nil {
		t.Fatal(err)
	}
	swaps++
	deadline := time.Now().Add(3 * time.Second)
	for {
		h, _ := rt.Health("env-ae")
		if h.Errors > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NaN model ran without errors: %+v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := rt.SwapModel(ctx, "env-ae", pathA); err != nil {
		t.Fatal(err)
	}
	swaps++
	if h, _ := rt.Health("env-ae"); h.Errors != 0 || h.Version != "1" || h.Swaps != uint64(swaps) {
		t.Errorf("after swapping back: %+v", h)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if r.Carried != 1 || r.Warming != 0 || r.Load <= 0 || r.Gap <= 0 {
			t.Errorf("swap report %+v: want the one stream carried", r)
		}
	}
	t.Logf("first swap: load %v, gap %v", reps[0].Load, reps[0].Gap)

	db := rt.Store().DB()
	rs := envReadings(t, db)
	if len(rs) < 100 {
		t.Fatalf("%d readings: the driver did not run under load", len(rs))
	}
	mm := rt.Metrics().Models[0]
	type ref struct {
		mean, std []float64
		w         []float32
	}
	cards := map[float64]ref{ // by threshold
		10: {em.card.Normalization.Mean, em.card.Normalization.Std, em.w},
		50: {[]float64{20, 1000, 40}, []float64{2, 5, 3}, zeroW},
	}
	byTime := map[int64]int{}
	for i, r := range rs {
		byTime[r.timeNS] = i
	}
	rows, err := db.Query(`SELECT time_ns, json_extract(fields, '$.score'), json_extract(fields, '$.threshold') FROM scores WHERE source = 'env-ae'`)
	if err != nil {
		t.Fatal(err)
	}
	got, bad, byModel := 0, 0, map[float64]int{}
	for rows.Next() {
		var ts int64
		var score, threshold float64
		if err := rows.Scan(&ts, &score, &threshold); err != nil {
			t.Fatal(err)
		}
		got++
		byModel[threshold]++
		i, ok := byTime[ts]
		c, known := cards[threshold]
		if !ok || i == 0 || !known {
			t.Fatalf("score at %d (threshold %v): no reading before it or an unknown model", ts, threshold)
		}
		x := make([]float32, 0, 6)
		for _, r := range rs[i-1 : i+1] {
			for j, v := range []float64{r.t, r.p, r.h} {
				x = append(x, float32((v-c.mean[j])/c.std[j]))
			}
		}
		want := float64(onnx.ReconstructionScore(x, c.w, zeroB))
		if math.Abs(score-want) > 1e-3*math.Max(1, math.Abs(want)) {
			if bad++; bad <= 5 {
				t.Errorf("score at %d (threshold %v): %v, want %v", ts, threshold, score, want)
			}
		}
	}
	rows.Close()
	if got+int(mm.Dropped) != len(rs)-1 || mm.Warming != 1 {
		t.Errorf("%d scores + %d dropped (NaN) for %d readings, warming %d: want every reading after the first",
			got, mm.Dropped, len(rs), mm.Warming)
	}
	if byModel[10] == 0 || byModel[50] == 0 || mm.Dropped == 0 {
		t.Errorf("scores by threshold %v, dropped %d: a model never scored", byModel, mm.Dropped)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind = ?`, EventModelSwapped); n != swaps {
		t.Errorf("%d model.swapped events, want %d", n, swaps)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM scores WHERE source = 'sc' AND json_extract(fields, '$.errno') != 0`); n != 0 {
		t.Errorf("the infer guest got %d errors across the swaps", n)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM scores WHERE source = 'sc'`); n < len(rs)/2-1 {
		t.Errorf("the infer guest scored %d rows for %d readings", n, len(rs))
	}
	t.Logf("%d readings, %d scores (%v by threshold), %d dropped under the NaN model, %d swaps", len(rs), got, byModel, mm.Dropped, swaps)
}

// TestModelSwapRefused: a model that does not load, whose card does not match it, whose
// features the node's fields do not map, or whose row width changes while a module scores with
// the model is refused with ErrSwapRefused, and the old model keeps scoring.
func TestModelSwapRefused(t *testing.T) {
	mn := testModelNode(t, 16)
	mn.cfg.Fields = map[string]string{"humidity_pct": "humidity_pct"}
	mn.publish()
	mn.rt.models = []*modelNode{mn}
	mn.rt.nodes = []*node{{mod: &config.Module{Name: "sc"}, spec: wasm.Spec{Grants: wasm.Grants{Models: []wasm.Model{{Name: "env-ae"}}}}}}
	em := &envModel{card: mn.cfg.Loaded, path: mn.cfg.Card, w: make([]float32, 36), b: make([]float32, 6)}
	four := marshalScorer(t, 4, make([]float32, 16), make([]float32, 4))
	changed := swapCard(t, em, nil, nil)
	if err := os.WriteFile(filepath.Join(filepath.Dir(changed), "env-ae.onnx"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, model, path, want string
	}{
		{"no such model", "nope", em.path, `no model "nope"`},
		{"not onnx", "env-ae", swapCard(t, em, nil, []byte("not an onnx model")), "ort: inspect model"},
		{"rows do not match the card", "env-ae", swapCard(t, em, nil, four), "takes rows of 4 values"},
		{"digest does not match", "env-ae", changed, "the card says"},
		{"missing card", "env-ae", filepath.Join(t.TempDir(), "x.card.yaml"), "no such file"},
		{"fields do not map the features", "env-ae", swapCard(t, em, func(c *card.Card) {
			c.Features, c.Window = []string{"temperature_c", "pressure_hpa"}, 3
			c.Normalization = card.Normalization{Mean: []float64{0, 0}, Std: []float64{1, 1}}
		}, nil), `maps feature "humidity_pct"`},
		{"width changes under a module", "env-ae", swapCard(t, em, func(c *card.Card) { c.Window = 1 }, marshalScorer(t, 3, make([]float32, 9), make([]float32, 3))),
			"modules score rows of 6 values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := mn.samples.Load()
			_, err := mn.rt.SwapModel(context.Background(), tc.model, tc.path)
			if !errors.Is(err, ErrSwapRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrSwapRefused with %q", err, tc.want)
			}
			if h, err := mn.rt.Health("env-ae"); err != nil || !h.Up || h.Version != "1" || h.Swaps != 0 {
				t.Fatalf("after the refusal: %+v, %v", h, err)
			}
			mn.process(context.Background(), envBatch(64, 1))
			if mn.samples.Load() == before {
				t.Error("the old model stopped scoring")
			}
		})
	}
}
