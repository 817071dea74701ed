package demo_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// TestIntegrationDemo runs the demo pipeline (perch.yaml, what `make demo` runs) on the real
// runtime, with its recorder and compilation cache in a temporary folder, until the threshold
// rule raises its alert for the scripted spike: the temperature steps up by 12 °C 15 s after the
// start and the rule holds off for 2 s, so the alert comes about 17 s in. Then it checks what the
// recorder holds.
func TestIntegrationDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs the demo for about 17 s")
	}
	perchtest.Built(t, "bme280") // the config names the modules `make modules` builds
	cfg, err := config.Load("perch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")

	// Both the threshold rule (env-hot) and the anomaly model (env-anomaly) raise an alert for
	// the spike.
	raised := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]bool{}
	onRecords := func(module string, batch []byte) {
		it := abi.Iter{Buf: batch}
		for it.Next() {
			if state, _ := it.Rec.Tag("state"); it.Rec.Kind == abi.KindAlert && string(state) == "raised" {
				mu.Lock()
				if !seen[module] && (module == "env-hot" || module == "env-anomaly") {
					seen[module] = true
					if len(seen) == 2 {
						close(raised)
					}
				}
				mu.Unlock()
			}
		}
	}
	rt, err := runtime.New(t.Context(), cfg, runtime.Options{OnRecords: onRecords})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	select {
	case <-raised:
	case err := <-done:
		t.Fatalf("Run returned before the alert: %v", err)
	case <-time.After(90 * time.Second): // a bound on correctness, not a speed test
		t.Error("no alert raised in 90 s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	db := rt.Store().DB()

	// The alert: one, raised by env-hot about the environment series, with the demo's message.
	var (
		n                         int
		severity, message, source string
		alertNS, startNS          int64
		value                     float64
	)
	row := db.QueryRow(`SELECT count(*), severity, message, json_extract(tags, '$.source'), time_ns,
		json_extract(fields, '$.value') FROM alerts WHERE source = 'env-hot' AND series = 'environment'
		AND json_extract(tags, '$.state') = 'raised'`)
	if err := row.Scan(&n, &severity, &message, &source, &alertNS, &value); err != nil {
		t.Fatal(err)
	}
	if n != 1 || severity != "warning" || message != "temperature above 30 °C" || source != "env" || value <= 30 {
		t.Errorf("raised alerts: %d, the last %q %q from %q at %g °C; want 1, warning, the demo's message, from env, above 30 °C",
			n, severity, message, source, value)
	}
	if err := db.QueryRow(`SELECT time_ns FROM events WHERE kind = 'runtime.started'`).Scan(&startNS); err != nil {
		t.Fatal(err)
	}

	// Readings: one every 500 ms, at the simulated truth: the first above 30 °C comes with the
	// spike, and the alert at least the hold-off later (bounds on correctness, not on speed).
	if got := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env' AND series = 'environment'`); got < 20 {
		t.Errorf("readings: %d, want at least 20 (one every 500 ms for 17 s)", got)
	}
	var firstAbove int64
	if err := db.QueryRow(`SELECT min(time_ns) FROM readings WHERE source = 'env'
		AND json_extract(fields, '$.temperature_c') > 30`).Scan(&firstAbove); err != nil {
		t.Fatalf("the first reading above 30 °C: %v", err)
	}
	if d := time.Duration(firstAbove - startNS); d < 15*time.Second {
		t.Errorf("a reading above 30 °C %v after the start, before the spike (15 s)", d)
	}
	if d := time.Duration(alertNS - firstAbove); d < 2*time.Second {
		t.Errorf("alert raised %v after the first reading above 30 °C, within its hold-off (2 s)", d)
	}
	t.Logf("first reading above 30 °C %v after the start, alert %v after that",
		time.Duration(firstAbove-startNS).Round(time.Millisecond), time.Duration(alertNS-firstAbove).Round(time.Millisecond))

	// Summaries: 10 s windows aligned on the clock, so at least one closed in 17 s.
	if got := count(t, db, `SELECT count(*) FROM summaries WHERE source = 'env-window'
		AND json_extract(tags, '$.window') = '10s' AND json_extract(fields, '$.temperature_c_count') > 0`); got < 1 {
		t.Errorf("summaries: %d, want at least 1", got)
	}
	// Lifecycle: every module started, and the run ended cleanly.
	if got := count(t, db, `SELECT count(DISTINCT module) FROM events WHERE kind IN ('module.started', 'module.restart')`); got != 3 {
		t.Errorf("modules that started: %d, want 3", got)
	}
	if got := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault'`); got != 0 {
		t.Logf("module.fault events: %d (a loaded machine can make a call overrun its deadline)", got)
	}
	var last string
	if err := db.QueryRow(`SELECT kind FROM events ORDER BY id DESC LIMIT 1`).Scan(&last); err != nil || last != "runtime.stopped" {
		t.Errorf("last event %q (%v), want runtime.stopped", last, err)
	}
}

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
