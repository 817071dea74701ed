package skab_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/anomaly"
	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/scoring"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// TestIntegrationSKABExample trains the example's model on the first 400 rows of valve1/0.csv
// (as make skab-example does), runs perch.yaml to the end of the recording, and checks that the
// model raised an alert inside the experiment's labelled anomaly and scored every row after its
// window.
func TestIntegrationSKABExample(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	perchtest.Built(t, "replay")
	data, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "datasets", "skab", "data", "valve1", "0.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); err != nil {
		t.Skipf("no SKAB data next to the repository: %v", err)
	}
	tab, err := scoring.ReadSKAB(data)
	if err != nil {
		t.Fatal(err)
	}
	d, err := anomaly.Fit(tab.Values[:anomaly.SKABTrainRows], tab.Columns, anomaly.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	model, err := d.ONNX(card.FP32)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cardPath, err := card.Write(dir, d.Card("skab", card.FP32), model)
	if err != nil {
		t.Fatal(err)
	}
	// The config names the card make skab-example trains into build/; point it at ours.
	text, err := os.ReadFile("perch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("perch.yaml")
	const trained = "card: ../../build/models/skab.card.yaml"
	if !strings.Contains(string(text), trained) {
		t.Fatalf("perch.yaml has no %q: update this test", trained)
	}
	cfg, err := config.Parse(abs, []byte(strings.Replace(string(text), trained, "card: "+cardPath, 1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(dir, "skab.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	eof := make(chan struct{})
	rt, err := runtime.New(t.Context(), cfg, runtime.Options{OnRecords: func(module string, batch []byte) {
		it := abi.Iter{Buf: batch}
		for it.Next() {
			if it.Rec.Kind == abi.KindEvent && string(it.Rec.Series) == "replay.eof" {
				close(eof)
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	select {
	case <-eof:
	case <-time.After(2 * time.Minute):
		t.Fatal("the recording did not end")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db := rt.Store().DB()
	var scores int
	db.QueryRow(`SELECT count(*) FROM scores WHERE source = 'pump-anomaly'`).Scan(&scores)
	if want := tab.Len() - d.Window + 1; scores != want {
		t.Errorf("%d scores, want %d (every row after the first window)", scores, want)
	}
	// The first alert falls inside the labelled anomaly.
	var alertNS int64
	if err := db.QueryRow(`SELECT min(time_ns) FROM alerts WHERE source = 'pump-anomaly' AND json_extract(tags, '$.state') = 'raised'`).Scan(&alertNS); err != nil {
		t.Fatalf("no alert: %v", err)
	}
	for i, ts := range tab.Times {
		if ts.UnixNano() == alertNS {
			if !tab.Anomaly[i] {
				t.Errorf("the first alert is at row %d (%s), outside the labelled anomaly", i, ts)
			}
			t.Logf("first alert at row %d of %d (%s)", i, tab.Len(), ts)
			return
		}
	}
	t.Errorf("the first alert's time %d is no row's", alertNS)
}
