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
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/uplink"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// BenchmarkDemoRatio runs the demo pipeline (examples/demo/perch.yaml) with an uplink for
// PERCH_DEMO_SECONDS (default 60) of simulated real time and reports what would go upstream as
// a share of what the sensors produced: the payload bytes of the messages the uplink would publish
// for what the outbox holds ÷ bytes ingested (the encoded size of the readings recorded). No
// broker is needed: the outbox holds exactly what is published, and uplink.Published forms the
// messages as the uplink does, with summaries batched every 60s and gzipped (the last batch,
// still waiting when the run ends, counted too). It also reports the same without batching
// (unbatched_%) and with batches of 2 and 5 minutes, and the bytes of each kind: alerts and the runtime's start-up events are one-off
// costs, summaries the steady state (summaries/ingested_%). Status heartbeats, not in the outbox,
// are not counted. It runs once, whatever b.N.
func BenchmarkDemoRatio(b *testing.B) {
	perchtest.Built(b, "bme280")
	cfg, err := config.Load("../../examples/demo/perch.yaml")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	batch := time.Minute
	cfg.Uplink = config.Uplink{Broker: "tcp://127.0.0.1:1", ClientID: "ratio", InFlight: 1,
		Keepalive: config.Duration(time.Minute), Heartbeat: config.Duration(time.Hour),
		Summaries: config.Summaries{Batch: config.Duration(batch), Compress: true, Digits: config.DefaultSummaryDigits}}
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
	rows, err := rt.Store().OutboxPending(context.Background(), store.OutboxCursor{}, 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	ingested := float64(s.BytesIngested)
	per, msgs := uplink.Published(rows, batch, true)
	single, _ := uplink.Published(rows, 0, false)
	var published, unbatched int64
	for p := range per {
		published += per[p]
		unbatched += single[p]
	}
	b.ReportMetric(100*float64(published)/ingested, "published/ingested_%")
	b.ReportMetric(100*float64(unbatched)/ingested, "unbatched_%")
	for _, other := range []time.Duration{2 * time.Minute, 5 * time.Minute} {
		per, _ := uplink.Published(rows, other, true)
		b.ReportMetric(100*float64(per[0]+per[1]+per[2]+per[3])/ingested, "batch_"+other.String()+"_%")
	}
	b.ReportMetric(100*float64(per[store.PrioritySummary])/ingested, "summaries/ingested_%")
	b.ReportMetric(ingested, "ingested_B")
	b.ReportMetric(float64(published), "published_B")
	b.Logf("published bytes (messages): alerts %d (%d), summaries %d (%d; unbatched %d), events %d (%d), readings %d (%d)",
		per[0], msgs[0], per[1], msgs[1], single[1], per[2], msgs[2], per[3], msgs[3])
	b.Logf("backlog %+v", s.Backlog)
}
