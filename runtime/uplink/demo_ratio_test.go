package uplink_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/uplink"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// BenchmarkDemoRatio runs the demo pipeline (examples/demo/perch.yaml) with the default uplink
// (the config's defaults: summaries batched every 60s and gzipped columnar, events pending
// together batched) to a real mosquitto on loopback, for PERCH_DEMO_SECONDS (default 60) of real
// time, and reports the bytes that went upstream as a share of the bytes ingested (the encoded
// size of the readings recorded):
//
//   - published/ingested_%: the payload bytes a subscriber received on the alerts, summaries,
//     events and status topics, plus those the uplink would still send for what the outbox
//     holds at the end (the last summary batch, still waiting, and the runtime's stopped event);
//   - steady/ingested_%: the same for alerts and summaries only, without the one-off start-up
//     and shutdown events (the steady state: alerts are never batched, and come when they come);
//   - summaries/, alerts/, events/, status/ingested_%: each kind (status: the retained birth
//     message and the heartbeats).
//
// PERCH_DEMO_SUMMARIES, if set, is the uplink.summaries section to use instead of the defaults
// (such as "{batch: 0}" or "{batch: 5m}"). Every message is decoded with [uplink.DecodeMessages]; the ids received are checked
// (each summary and event once, none lost). It runs once, whatever b.N.
func BenchmarkDemoRatio(b *testing.B) {
	perchtest.Built(b, "bme280")
	br := mqtttest.Start(b, "")
	demo, err := os.ReadFile("../../examples/demo/perch.yaml")
	if err != nil {
		b.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	text := strings.ReplaceAll(string(demo), "../../build/", root+"/build/")
	text = strings.ReplaceAll(text, "../../var/perch.db", filepath.Join(dir, "perch.db"))
	text += "\nuplink:\n  broker: " + br.URL() + "\n"
	if s := os.Getenv("PERCH_DEMO_SUMMARIES"); s != "" {
		text += "  summaries: " + s + "\n"
	}
	cfgPath := filepath.Join(dir, "perch.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	b.Logf("uplink.summaries: %+v", cfg.Uplink.Summaries)

	// The far side: bytes and decoded messages per topic.
	prefix := uplink.Prefix(cfg.Site, cfg.Device)
	var mu sync.Mutex
	bytesPer := map[string]int64{}
	msgsPer := map[string]int64{}
	seen := map[int64]int{}
	var decodeErr error
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(br.URL()).SetClientID("ratio-sub").SetOrderMatters(true))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	tok := sub.Subscribe(prefix+"#", 1, func(_ paho.Client, m paho.Message) {
		topic := strings.TrimPrefix(m.Topic(), prefix)
		if topic == uplink.TopicStatus {
			mu.Lock()
			bytesPer[topic] += int64(len(m.Payload()))
			msgsPer[topic]++
			mu.Unlock()
			return
		}
		if topic != uplink.TopicAlerts && topic != uplink.TopicSummaries && topic != uplink.TopicEvents && topic != uplink.TopicReadings {
			return
		}
		ms, err := uplink.DecodeMessages(m.Payload())
		mu.Lock()
		defer mu.Unlock()
		if err != nil && decodeErr == nil {
			decodeErr = err
		}
		bytesPer[topic] += int64(len(m.Payload()))
		msgsPer[topic]++
		for _, x := range ms {
			seen[x.ID]++
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}

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
	time.Sleep(time.Second) // the last PUBLISHes on their way to the subscriber
	s, err := rt.Store().OutboxStats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	left, err := rt.Store().OutboxPending(context.Background(), store.OutboxCursor{}, 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	leftBytes, leftMsgs := uplink.Published(left, cfg.Uplink.Summaries.Batch.D(), cfg.Uplink.Summaries.Compress)

	mu.Lock()
	defer mu.Unlock()
	if decodeErr != nil {
		b.Errorf("a payload did not decode: %v", decodeErr)
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	if want := int(s.RowsPublished); len(seen) != want {
		b.Errorf("%d distinct messages received, %d acknowledged", len(seen), want)
	}
	kinds := []struct {
		topic string
		prio  int
	}{{uplink.TopicAlerts, store.PriorityAlert}, {uplink.TopicSummaries, store.PrioritySummary},
		{uplink.TopicEvents, store.PriorityEvent}, {uplink.TopicReadings, store.PriorityReading}}
	per := map[string]int64{}
	var total int64
	for _, k := range kinds {
		per[k.topic] = bytesPer[k.topic] + leftBytes[k.prio]
		total += per[k.topic]
	}
	per[uplink.TopicStatus] = bytesPer[uplink.TopicStatus]
	total += per[uplink.TopicStatus]
	ingested := float64(s.BytesIngested)
	b.ReportMetric(100*float64(total)/ingested, "published/ingested_%")
	b.ReportMetric(100*float64(per[uplink.TopicAlerts]+per[uplink.TopicSummaries])/ingested, "steady/ingested_%")
	b.ReportMetric(100*float64(per[uplink.TopicSummaries])/ingested, "summaries/ingested_%")
	b.ReportMetric(100*float64(per[uplink.TopicAlerts])/ingested, "alerts/ingested_%")
	b.ReportMetric(100*float64(per[uplink.TopicEvents])/ingested, "events/ingested_%")
	b.ReportMetric(100*float64(per[uplink.TopicStatus])/ingested, "status/ingested_%")
	b.ReportMetric(ingested, "ingested_B")
	b.ReportMetric(float64(total), "published_B")
	js, _ := json.Marshal(map[string]any{"received_bytes": bytesPer, "received_messages": msgsPer,
		"left_bytes": leftBytes, "left_messages": leftMsgs, "distinct_ids": len(seen), "duplicates": dups})
	b.Logf("%s", js)
}
