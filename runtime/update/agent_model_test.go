package update_test

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/anomaly"
	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/registry/artifact"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/sdk/perchtest"
)

const modelPipeline = `site: test
device: box-7
devices:
  - {name: env0, backend: sim, type: bme280, bus: 1, address: 0x76}
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    deadline: 2s
    poll: 20ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
models:
  - name: env-ae
    card: CARD
    inputs: [env]
    series: environment
    batch: 8
`

// trainEnvModel fits a PCA detector (window 2) with models/anomaly on 400 samples of the
// BME280's three fields around (22 °C, 1013.25 hPa, 45 %) plus noise drawn from seed, and
// returns its card (version, threshold and clear level set) and its ONNX model.
func trainEnvModel(t *testing.T, seed uint64, version string, threshold float64) (*card.Card, []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	rows := make([][]float64, 400)
	for i := range rows {
		rows[i] = []float64{22 + 0.2*r.NormFloat64(), 1013.25 + 0.5*r.NormFloat64(), 45 + r.NormFloat64()}
	}
	d, err := anomaly.Fit(rows, []string{"temperature_c", "pressure_hpa", "humidity_pct"}, anomaly.Options{Window: 2, MinStd: 0.005})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := d.ONNX(card.FP32)
	if err != nil {
		t.Fatal(err)
	}
	c := d.Card("env-ae", card.FP32)
	c.Version, c.Score.Threshold, c.Score.Clear = version, threshold, threshold
	return c, raw
}

// writeModel writes c and model as NAME.onnx and NAME.card.yaml into a new folder and returns
// their paths, in the order perch push model takes them.
func writeModel(t *testing.T, c *card.Card, model []byte) (onnxPath, cardPath string) {
	t.Helper()
	cardPath, err := card.Write(t.TempDir(), c, model)
	if err != nil {
		t.Fatal(err)
	}
	return c.ModelPath(cardPath), cardPath
}

// startModelBox runs modelPipeline, its model's card at cardPath, with an agent pointed at reg.
func startModelBox(t *testing.T, reg *registryFixture, dir, cardPath string, window time.Duration) *box {
	t.Helper()
	perchtest.Built(t, "bme280")
	return runBox(t, reg, dir, modelBoxConfig(t, dir, cardPath), runtime.Options{}, window)
}

// modelBoxConfig parses modelPipeline with its recorder in dir and applies what is installed.
func modelBoxConfig(t *testing.T, dir, cardPath string) *config.Config {
	t.Helper()
	abs, err := filepath.Abs("box.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(abs, []byte(strings.Replace(modelPipeline, "CARD", cardPath, 1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	if err := update.ApplyInstalled(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// scoresAt counts the model's score records whose threshold is threshold (each card of the
// test has its own).
func (b *box) scoresAt(t *testing.T, threshold float64) int {
	t.Helper()
	var n int
	if err := b.rt.Store().DB().QueryRow(`SELECT count(*) FROM scores WHERE source = 'env-ae' AND json_extract(fields, '$.threshold') = ?`,
		threshold).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitScores waits until the model has more than n scores at threshold.
func (b *box) waitScores(t *testing.T, threshold float64, n int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := b.scoresAt(t, threshold)
		if got > n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new scores at threshold %v after 10 s (%d)", threshold, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationAgentModel: a signed deployment moves the running model node to a model
// trained with models/anomaly and pushed as a model artifact; it is committed after its health
// window and the node scores with it. A model that loads but scores NaN fails its health window
// and is rolled back; one that ONNX Runtime refuses and one whose card does not match its model
// fail before the swap; the committed model scores on throughout. After a restart the box runs
// the committed model, re-verified by hash.
func TestIntegrationAgentModel(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, ONNX Runtime, Wasm modules")
	}
	const thrA, thrB, thrNaN, thrBad = 11.5, 99.5, 77.5, 55.5
	cardA, rawA := trainEnvModel(t, 1, "1", thrA)
	cardB, rawB := trainEnvModel(t, 2, "2", thrB)
	_, cardPathA := writeModel(t, cardA, rawA)

	reg := newRegistry(t)
	reg.pushDeployment("deployments/pumps", 1, "name: pumps-1\ngroup: pumps\nstage: 100\nmodels:\n  - {model: env-ae, target: models/env}\n")
	onnxB, cardPathB := writeModel(t, cardB, rawB)
	reg.push("models/env", artifact.Model, "2", 1, nil, onnxB, cardPathB)

	dir := t.TempDir()
	b := startModelBox(t, reg, dir, cardPathA, 500*time.Millisecond)
	ctx := context.Background()
	nA := b.waitScores(t, thrA, 0)
	if err := b.agent.Once(ctx); err != nil {
		t.Fatalf("%v; journal %v", err, b.steps(t))
	}
	if h, _ := b.rt.Health("env-ae"); h.Version != "2" || h.Swaps != 1 || !h.Up {
		t.Fatalf("after the update: %+v; journal %v", h, b.steps(t))
	}
	if s := b.steps(t)["models/env"]; !strings.HasPrefix(s, "committed") {
		t.Fatalf("journal: %s", s)
	}
	nB := b.waitScores(t, thrB, 0)
	t.Logf("scores with model 1 before the update: %d; with model 2 after it: %d", nA, nB)
	// Polling again changes nothing.
	if err := b.agent.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := b.rt.Health("env-ae"); h.Swaps != 1 {
		t.Errorf("a second poll swapped again: %+v", h)
	}

	// Release 2 loads but scores NaN (weights +Inf): Health counts the errors, and the agent
	// rolls back to model 2 within the window.
	nanCard := *cardB
	nanCard.Version, nanCard.Score.Threshold, nanCard.Score.Clear = "3-nan", thrNaN, thrNaN
	inf := make([]float32, 36)
	for i := range inf {
		inf[i] = float32(math.Inf(1))
	}
	nanModel, err := onnx.ReconstructionScorer(6, inf, make([]float32, 6))
	if err != nil {
		t.Fatal(err)
	}
	rawNaN, err := nanModel.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	onnxNaN, cardPathNaN := writeModel(t, &nanCard, rawNaN)
	reg.push("models/env", artifact.Model, "3-nan", 2, nil, onnxNaN, cardPathNaN)
	err = b.agent.Once(ctx)
	if err == nil || !strings.Contains(err.Error(), "rolled back") || !strings.Contains(err.Error(), "errors reported") {
		t.Fatalf("NaN model: err = %v", err)
	}
	if h, _ := b.rt.Health("env-ae"); h.Version != "2" || !h.Up || h.Errors != 0 || h.Swaps != 3 {
		t.Fatalf("after the rollback: %+v", h)
	}
	t.Logf("NaN model: %s", b.steps(t)["models/env"])

	// Release 3 is not an ONNX model (its card's digest matches): refused before the swap.
	badCard := *cardB
	badCard.Version = "4-bad"
	onnxBad, cardPathBad := writeModel(t, &badCard, []byte("not an onnx model"))
	reg.push("models/env", artifact.Model, "4-bad", 3, nil, onnxBad, cardPathBad)
	if err := b.agent.Once(ctx); err == nil || !strings.Contains(err.Error(), "swap refused") {
		t.Fatalf("not ONNX: err = %v", err)
	}
	// Release 4's card does not match its model (signed as it is: the registry signs what it
	// is given; the box checks the card).
	tampered := *cardB
	tampered.Version = "5-tampered"
	onnxT, cardPathT := writeModel(t, &tampered, rawB)
	if err := os.WriteFile(onnxT, rawA, 0o644); err != nil {
		t.Fatal(err)
	}
	reg.push("models/env", artifact.Model, "5-tampered", 4, nil, onnxT, cardPathT)
	if err := b.agent.Once(ctx); err == nil || !strings.Contains(err.Error(), "its card says") {
		t.Fatalf("tampered card: err = %v", err)
	}
	if h, _ := b.rt.Health("env-ae"); h.Version != "2" || !h.Up || h.Swaps != 3 {
		t.Fatalf("after the refusals: %+v", h)
	}
	b.waitScores(t, thrB, b.scoresAt(t, thrB))
	if n := b.scoresAt(t, thrNaN); n != 0 {
		t.Errorf("%d scores from the NaN model", n)
	}

	// The journal holds every step of every release, in order.
	var steps []string
	rows, err := b.rt.Store().DB().Query(`SELECT release || ' ' || step FROM update_journal WHERE target = 'models/env' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		steps = append(steps, s)
	}
	rows.Close()
	want := "1 found,1 downloaded,1 staged,1 swapped,1 committed," +
		"2 found,2 downloaded,2 staged,2 swapped,2 rolled_back," +
		"3 found,3 downloaded,3 staged,3 failed," +
		"4 found,4 downloaded,4 failed"
	if got := strings.Join(steps, ","); got != want {
		t.Errorf("journal:\n got %s\nwant %s", got, want)
	}

	// A restart runs what was committed (model 2), re-verified by hash, not the config's card.
	cfg := modelBoxConfig(t, dir, cardPathA)
	if m := cfg.Models[0]; m.Loaded.Version != "2" || !strings.HasPrefix(m.Card, filepath.Join(dir, "updates")) {
		t.Errorf("after ApplyInstalled: %s %s", m.Card, m.Loaded.Version)
	}
	// A staged model changed on disk is not used: the config's card runs.
	if err := os.WriteFile(cfg.Models[0].ModelPath(), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = modelBoxConfig(t, dir, cardPathA)
	if m := cfg.Models[0]; m.Loaded.Version != "1" || m.Card != cardPathA {
		t.Errorf("after the installed model changed: %s %s", m.Card, m.Loaded.Version)
	}
}
