package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
)

// TestOutboxMultiRowInsert: the rows of one commit, inserted by the multi-row INSERTs of every
// chunk size, keep the order of their records, their payloads, topics, priorities and sizes;
// the hook may reuse its buffer; an empty payload stays an empty blob.
func TestOutboxMultiRowInsert(t *testing.T) {
	var buf []byte
	hook := func(r *abi.Record) (string, int, []byte, bool) {
		if r.Kind == abi.KindReading {
			return "", 0, nil, false
		}
		buf = buf[:0] // reused: the store must have copied the last one
		if string(r.Series) != "empty" {
			buf = fmt.Appendf(buf, `{"series":%q}`, r.Series)
		} else {
			buf = []byte{}
		}
		prio := PrioritySummary
		if r.Kind == abi.KindAlert {
			prio = PriorityAlert
		}
		return "t/" + r.Kind.String(), prio, buf, true
	}
	st := openTest(t, Options{Upstream: hook, MaxBatchRows: 100000})
	const n = 256 + 2*32 + 4 + 3 // every chunk size
	var recs []record
	for i := range n {
		kind := abi.KindSummary
		if i%7 == 0 {
			kind = abi.KindAlert
		}
		series := fmt.Sprint("s", i)
		if i == 5 {
			series = "empty"
		}
		recs = append(recs, record{kind: kind, timeNS: nowNS(), source: "m", series: series},
			reading(nowNS(), "r", float64(i)))
	}
	mustWrite(t, st, encode(recs...))
	mustFlush(t, st)
	rows, err := st.DB().Query("SELECT priority, topic, payload, bytes, created_ns FROM outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	var created int64
	for ; rows.Next(); i++ {
		var prio, size, c int64
		var topic string
		var payload []byte
		if err := rows.Scan(&prio, &topic, &payload, &size, &c); err != nil {
			t.Fatal(err)
		}
		r := recs[2*i]
		want := fmt.Sprintf(`{"series":%q}`, r.series)
		if r.series == "empty" {
			want = ""
		}
		wantPrio := int64(PrioritySummary)
		if r.kind == abi.KindAlert {
			wantPrio = PriorityAlert
		}
		if string(payload) != want || payload == nil || size != int64(len(want)) || prio != wantPrio ||
			topic != "t/"+r.kind.String() {
			t.Errorf("row %d: %d %s %q (%d bytes), want %d %q", i, prio, topic, payload, size, wantPrio, want)
		}
		if i == 0 {
			created = c
		} else if c != created {
			t.Errorf("row %d: created_ns %d, the commit's is %d", i, c, created)
		}
	}
	if i != n {
		t.Errorf("%d outbox rows, want %d", i, n)
	}
	s, err := st.OutboxStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var readings int64
	for _, r := range recs {
		if r.kind == abi.KindReading {
			readings += int64(len(encode(r)))
		}
	}
	if s.Rows != n || s.BytesIngested != readings {
		t.Errorf("stats %+v; want %d rows, %d bytes ingested (the readings)", s, n, readings)
	}
}

func TestAckBatch(t *testing.T) {
	st := openTest(t, Options{Upstream: testUpstream})
	ctx := context.Background()
	mustWrite(t, st, encode(rec(abi.KindSummary, "s1", 10), rec(abi.KindSummary, "s2", 10),
		rec(abi.KindAlert, "a1", 0)))
	mustFlush(t, st)
	rows, err := st.OutboxPending(ctx, OutboxCursor{}, 10)
	if err != nil || len(rows) != 3 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	if err := st.AckBatch(ctx, []int64{rows[1].ID, rows[2].ID}, 25); err != nil {
		t.Fatal(err)
	}
	s, _ := st.OutboxStats(ctx)
	if s.Rows != 1 || s.RowsPublished != 2 || s.BytesPublished != 25 || s.PublishedToday != 25 ||
		s.Bytes != int64(len(rows[0].Payload)) {
		t.Errorf("after a batch: %+v", s)
	}
	// Again (a duplicate after a reconnect): nothing left to delete, nothing counted.
	if err := st.AckBatch(ctx, []int64{rows[1].ID, rows[2].ID}, 25); err != nil {
		t.Fatal(err)
	}
	if err := st.Ack(ctx, []int64{rows[0].ID}); err != nil {
		t.Fatal(err)
	}
	s, _ = st.OutboxStats(ctx)
	if s.Rows != 0 || s.RowsPublished != 3 || s.BytesPublished != 25+int64(len(rows[0].Payload)) || s.Bytes != 0 {
		t.Errorf("after all: %+v", s)
	}
}
