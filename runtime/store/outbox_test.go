package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/internal/jsonx"
	"github.com/perch-edge/perch/sdk/abi"
)

// testUpstream sends alerts, summaries and events; readings only if their series is "raw".
// The payload is {"series":...,"pad":"xxx..."} with a pad of the field "pad" bytes.
func testUpstream(r *abi.Record) (string, int, []byte, bool) {
	var prio int
	switch r.Kind {
	case abi.KindAlert:
		prio = PriorityAlert
	case abi.KindSummary:
		prio = PrioritySummary
	case abi.KindEvent:
		prio = PriorityEvent
	case abi.KindReading:
		if string(r.Series) != "raw" {
			return "", 0, nil, false
		}
		prio = PriorityReading
	default:
		return "", 0, nil, false
	}
	pad, _ := r.Field("pad")
	payload := fmt.Appendf(nil, `{"series":%q,"pad":%q}`, r.Series, strings.Repeat("x", int(pad)))
	return "t/" + r.Kind.String(), prio, payload, true
}

func rec(kind abi.Kind, series string, pad int) record {
	return record{kind: kind, timeNS: nowNS(), source: "m", series: series,
		fields: []abi.Field{{Name: "pad", Value: float64(pad)}}}
}

func pendingSeries(t *testing.T, st *Store, c OutboxCursor, limit int) []string {
	t.Helper()
	rows, err := st.OutboxPending(context.Background(), c, limit)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		var m struct {
			ID     int64  `json:"id"`
			Series string `json:"series"`
		}
		if err := json.Unmarshal(r.Message(), &m); err != nil {
			t.Fatalf("row %d: %s: %v", r.ID, r.Message(), err)
		}
		if m.ID != r.ID {
			t.Errorf("message id %d, row id %d", m.ID, r.ID)
		}
		out = append(out, m.Series)
	}
	return out
}

func TestOutboxSameTransaction(t *testing.T) {
	st := openTest(t, Options{Upstream: testUpstream})
	ctx := context.Background()
	mustWrite(t, st, encode(rec(abi.KindReading, "cooked", 0), rec(abi.KindSummary, "s1", 0),
		rec(abi.KindEvent, "e1", 0), rec(abi.KindAlert, "a1", 0), rec(abi.KindReading, "raw", 0),
		rec(abi.KindScore, "sc", 0), rec(abi.KindAlert, "a2", 0)))
	if err := st.Event(ctx, Event{Kind: "module.fault", Module: "m", Message: "trap",
		Fields: map[string]any{"attempt": 2, "reason": "deadline"}}); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, st)
	db := st.DB()
	if n := queryInt(t, db, "SELECT count(*) FROM outbox WHERE priority = 0"); n != queryInt(t, db, "SELECT count(*) FROM alerts") {
		t.Errorf("outbox has %d alerts, alerts table %d", n, queryInt(t, db, "SELECT count(*) FROM alerts"))
	}
	got := strings.Join(pendingSeries(t, st, OutboxCursor{}, 100), ",")
	// The migration's store.migrated event was written before the hook existed.
	if want := "a1,a2,s1,e1,module.fault,raw"; got != want {
		t.Errorf("pending = %s, want %s", got, want)
	}
	// A lifecycle event keeps its fields.
	if p := queryString(t, db, "SELECT topic || ' ' || payload FROM outbox WHERE priority = 2 ORDER BY id DESC LIMIT 1"); p != `t/event {"series":"module.fault","pad":""}` {
		t.Errorf("event row = %s", p)
	}

	// Cursors: a reader past a1 and s1 sees a2, e1 ...; a new alert comes before older events.
	rows, _ := st.OutboxPending(ctx, OutboxCursor{}, 3)
	var c OutboxCursor
	for i := range rows {
		c.Advance(&rows[i])
	}
	mustWrite(t, st, encode(rec(abi.KindAlert, "a3", 0)))
	mustFlush(t, st)
	if got := strings.Join(pendingSeries(t, st, c, 2), ","); got != "a3,e1" {
		t.Errorf("after the cursor = %s, want a3,e1", got)
	}

	stats, err := st.OutboxStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Rows != 7 || stats.Backlog[PriorityAlert].Rows != 3 || stats.BytesIngested == 0 {
		t.Errorf("stats = %+v", stats)
	}
	if n := queryInt(t, db, "SELECT sum(rows) FROM outbox_backlog"); n != 7 {
		t.Errorf("outbox_backlog rows = %d", n)
	}

	// Ack deletes and counts; unknown ids and a second ack are ignored.
	all, _ := st.OutboxPending(ctx, OutboxCursor{}, 100)
	var ids []int64
	var bytes int64
	for _, r := range all[:4] {
		ids = append(ids, r.ID)
		bytes += int64(len(r.Payload))
	}
	if err := st.Ack(ctx, append(ids, 999999)); err != nil {
		t.Fatal(err)
	}
	if err := st.Ack(ctx, ids); err != nil {
		t.Fatal(err)
	}
	after, _ := st.OutboxStats(ctx)
	if after.Rows != 3 || after.RowsPublished != 4 || after.BytesPublished != bytes || after.PublishedToday != bytes ||
		after.Bytes != stats.Bytes-bytes {
		t.Errorf("after ack: %+v (acked %d bytes)", after, bytes)
	}
	if n := queryInt(t, db, "SELECT sum(bytes) FROM outbox"); n != after.Bytes {
		t.Errorf("outbox_bytes counter %d, table %d", after.Bytes, n)
	}
}

func TestOutboxQuota(t *testing.T) {
	const max = 2500
	st := openTest(t, Options{Upstream: testUpstream, OutboxMaxBytes: max})
	ctx := context.Background()
	// 10 alerts, 10 summaries, 10 events of ~100 bytes each: 3000 bytes.
	var recs []record
	for i := range 10 {
		recs = append(recs, rec(abi.KindEvent, fmt.Sprint("e", i), 75), rec(abi.KindSummary, fmt.Sprint("s", i), 75),
			rec(abi.KindAlert, fmt.Sprint("a", i), 75))
	}
	for _, r := range recs { // one commit each, so that the quota acts as the outbox grows
		mustWrite(t, st, encode(r))
		mustFlush(t, st)
	}
	s, _ := st.OutboxStats(ctx)
	if s.Bytes > max || s.Backlog[PriorityAlert].Rows != 10 {
		t.Fatalf("stats = %+v", s)
	}
	if s.RowsDropped != 30-s.Rows || s.Backlog[PrioritySummary].Rows == 0 && s.Backlog[PriorityEvent].Rows > 0 {
		t.Errorf("stats = %+v", s)
	}
	// The oldest events went first: what is left of them is the newest.
	got := pendingSeries(t, st, OutboxCursor{}, 100)
	if last := got[len(got)-1]; last != "e9" {
		t.Errorf("newest event gone: %v", got)
	}
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM events WHERE kind = ?", EventUplinkDropped); n == 0 {
		t.Error("no uplink.dropped event")
	}
	var dropped int64
	rows, err := st.DB().Query("SELECT fields FROM events WHERE kind = ?", EventUplinkDropped)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var js string
		rows.Scan(&js)
		var f map[string]int64
		if err := json.Unmarshal([]byte(js), &f); err != nil {
			t.Fatal(err)
		}
		if f["alerts"] != 0 {
			t.Errorf("alerts dropped while others could be: %s", js)
		}
		dropped += f["events"] + f["summaries"]
	}
	rows.Close()
	if dropped != s.RowsDropped {
		t.Errorf("events count %d dropped, counters %d", dropped, s.RowsDropped)
	}

	// More alerts: summaries go before alerts; once only alerts are left, the oldest alerts.
	for i := range 30 {
		mustWrite(t, st, encode(rec(abi.KindAlert, fmt.Sprint("b", i), 75)))
	}
	mustFlush(t, st)
	s, _ = st.OutboxStats(ctx)
	if s.Backlog[PrioritySummary].Rows != 0 || s.Backlog[PriorityEvent].Rows != 0 || s.Bytes > max {
		t.Errorf("stats = %+v", s)
	}
	got = pendingSeries(t, st, OutboxCursor{}, 100)
	if got[len(got)-1] != "b29" {
		t.Errorf("newest alert gone: %v", got)
	}
}

func TestOutboxMigratesFromV1(t *testing.T) {
	path := t.TempDir() + "/perch.db"
	ctx := context.Background()
	// A database of the previous release, at version 1, with an alert.
	db, err := sql.Open("sqlite3", writerDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := migrate(ctx, db, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO alerts (time_ns, source, series) VALUES (1, 'm', 'old')"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st2 := openTest(t, Options{Path: path, Upstream: testUpstream})
	if v := queryInt(t, st2.DB(), "PRAGMA user_version"); v != int64(len(migrations)) {
		t.Errorf("user_version = %d", v)
	}
	mustWrite(t, st2, encode(rec(abi.KindAlert, "new", 0)))
	mustFlush(t, st2)
	if got := pendingSeries(t, st2, OutboxCursor{}, 10); len(got) != 1 || got[0] != "new" {
		t.Errorf("pending = %v", got)
	}
}

func TestOutboxMessage(t *testing.T) {
	for _, tc := range []struct{ payload, want string }{
		{`{"a":1}`, `{"id":7,"a":1}`},
		{`{}`, `{"id":7}`},
		{`{ }`, `{"id":7 }`},
		{``, `{"id":7}`},
		{`[1]`, `{"id":7}`},
	} {
		r := OutboxRow{ID: 7, Payload: []byte(tc.payload)}
		if got := string(r.Message()); got != tc.want {
			t.Errorf("Message(%q) = %s, want %s", tc.payload, got, tc.want)
		}
	}
}

// benchUpstream returns a hook like the uplink's (runtime/uplink.Upstream): alerts, summaries and
// events go upstream, each as a JSON object of about 150 bytes such as
//
//	{"time":"2026-11-25T19:24:02.123456789Z","kind":"alert","source":"threshold",
//	 "series":"overheat","fields":{"temperature_c":31.5},"tags":{"severity":"critical"}}
//
// built in a buffer it reuses, as the uplink's hook does: it allocates nothing per record.
func benchUpstream() UpstreamFunc {
	var buf []byte
	var js jsonEncoder
	topics := [...]string{PriorityAlert: "perch/site/dev/alerts", PrioritySummary: "perch/site/dev/summaries",
		PriorityEvent: "perch/site/dev/events"}
	return func(r *abi.Record) (string, int, []byte, bool) {
		var prio int
		switch r.Kind {
		case abi.KindAlert:
			prio = PriorityAlert
		case abi.KindSummary:
			prio = PrioritySummary
		case abi.KindEvent:
			prio = PriorityEvent
		default:
			return "", 0, nil, false
		}
		buf = append(buf[:0], `{"time":"`...)
		buf = time.Unix(0, r.TimeNS).UTC().AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, `","kind":"`...)
		buf = append(buf, r.Kind.String()...)
		buf = append(buf, `","source":`...)
		buf = jsonx.AppendString(buf, r.Source)
		buf = append(buf, `,"series":`...)
		buf = jsonx.AppendString(buf, r.Series)
		buf = append(buf, `,"fields":`...)
		buf = append(buf, js.fields(r)...)
		buf = append(buf, `,"tags":`...)
		buf = append(buf, js.tags(r)...)
		buf = append(buf, '}')
		return topics[prio], prio, buf, true
	}
}

// benchBatch returns perBatch records of kind, as a pipeline module emits them: a threshold
// detector's record with one field and one tag.
func benchBatch(kind abi.Kind, perBatch int) []byte {
	var batch []byte
	ts := time.Now().UnixNano()
	for i := range perBatch {
		batch = abi.Append(batch, kind, ts+int64(i), "threshold", "overheat",
			[]abi.Field{{Name: "temperature_c", Value: 31.5}},
			[]abi.Tag{{Key: "severity", Value: "critical"}})
	}
	return batch
}

// restamp gives the records of batch the times from ts on, one ns apart, in place, and returns
// the time after the last: records come in with increasing times, as a pipeline's do (the
// time_ns indexes then grow at their end).
func restamp(batch []byte, ts int64) int64 {
	for off := 0; off+abi.HeaderSize <= len(batch); {
		binary.LittleEndian.PutUint64(batch[off+8:], uint64(ts))
		ts++
		off += int(binary.LittleEndian.Uint32(batch[off:]))
	}
	return ts
}

// BenchmarkOutbox measures rows per second into the recorder and the outbox together (each record
// lands in its table and in outbox), group-committed, from Write to durable, with a hook like
// the uplink's. Summaries wait for the group commit; alerts are committed at once with whatever
// is queued. It also reports the records per commit.
func BenchmarkOutbox(b *testing.B) {
	for _, bc := range []struct {
		kind     abi.Kind
		perBatch int
	}{{abi.KindSummary, 1}, {abi.KindSummary, 100}, {abi.KindAlert, 1}, {abi.KindAlert, 100}} {
		kind, perBatch := bc.kind, bc.perBatch
		b.Run(fmt.Sprintf("%s/per_batch=%d", kind, perBatch), func(b *testing.B) {
			st := openTest(b, Options{Upstream: benchUpstream()})
			batch := benchBatch(kind, perBatch)
			ts := time.Now().UnixNano()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ts = restamp(batch, ts) // Write copies the batch
				if err := st.Write(batch); err != nil {
					b.Fatal(err)
				}
			}
			if err := st.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "outbox_rows/s")
			b.ReportMetric(float64(b.N*perBatch)/float64(st.Stats().Commits), "rows/commit")
		})
	}
}

// BenchmarkOutboxLatency measures the enqueue latency of an alert, from Write to durable (its
// group commit, synchronous=FULL, has returned), one alert at a time: alone (load=none); while
// another goroutine writes summaries in batches of 100, 50,000 a second (load=50k_per_s); and as
// fast as the store takes them (load=max), so that the alert waits for the rows queued before
// it. It reports p50 and p99, and the summaries per second recorded meanwhile.
func BenchmarkOutboxLatency(b *testing.B) {
	for _, load := range []struct {
		name string
		rate int // summaries a second; 0 none, -1 as many as the store takes
	}{{"none", 0}, {"50k_per_s", 50_000}, {"max", -1}} {
		b.Run("load="+load.name, func(b *testing.B) { benchOutboxLatency(b, load.rate) })
	}
}

func benchOutboxLatency(b *testing.B, rate int) {
	st := openTest(b, Options{Upstream: benchUpstream()})
	ctx := context.Background()
	stop := make(chan struct{})
	done := make(chan struct{})
	var summaries atomic.Int64
	go func() {
		defer close(done)
		if rate == 0 {
			return
		}
		batch := benchBatch(abi.KindSummary, 100)
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if rate > 0 { // pace: the batch after n summaries is due at n/rate seconds
				due := start.Add(time.Duration(summaries.Load()) * time.Second / time.Duration(rate))
				time.Sleep(time.Until(due))
			}
			restamp(batch, time.Now().UnixNano())
			if err := st.Write(batch); err != nil {
				b.Error(err)
				return
			}
			summaries.Add(100)
		}
	}()
	alert := benchBatch(abi.KindAlert, 1)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		restamp(alert, start.UnixNano())
		if err := st.Write(alert); err != nil {
			b.Fatal(err)
		}
		// The alert's Write made the writer commit at once; Flush returns after that commit
		// (the writer answers it in queue order), so this is the alert's time to durable.
		if err := st.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	close(stop)
	<-done
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(summaries.Load())/b.Elapsed().Seconds(), "summaries/s")
}
