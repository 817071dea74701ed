package runtime

import (
	"context"
	"database/sql"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

// envModel is the model of the tests: the squared distance of the normalised window (the
// BME280's three fields, two samples) from its projection on the all-ones direction. Constant
// signals at their means score 0; a temperature step of 12 (std 1) scores 192 once the window
// holds it twice.
type envModel struct {
	card *card.Card
	path string // the card's path
	w, b []float32
}

func writeEnvModel(t testing.TB, dir string) *envModel {
	t.Helper()
	const n = 6
	w := make([]float32, n*n)
	for i := range w {
		w[i] = 1.0 / n
	}
	b := make([]float32, n)
	m, err := onnx.ReconstructionScorer(n, w, b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c := &card.Card{Name: "env-ae", Version: "1", Precision: card.FP32, Detector: "test-projection",
		Features: []string{"temperature_c", "pressure_hpa", "humidity_pct"}, Window: 2,
		Normalization: card.Normalization{Mean: []float64{22, 1013.25, 45}, Std: []float64{1, 1, 1}},
		Score:         card.Score{Smooth: 2, Threshold: 10, Clear: 5, Consecutive: 2},
		Training:      card.Training{Data: "constant", Rows: 1}}
	path, err := card.Write(dir, c, raw)
	if err != nil {
		t.Fatal(err)
	}
	return &envModel{card: c, path: path, w: w, b: b}
}

// buildInfer compiles the perch:infer/v1 test guest (runtime/testdata/infer) into dir, with its
// manifest beside it, with the flags `make modules` uses.
func buildInfer(t testing.TB, dir string) string {
	t.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang is needed to build the infer test guest (run `make deps`): %v", err)
	}
	out := filepath.Join(dir, "infer.wasm")
	cmd := exec.Command(clang, "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-mbulk-memory", "-std=c11",
		"-Wall", "-Wextra", "-Werror", "-I../sdk/c", "-Wl,--strip-all", "-o", out, "testdata/infer/wasm/infer.c")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the infer guest: %v\n%s", err, b)
	}
	mf, err := os.ReadFile("testdata/infer/manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config.ManifestPath(out), mf, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// builtModule returns build/modules/NAME.wasm (made by `make modules`), failing with a hint.
func builtModule(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "build", "modules", name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run `make modules` first", p)
	}
	return p
}

// modelPipelineConfig is sim BME280 -> driver -> model env-ae -> relay actuator, and the driver ->
// infer guest (granted env-ae). The temperature steps up by 12 from 1 s to 4 s.
const modelPipelineConfig = `site: test
device: sim-01
engine:
  onnxruntime: "ORTLIB"
devices:
  - name: env0
    backend: sim
    type: bme280
    bus: 1
    address: 0x76
    signals:
      temperature:
        sum:
          - {shape: constant, value: 22}
          - {shape: spike, value: 0, amplitude: 12, at: 1s, width: 3s}
      pressure: {shape: constant, value: 1013.25}
      humidity: {shape: constant, value: 45}
  - name: pump
    backend: sim
    type: relay
    line: 22
models:
  - name: env-ae
    card: CARD
    inputs: [env]
    series: environment
    batch: 16
modules:
  - name: env
    wasm: BUILD/bme280.wasm
    deadline: 1s
    poll: 50ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: sc
    wasm: INFER
    deadline: 1s
    inputs: [env]
    grants: {models: [env-ae]}
    config: {model: env-ae}
  - name: pump-relay
    wasm: BUILD/relay.wasm
    deadline: 1s
    inputs: [env-ae]
    grants:
      gpio: [{line: 22, mode: out}]
    config: {line: 22}
`

func modelPipeline(t *testing.T, ortLib string) (*config.Config, *envModel) {
	t.Helper()
	dir := t.TempDir()
	em := writeEnvModel(t, dir)
	text := strings.NewReplacer("ORTLIB", ortLib, "CARD", em.path, "INFER", buildInfer(t, dir),
		"BUILD/", filepath.Dir(builtModule(t, "bme280"))+"/").Replace(modelPipelineConfig)
	builtModule(t, "relay")
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	return cfg, em
}

func runModelPipeline(t *testing.T, cfg *config.Config, d time.Duration) *Runtime {
	t.Helper()
	rt, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := rt.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return rt
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

type reading struct {
	timeNS  int64
	t, p, h float64
}

func envReadings(t *testing.T, db *sql.DB) []reading {
	t.Helper()
	rows, err := db.Query(`SELECT time_ns, json_extract(fields, '$.temperature_c'), json_extract(fields, '$.pressure_hpa'),
		json_extract(fields, '$.humidity_pct') FROM readings WHERE source = 'env' ORDER BY time_ns, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []reading
	for rows.Next() {
		var r reading
		if err := rows.Scan(&r.timeNS, &r.t, &r.p, &r.h); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func near(got, want float64) bool { return math.Abs(got-want) <= 1e-4*math.Max(1, math.Abs(want)) }

// TestIntegrationModelPipeline runs the model node on the real ONNX Runtime between a driver on
// a simulated BME280 and a relay actuator, with a module scoring through perch:infer/v1 beside
// it, and checks what lands in the SQLite recorder: every score against the same model computed
// in Go over the recorded readings (card.Feeder, onnx.ReconstructionScore, card.Alarm), one
// raised and one cleared alert for the step, the relay switched on and off by them, and the
// infer guest's scores.
func TestIntegrationModelPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	cfg, em := modelPipeline(t, "")
	rt := runModelPipeline(t, cfg, 5500*time.Millisecond)
	db := rt.Store().DB()

	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind = ?`, EventModelStarted); n != 1 {
		t.Fatalf("model.started events: %d, want 1", n)
	}
	rs := envReadings(t, db)
	if len(rs) < 50 {
		t.Fatalf("readings: %d, want at least 50 (poll every 50 ms for 5.5 s)", len(rs))
	}
	// The model's scores, recomputed natively in sample order.
	type want struct{ score, smoothed float64 }
	wants := map[int64]want{}
	feed, alarm := em.card.NewFeeder(), em.card.NewAlarm()
	row := make([]float32, em.card.Inputs())
	raised, cleared := 0, 0
	for _, r := range rs {
		feed.Push([]float64{r.t, r.p, r.h})
		if !feed.Ready() {
			continue
		}
		s := float64(onnx.ReconstructionScore(feed.Row(row), em.w, em.b))
		sm, active, changed := alarm.Step(s)
		wants[r.timeNS] = want{s, sm}
		if changed && active {
			raised++
		} else if changed {
			cleared++
		}
	}
	if raised != 1 || cleared != 1 {
		t.Fatalf("the native computation raises %d and clears %d times: the test's step is wrong", raised, cleared)
	}
	rows, err := db.Query(`SELECT time_ns, json_extract(fields, '$.score'), json_extract(fields, '$.smoothed'),
		json_extract(fields, '$.threshold'), json_extract(tags, '$.source'), series FROM scores WHERE source = 'env-ae'`)
	if err != nil {
		t.Fatal(err)
	}
	got, bad, peak := 0, 0, 0.0
	for rows.Next() {
		var ts int64
		var score, smoothed, threshold float64
		var src, series string
		if err := rows.Scan(&ts, &score, &smoothed, &threshold, &src, &series); err != nil {
			t.Fatal(err)
		}
		got++
		w, ok := wants[ts]
		if !ok || !near(score, w.score) || !near(smoothed, w.smoothed) || threshold != 10 || src != "env" || series != "environment" {
			if bad++; bad <= 5 {
				t.Errorf("score at %d: %v %v %v %s %s, want %+v (found %v)", ts, score, smoothed, threshold, src, series, w, ok)
			}
		}
		peak = max(peak, score)
	}
	rows.Close()
	if got != len(wants) {
		t.Errorf("%d score records, want one per reading after the first: %d", got, len(wants))
	}
	if peak < 150 {
		t.Errorf("peak score %v: the step did not reach the model", peak)
	}
	for state, n := range map[string]int{"raised": 1, "cleared": 1} {
		if c := queryInt(t, db, `SELECT count(*) FROM alerts WHERE source = 'env-ae' AND json_extract(tags, '$.state') = ?
			AND json_extract(tags, '$.field') = 'score' AND json_extract(tags, '$.source') = 'env' AND json_extract(tags, '$.direction') = 'above'
			AND severity = 'warning' AND message = 'env-ae anomaly score above 10' AND json_extract(fields, '$.threshold') = 10`, state); c != n {
			t.Errorf("%s alerts: %d, want %d", state, c, n)
		}
	}
	// The relay followed the model's alerts.
	if on := queryInt(t, db, `SELECT count(*) FROM events WHERE module = 'pump-relay' AND json_extract(tags, '$.action') = 'on'
		AND json_extract(tags, '$.alert_source') = 'env-ae'`); on != 1 {
		t.Errorf("relay on events: %d, want 1", on)
	}
	if off := queryInt(t, db, `SELECT count(*) FROM events WHERE module = 'pump-relay' AND json_extract(tags, '$.action') = 'off'`); off != 1 {
		t.Errorf("relay off events: %d, want 1", off)
	}
	if relay := rt.SimDevice("pump").(*sim.Relay); relay.Level() || len(relay.Changes()) != 2 {
		t.Errorf("relay level %v after %v: want on then off", relay.Level(), relay.Changes())
	}
	// The infer guest: rows of two consecutive raw readings, scored as written.
	scRows, err := db.Query(`SELECT time_ns, json_extract(fields, '$.score'), json_extract(fields, '$.errno') FROM scores WHERE source = 'sc' ORDER BY time_ns`)
	if err != nil {
		t.Fatal(err)
	}
	byTime := map[int64]float64{}
	for k := 1; k < len(rs); k += 2 {
		a, b := rs[k-1], rs[k]
		x := []float32{float32(a.t), float32(a.p), float32(a.h), float32(b.t), float32(b.p), float32(b.h)}
		byTime[b.timeNS] = float64(onnx.ReconstructionScore(x, em.w, em.b))
	}
	scN := 0
	for scRows.Next() {
		var ts int64
		var score, errno float64
		if err := scRows.Scan(&ts, &score, &errno); err != nil {
			t.Fatal(err)
		}
		scN++
		if w, ok := byTime[ts]; !ok || errno != 0 || !near(score, w) {
			t.Errorf("infer guest score at %d: %v errno %v, want %v (found %v)", ts, score, errno, w, ok)
		}
	}
	scRows.Close()
	if scN != len(rs)/2 {
		t.Errorf("infer guest: %d scores, want %d (one per two readings)", scN, len(rs)/2)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind IN ('module.fault', ?, ?)`, EventModelFailed, EventModelError); n != 0 {
		t.Errorf("%d fault or model failure events", n)
	}
	// Metrics: one run per batch the model took (the driver's batches hold one reading).
	mm := rt.Metrics().Models
	if len(mm) != 1 || !mm[0].Available || mm[0].Samples != uint64(got) || mm[0].Alerts != 2 || mm[0].Streams != 1 ||
		mm[0].Inference.Count < uint64(got)/16 || mm[0].Rows != uint64(got+scN) || mm[0].Inference.Sum <= 0 {
		t.Errorf("model metrics: %+v (scores %d, infer %d)", mm, got, scN)
	}
}

// TestIntegrationModelMissingLibrary points the ONNX Runtime library at a missing file: the model
// node fails with an event that says so, the module granted the model gets ENODEV, and the rest
// of the pipeline records its readings and runs the relay module.
func TestIntegrationModelMissingLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	missing := filepath.Join(t.TempDir(), "nothing", "libonnxruntime.so.1")
	cfg, _ := modelPipeline(t, missing)
	rt := runModelPipeline(t, cfg, 2*time.Second)
	db := rt.Store().DB()
	if n := queryInt(t, db, `SELECT count(*) FROM readings WHERE source = 'env'`); n < 15 {
		t.Errorf("readings: %d, want at least 15 (poll every 50 ms for 2 s)", n)
	}
	var msg string
	if err := db.QueryRow(`SELECT message FROM events WHERE kind = ? AND module = 'env-ae'`, EventModelFailed).Scan(&msg); err != nil {
		t.Fatalf("model.failed event: %v", err)
	}
	if !strings.Contains(msg, missing) || !strings.Contains(msg, "ONNX Runtime library not found") {
		t.Errorf("model.failed message %q does not name the missing library", msg)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM scores WHERE source = 'env-ae'`); n != 0 {
		t.Errorf("%d scores from a model that failed", n)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM scores WHERE source = 'sc' AND json_extract(fields, '$.errno') = ?`, int(abi.ENODEV)); n < 10 {
		t.Errorf("infer guest: %d ENODEV records, want one per reading", n)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind = 'module.started'`); n != 3 {
		t.Errorf("module.started events: %d, want 3", n)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault'`); n != 0 {
		t.Errorf("module.fault events: %d", n)
	}
	mm := rt.Metrics().Models
	if len(mm) != 1 || mm[0].Available || !strings.Contains(mm[0].Error, missing) || mm[0].Dropped == 0 || mm[0].Samples != 0 {
		t.Errorf("model metrics: %+v", mm)
	}
}

// testModelNode makes a model node for env-ae outside a pipeline: its output is neither recorded
// nor passed on.
func testModelNode(t testing.TB, batch int) *modelNode {
	t.Helper()
	em := writeEnvModel(t, t.TempDir())
	no := false
	m := &config.Model{Name: "env-ae", Card: em.path, Batch: batch, IntraOpThreads: 1, Severity: "warning", Record: &no,
		Loaded: em.card, FieldNames: em.card.Features}
	r := &Runtime{cfg: &config.Config{}, opts: Options{}}
	r.opts.defaults()
	r.log = r.opts.Logger
	mn := r.newModel(m)
	if mn.err != nil {
		t.Fatal(mn.err)
	}
	t.Cleanup(func() { mn.close() })
	return mn
}

// envBatch is n readings of 4 sources, the temperature alternating around the step.
func envBatch(n int, t0 int64) []byte {
	var b abi.Builder
	for i := range n {
		b.Begin(abi.KindReading, t0+int64(i), []string{"a", "b", "c", "d"}[i%4], "environment")
		b.Field("temperature_c", 22+12*float64(i/32%2))
		b.Field("pressure_hpa", 1013.25)
		b.Field("humidity_pct", 45)
		b.End()
	}
	return b.Buf
}

// TestModelNodeAllocs checks that a batch in steady state allocates nothing: the rows, scores and
// output are preallocated, and the streams' states exist.
func TestModelNodeAllocs(t *testing.T) {
	mn := testModelNode(t, 64)
	batch := envBatch(256, 1)
	ctx := context.Background()
	mn.process(ctx, batch) // first sight of every stream
	allocs := testing.AllocsPerRun(20, func() { mn.process(ctx, batch) })
	if allocs != 0 {
		t.Errorf("%v allocations per batch of 256 samples in steady state, want 0", allocs)
	}
	if mn.samples.Load() == 0 || mn.alerts.Load() == 0 {
		t.Errorf("samples %d alerts %d: the batches were not scored", mn.samples.Load(), mn.alerts.Load())
	}
	// 256 samples in batches of 64: 4 runs per batch.
	if runs, batches := mn.lat.count.Load(), uint64(22); runs != 4*batches {
		t.Errorf("%d runs for %d batches of 256, want 4 each", runs, batches)
	}
}

// BenchmarkModelNode measures a model node's cost per sample: feeder, one ONNX Runtime run per
// 64 samples, alarm and the score records (not recorded or passed on).
func BenchmarkModelNode(b *testing.B) {
	mn := testModelNode(b, 64)
	batch := envBatch(256, 1)
	ctx := context.Background()
	mn.process(ctx, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		mn.process(ctx, batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/sample")
	h := mn.lat.histogram()
	b.ReportMetric(h.Sum/float64(h.Count)*1e6, "µs/run")
}

// TestModelLoadFailures checks that a model that cannot be loaded fails alone with an error that
// says why: a file ONNX Runtime refuses, a model whose rows do not match its card, a model file
// changed after the config was loaded, a library path that does not exist.
func TestModelLoadFailures(t *testing.T) {
	four, err := onnx.ReconstructionScorer(4, make([]float32, 16), make([]float32, 4))
	if err != nil {
		t.Fatal(err)
	}
	fourRaw, err := four.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		model []byte
		lib   string
		after func(dir string) // runs after the card is loaded
		want  string
	}{
		{"not onnx", []byte("not an onnx model"), "", nil, "ort: inspect model"},
		{"rows do not match the card", fourRaw, "", nil, "takes rows of 4 values; its card gives 3 features × window 2 = 6"},
		{"changed after load", fourRaw, "", func(dir string) {
			os.WriteFile(filepath.Join(dir, "env-ae.onnx"), []byte("changed"), 0o644)
		}, "its card"},
		{"missing library", fourRaw, "/nonexistent/libonnxruntime.so.1", nil, "configured path /nonexistent/libonnxruntime.so.1 does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			em := writeEnvModel(t, dir)
			if _, err := card.Write(dir, em.card, tc.model); err != nil {
				t.Fatal(err)
			}
			c, err := card.Load(em.path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.after != nil {
				tc.after(dir)
			}
			m := &config.Model{Name: "env-ae", Card: em.path, Batch: 8, IntraOpThreads: 1, Loaded: c, FieldNames: c.Features}
			r := &Runtime{cfg: &config.Config{Engine: config.Engine{ONNXRuntime: tc.lib}}, opts: Options{}}
			r.opts.defaults()
			mn := r.newModel(m)
			if mn.err == nil || mn.scorer != nil || !strings.Contains(mn.err.Error(), tc.want) || !strings.HasPrefix(mn.err.Error(), "model env-ae") {
				mn.close()
				t.Fatalf("error %v, want one naming the model and containing %q", mn.err, tc.want)
			}
		})
	}
}
