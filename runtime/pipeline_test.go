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
	dir := t.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	return cfg
}

// runFor runs a pipeline for d and returns its recorder, still open.
func runFor(t *testing.T, cfg *config.Config, d time.Duration, opts runtime.Options) *sql.DB {
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
	return rt.Store().DB()
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
	db := runFor(t, loadTestConfig(t, "pipeline.yaml"), 5500*time.Millisecond, runtime.Options{})

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

// TestIntegrationHostilePipeline runs a spinning module beside a good driver and filter: the
// spinning one is stopped at every call's deadline, restarted with backoff and quarantined,
// while the others keep producing.
func TestIntegrationHostilePipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	cfg := loadTestConfig(t, "hostile.yaml")
	db := runFor(t, cfg, 3*time.Second, runtime.Options{BackoffMin: 20 * time.Millisecond, QuarantineAfter: 3})

	if n := count(t, db, `SELECT count(*) FROM events WHERE module = 'bad' AND kind = 'module.fault'
		AND json_extract(fields, '$.reason') = 'deadline'`); n != 3 {
		t.Errorf("deadline faults of the spinning module: %d, want 3", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE module = 'bad' AND kind = 'module.quarantined'`); n != 1 {
		t.Errorf("quarantine events: %d, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM alerts WHERE source = 'bad' AND series = 'module.health'`); n != 1 {
		t.Errorf("quarantine alerts: %d, want 1", n)
	}
	// The good driver polls every 20 ms for 3 s: it must not have been held up.
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env'`); n < 100 {
		t.Errorf("readings of the good driver: %d, want at least 100", n)
	}
	if n := count(t, db, `SELECT count(*) FROM summaries WHERE source = 'env-window'`); n < 2 {
		t.Errorf("summaries: %d, want at least 2", n)
	}
	var quarantined int
	if err := db.QueryRow(`SELECT quarantined FROM module_health WHERE module = 'bad'`).Scan(&quarantined); err != nil || quarantined != 1 {
		t.Errorf("module_health says quarantined=%d (%v), want 1", quarantined, err)
	}
}
