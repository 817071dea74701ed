package runtime_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
)

// loadTestConfig loads a config from testdata with its recorder and cache in a temporary folder.
func loadTestConfig(t *testing.T, name string) *config.Config {
	t.Helper()
	cfg, err := config.Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return inTempDir(t, cfg)
}

// parseTestConfig parses text as if it were the file testdata/name (relative paths in it are
// taken from testdata), with its recorder and cache in a temporary folder.
func parseTestConfig(t *testing.T, name, text string) *config.Config {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(abs, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return inTempDir(t, cfg)
}

func inTempDir(t *testing.T, cfg *config.Config) *config.Config {
	dir := t.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	return cfg
}

// runFor runs a pipeline for d and returns it, stopped, with its recorder still open.
func runFor(t *testing.T, cfg *config.Config, d time.Duration, opts runtime.Options) *runtime.Runtime {
	t.Helper()
	rt, err := runtime.New(context.Background(), cfg, opts)
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

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestIntegrationPipeline runs driver -> window and driver -> threshold on the simulated
// BME280 and checks what lands in the recorder: readings at the simulated truth, summaries,
// and one raised and one cleared alert for the scripted spike.
func TestIntegrationPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	db := runFor(t, loadTestConfig(t, "pipeline.yaml"), 5500*time.Millisecond, runtime.Options{}).Store().DB()

	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env'`); n < 50 {
		t.Errorf("readings: %d, want at least 50 (poll every 50 ms for 5.5 s)", n)
	}
	// Before the spike the truth is 22 °C, 1013.25 hPa, 45 %RH.
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env'
		AND abs(json_extract(fields, '$.pressure_hpa') - 1013.25) > 0.01
		OR abs(json_extract(fields, '$.humidity_pct') - 45) > 0.01`); n != 0 {
		t.Errorf("%d readings off the simulated pressure or humidity by more than 0.01", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env'
		AND abs(json_extract(fields, '$.temperature_c') - 22) > 0.01
		AND abs(json_extract(fields, '$.temperature_c') - 34) > 0.01`); n != 0 {
		t.Errorf("%d readings off the simulated temperature (22 or 34 °C) by more than 0.01", n)
	}
	if n := count(t, db, `SELECT count(*) FROM summaries WHERE source = 'env-window'`); n < 4 {
		t.Errorf("summaries: %d, want at least 4 (1 s windows over 5.5 s)", n)
	}
	if n := count(t, db, `SELECT count(*) FROM alerts WHERE source = 'env-hot' AND json_extract(tags, '$.state') = 'raised'`); n != 1 {
		t.Errorf("raised alerts: %d, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM alerts WHERE source = 'env-hot' AND json_extract(tags, '$.state') = 'cleared'`); n != 1 {
		t.Errorf("cleared alerts: %d, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.started'`); n != 3 {
		t.Errorf("module.started events: %d, want 3", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault'`); n != 0 {
		t.Errorf("module.fault events: %d, want 0", n)
	}
}

// TestIntegrationHostilePipeline runs hostile modules (spin, memory bomb, trap, emit flood, log
// flood, bad pointer, bad record) beside a good driver and filter: each hostile one faults with
// its reason, is restarted with backoff and quarantined, while the good ones keep producing.
func TestIntegrationHostilePipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	cfg := loadTestConfig(t, "hostile.yaml")
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{BackoffMin: 20 * time.Millisecond, QuarantineAfter: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	db := rt.Store().DB()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- rt.Run(ctx) }()
	// Run until every hostile module is quarantined (or give up after 30 s), then one more second.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err := rt.Store().Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.quarantined'`) == 7 {
			break
		}
	}
	time.Sleep(time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	reasons := map[string]string{
		"bad-spin": "deadline", "bad-bomb": "memory", "bad-trap": "trap", "bad-emitflood": "emit_quota",
		"bad-logflood": "log_quota", "bad-badptr": "bad_pointer", "bad-badrecord": "bad_record",
	}
	for module, reason := range reasons {
		if n := count(t, db, `SELECT count(*) FROM events WHERE module = ? AND kind = 'module.fault'
			AND json_extract(fields, '$.reason') = ?`, module, reason); n != 3 {
			t.Errorf("%s: %d faults with reason %s, want 3", module, n, reason)
		}
		if n := count(t, db, `SELECT count(*) FROM events WHERE module = ? AND kind = 'module.quarantined'`, module); n != 1 {
			t.Errorf("%s: %d quarantine events, want 1", module, n)
		}
		if n := count(t, db, `SELECT count(*) FROM alerts WHERE source = ? AND series = 'module.health'`, module); n != 1 {
			t.Errorf("%s: %d quarantine alerts, want 1", module, n)
		}
		var quarantined int
		if err := db.QueryRow(`SELECT quarantined FROM module_health WHERE module = ?`, module).Scan(&quarantined); err != nil || quarantined != 1 {
			t.Errorf("%s: module_health says quarantined=%d (%v), want 1", module, quarantined, err)
		}
		// Before misbehaving, each polled twice per start: its heartbeats were recorded.
		if n := count(t, db, `SELECT count(*) FROM readings WHERE source = ? AND series = 'heartbeat'`, module); n < 2 {
			t.Errorf("%s: %d heartbeats, want at least 2", module, n)
		}
	}
	// The good driver polls every 20 ms: it must never have stalled behind the hostile ones (a
	// generous bound: two cores are shared with seven misbehaving modules).
	var maxGap int64
	if err := db.QueryRow(`SELECT max(time_ns - prev) FROM (SELECT time_ns, lag(time_ns) OVER (ORDER BY time_ns) AS prev
		FROM readings WHERE source = 'env')`).Scan(&maxGap); err != nil {
		t.Fatal(err)
	}
	if gap := time.Duration(maxGap); gap > time.Second {
		t.Errorf("the good driver stalled for %v", gap)
	}
	if n := count(t, db, `SELECT count(*) FROM summaries WHERE source = 'env-window'`); n < 1 {
		t.Errorf("summaries: %d, want at least 1", n)
	}
}
