package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

// decodeBatch returns the messages of a summaries or events payload, whichever of its forms.
func decodeBatch(t testing.TB, payload []byte) []outMsg {
	t.Helper()
	ms, err := DecodeMessages(payload)
	if err != nil {
		t.Fatalf("%v: %q", err, payload)
	}
	out := make([]outMsg, len(ms))
	for i, m := range ms {
		o := outMsg{ID: m.ID, Time: m.Time.Format(time.RFC3339Nano), Kind: m.Kind, Source: m.Source,
			Series: m.Series, Fields: map[string]float64{}, Tags: map[string]string{}}
		for _, f := range m.Fields {
			o.Fields[f.Name] = f.Value
		}
		for _, tg := range m.Tags {
			o.Tags[tg.Key] = tg.Value
		}
		out[i] = o
	}
	return out
}

func TestEncoderDigits(t *testing.T) {
	fields := []abi.Field{{Name: "t_mean", Value: 22.374999999871}, {Name: "p", Value: 1013.2512345},
		{Name: "big", Value: 1234567.89}, {Name: "small", Value: 0.000123456789}, {Name: "n", Value: 20}}
	e := newEncoder(testPrefix, config.RawReadings{})
	for _, tc := range []struct {
		kind abi.Kind
		want string
	}{
		{abi.KindSummary, `{"t_mean":22.375,"p":1013.25,"big":1.23457e+06,"small":0.000123457,"n":20}`},
		{abi.KindAlert, `{"t_mean":22.374999999871,"p":1013.2512345,"big":1234567.89,"small":0.000123456789,"n":20}`},
		{abi.KindEvent, `{"t_mean":22.374999999871,"p":1013.2512345,"big":1234567.89,"small":0.000123456789,"n":20}`},
	} {
		var it abi.Iter
		it.Buf = abi.Append(nil, tc.kind, 1, "w", "s", fields, nil)
		if !it.Next() {
			t.Fatal(it.Err())
		}
		_, _, payload, ok := e.upstream(&it.Rec)
		if !ok || !strings.Contains(string(payload), `"fields":`+tc.want) {
			t.Errorf("%v: %s, want fields %s", tc.kind, payload, tc.want)
		}
		var v map[string]any
		if err := json.Unmarshal(payload, &v); err != nil {
			t.Errorf("%v: %v", tc.kind, err)
		}
	}
	// 17 digits: exact.
	e.digits = config.MaxSummaryDigits
	var it abi.Iter
	it.Buf = abi.Append(nil, abi.KindSummary, 1, "w", "s", fields[:1], nil)
	it.Next()
	if _, _, payload, _ := e.upstream(&it.Rec); !strings.Contains(string(payload), "22.374999999871") {
		t.Errorf("exact: %s", payload)
	}
}

func TestBatchEncoding(t *testing.T) {
	rows := []store.OutboxRow{
		{ID: 7, Priority: store.PrioritySummary, Payload: []byte(`{"time":"2026-01-01T00:00:00Z","kind":"summary","series":"a"}`)},
		{ID: 9, Priority: store.PrioritySummary, Payload: []byte(`{"time":"2026-01-01T00:00:01Z","kind":"summary","series":"b"}`)},
	}
	for _, compress := range []bool{false, true} {
		msg := encodeBatch(rows, compress)
		if compress != bytes.HasPrefix(msg, []byte(gzipMagic)) {
			t.Errorf("compress %v: %q", compress, msg)
		}
		if id, ok := messageID(msg); !ok || id != 7 {
			t.Errorf("compress %v: messageID = %d, %v", compress, id, ok)
		}
		got := decodeBatch(t, msg)
		if len(got) != 2 || got[0].ID != 7 || got[0].Series != "a" || got[1].ID != 9 || got[1].Series != "b" {
			t.Errorf("compress %v: %+v", compress, got)
		}
	}
	for _, bad := range []string{"[", "[]", "[1,2]", "\x1f\x8bnot gzip", "x", string(gzipped([]byte{columnarMagic})),
		string(gzipped([]byte{columnarMagic, 0x80}))} {
		if id, ok := messageID([]byte(bad)); ok {
			t.Errorf("messageID(%q) = %d", bad, id)
		}
	}
}

// TestIntegrationSummaryBatches: with uplink.summaries.batch, summaries arrive together in gzipped
// batches on the summaries topic, alerts are not held back, and acknowledging a batch deletes
// all its rows and counts the message's bytes as published.
func TestIntegrationSummaryBatches(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, "perch/#", nil)
	cfg := testConfig(b.URL())
	cfg.Uplink.Summaries = config.Summaries{Batch: config.Duration(time.Second), Compress: true}
	r := newRig(t, cfg, Options{})
	sub.waitFor(10*time.Second, "status online", func(ms []message) bool {
		return count(ms, testPrefix+TopicStatus, isState("online")) > 0
	})
	start := time.Now()
	for i := range 5 {
		r.write(abi.KindSummary, "temp_1m", float64(i))
	}
	r.write(abi.KindAlert, "overheat", 1)
	msgs := sub.waitFor(10*time.Second, "the alert", func(ms []message) bool {
		return count(ms, testPrefix+TopicAlerts, nil) == 1
	})
	if count(msgs, testPrefix+TopicSummaries, nil) != 0 || time.Since(start) > 900*time.Millisecond {
		t.Errorf("the alert waited for the summaries (%v)", time.Since(start))
	}
	msgs = sub.waitFor(10*time.Second, "a batch", func(ms []message) bool {
		return count(ms, testPrefix+TopicSummaries, nil) == 1
	})
	if d := time.Since(start); d < time.Second {
		t.Errorf("batch sent after %v, before the batch interval", d)
	}
	r.waitEmpty(10 * time.Second)
	var payload []byte
	for _, m := range msgs {
		if m.topic == testPrefix+TopicSummaries {
			payload = m.payload
		}
	}
	if !bytes.HasPrefix(payload, []byte(gzipMagic)) {
		t.Fatalf("batch not gzipped: %q", payload)
	}
	got := decodeBatch(t, payload)
	if len(got) != 5 {
		t.Fatalf("batch of %d summaries, want 5", len(got))
	}
	for i, o := range got {
		if o.Kind != "summary" || o.Fields["n"] != float64(i) || (i > 0 && o.ID <= got[i-1].ID) {
			t.Errorf("summary %d: %+v", i, o)
		}
	}
	s, err := r.st.OutboxStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	alert := 0
	for _, m := range msgs {
		if m.topic == testPrefix+TopicAlerts {
			alert = len(m.payload) - len(`"id":N,`) - len(itoa(decode(t, m).ID)) + 1
		}
	}
	if s.RowsPublished != 6 || s.Rows != 0 || s.BytesPublished != int64(len(payload)+alert) {
		t.Errorf("stats %+v; batch %d bytes, alert %d", s, len(payload), alert)
	}
}

// TestIntegrationSummaryBatchesReconnect: batches cut by killed connections are sent again after
// the reconnect; every summary arrives, ids increase within a batch and first seen in order, and
// the outbox ends empty.
func TestIntegrationSummaryBatchesReconnect(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, testPrefix+TopicSummaries, nil)
	cfg := testConfig(b.URL())
	cfg.Uplink.Summaries = config.Summaries{Batch: config.Duration(time.Second), Compress: true}
	cfg.Uplink.InFlight = 2
	r := newRig(t, cfg, Options{})
	const n = 1000
	for i := range n {
		r.write(abi.KindSummary, "s", float64(i))
		if i%100 == 99 {
			time.Sleep(150 * time.Millisecond)
			r.up.KillConnection()
		}
	}
	r.waitEmpty(30 * time.Second)
	msgs := sub.waitFor(10*time.Second, "every summary", func(ms []message) bool {
		seen := map[float64]bool{}
		for _, m := range ms {
			for _, o := range decodeBatch(t, m.payload) {
				seen[o.Fields["n"]] = true
			}
		}
		return len(seen) == n
	})
	var last int64
	batches, dups := 0, 0
	seen := map[int64]bool{}
	for _, m := range msgs {
		batches++
		for i, o := range decodeBatch(t, m.payload) {
			if i == 0 && o.ID <= last && seen[o.ID] {
				dups++ // a batch sent again after a reconnect
			}
			if !seen[o.ID] && o.ID < last {
				t.Errorf("summary %d first seen after %d", o.ID, last)
			}
			seen[o.ID] = true
			last = max(last, o.ID)
		}
	}
	t.Logf("%d summaries in %d batches, %d sent again", n, batches, dups)
}

// TestIntegrationEventBatches: with batching, events are never held back: the events pending
// together (here five written in one transaction, as at the runtime's start-up) go as one
// gzipped batch on the events topic, a lone event as a plain message, while summaries wait
// their (here one hour) batch interval; every row of a batch leaves the outbox on its PUBACK.
func TestIntegrationEventBatches(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, "perch/#", nil)
	cfg := testConfig(b.URL())
	cfg.Uplink.Summaries = config.Summaries{Batch: config.Duration(time.Hour), Compress: true}
	r := newRig(t, cfg, Options{})
	sub.waitFor(10*time.Second, "status online", func(ms []message) bool {
		return count(ms, testPrefix+TopicStatus, isState("online")) > 0
	})
	var burst []byte
	for i := range 5 {
		burst = abi.Append(burst, abi.KindEvent, time.Now().UnixNano(), "env", "module.started",
			[]abi.Field{{Name: "n", Value: float64(i)}}, []abi.Tag{{Key: "message", Value: "started module " + itoa(int64(i))}})
	}
	burst = abi.Append(burst, abi.KindSummary, time.Now().UnixNano(), "w", "s", []abi.Field{{Name: "n", Value: 1}}, nil)
	if err := r.st.Write(burst); err != nil {
		t.Fatal(err)
	}
	events := func(ms []message) []outMsg {
		var out []outMsg
		for _, m := range ms {
			if m.topic == testPrefix+TopicEvents {
				out = append(out, decodeBatch(t, m.payload)...)
			}
		}
		return out
	}
	msgs := sub.waitFor(20*time.Second, "five events", func(ms []message) bool { return len(events(ms)) == 5 })
	batched := 0
	for _, m := range msgs {
		if m.topic == testPrefix+TopicEvents && bytes.HasPrefix(m.payload, []byte(gzipMagic)) {
			batched++
		}
	}
	if batched == 0 || count(msgs, testPrefix+TopicEvents, nil) >= 5 {
		t.Errorf("%d event messages, %d of them batches: want the burst batched", count(msgs, testPrefix+TopicEvents, nil), batched)
	}
	for i, o := range events(msgs) {
		if o.Fields["n"] != float64(i) || o.Tags["message"] != "started module "+itoa(int64(i)) || o.Kind != "event" {
			t.Errorf("event %d: %+v", i, o)
		}
	}
	r.write(abi.KindEvent, "lone", 7)
	msgs = sub.waitFor(20*time.Second, "the lone event", func(ms []message) bool { return len(events(ms)) == 6 })
	last := msgs[len(msgs)-1]
	for i := len(msgs) - 1; i >= 0 && last.topic != testPrefix+TopicEvents; i-- {
		last = msgs[i]
	}
	if last.payload[0] != '{' || decode(t, last).Series != "lone" {
		t.Errorf("lone event: %q", last.payload)
	}
	if n := count(msgs, testPrefix+TopicSummaries, nil); n != 0 {
		t.Errorf("%d summary messages before their batch interval", n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := r.st.OutboxStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s.Rows == 1 { // the summary, waiting
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events not acknowledged: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
