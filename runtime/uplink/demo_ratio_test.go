package uplink_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// BenchmarkDemoRatio runs the demo pipeline (examples/demo/perch.yaml) with an uplink for
// PERCH_DEMO_SECONDS (default 60) of simulated real time and reports what would go upstream as
// a share of what the pipeline recorded: outbox payload bytes (plus each message's "id") ÷ bytes
// ingested. No broker is needed: the outbox holds exactly what is published. It runs once,
// whatever b.N.
func BenchmarkDemoRatio(b *testing.B) {
	perchtest.Built(b, "bme280")
	cfg, err := config.Load("../../examples/demo/perch.yaml")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	cfg.Uplink = config.Uplink{Broker: "tcp://127.0.0.1:1", ClientID: "ratio", InFlight: 1,
		Keepalive: config.Duration(time.Minute), Heartbeat: config.Duration(time.Hour)}
	secs := 60
	if v := os.Getenv("PERCH_DEMO_SECONDS"); v != "" {
		secs, _ = strconv.Atoi(v)
	}
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	b.ResetTimer()
	if err := rt.Run(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	s, err := rt.Store().OutboxStats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	var rows int64
	for _, p := range s.Backlog {
		rows += p.Rows
	}
	idBytes := rows * int64(len(`"id":12345,`))
	published := s.Bytes + idBytes
	b.ReportMetric(100*float64(published)/float64(s.BytesIngested), "published/ingested_%")
	b.ReportMetric(float64(s.BytesIngested), "ingested_B")
	b.ReportMetric(float64(published), "published_B")
	b.Logf("backlog %+v", s.Backlog)
}
