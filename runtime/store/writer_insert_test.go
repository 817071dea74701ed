package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// TestRecordMultiRowInsert: the rows of one commit, inserted into every recorder table by the
// multi-row INSERTs of every chunk size (and a full chunk flushed mid-commit), keep the order
// of their records and every column, with lifecycle events in order among the module events;
// values that repeat from one row to the next and values that change both land as written.
func TestRecordMultiRowInsert(t *testing.T) {
	st := openTest(t, Options{MaxBatchRows: 1 << 20, CommitInterval: time.Hour, ReadingsMaxRows: 1 << 30})
	const n = 2*256 + 2*32 + 4 + 3 // every chunk size, the largest twice
	kinds := []abi.Kind{abi.KindReading, abi.KindSummary, abi.KindScore, abi.KindAlert, abi.KindEvent}
	ts := nowNS()
	var recs []record
	for i := range n {
		for _, k := range kinds {
			r := record{kind: k, timeNS: ts + int64(i), source: fmt.Sprint("src", i%3),
				series: fmt.Sprint(k, "-", i), fields: []abi.Field{{Name: "v", Value: float64(i)}}}
			if i%5 != 0 { // some rows without tags: "{}"
				r.tags = append(r.tags, abi.Tag{Key: "room", Value: fmt.Sprint("r", i%2)})
			}
			if i%4 != 0 { // some alerts without a severity: "warning"
				r.tags = append(r.tags, abi.Tag{Key: "severity", Value: "critical"})
			}
			if i%3 == 0 {
				r.tags = append(r.tags, abi.Tag{Key: "message", Value: fmt.Sprint("m", i)})
			}
			recs = append(recs, r)
		}
	}
	// Lifecycle events between the batches: they share the events table with module events.
	ctx := context.Background()
	half := len(recs) / 2
	mustWrite(t, st, encode(recs[:half]...))
	if err := st.Event(ctx, Event{TimeNS: ts, Kind: "test.mid", Module: "m1", Message: "middle"}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, st, encode(recs[half:]...))
	if err := st.Event(ctx, Event{TimeNS: ts, Kind: "test.end", Fields: map[string]any{"k": 1}}); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, st)
	if got := st.Stats().Commits; got != 1 {
		t.Fatalf("%d commits, want 1 (the test covers the chunks of one transaction)", got)
	}

	db := st.DB()
	tables := map[abi.Kind]string{abi.KindReading: "readings", abi.KindSummary: "summaries",
		abi.KindScore: "scores", abi.KindAlert: "alerts"}
	for k, table := range tables {
		rows, err := db.Query("SELECT time_ns, source, series, fields, tags FROM " + table + " ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for ; rows.Next(); i++ {
			var tns int64
			var source, series, fields, tags string
			if err := rows.Scan(&tns, &source, &series, &fields, &tags); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%d %s %s-%d {\"v\":%d} %s", ts+int64(i), fmt.Sprint("src", i%3), k, i, i, wantTags(i))
			if got := fmt.Sprintf("%d %s %s %s %s", tns, source, series, fields, tags); got != want {
				t.Fatalf("%s row %d = %s, want %s", table, i, got, want)
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		if i != n {
			t.Errorf("%s has %d rows, want %d", table, i, n)
		}
	}

	rows, err := db.Query("SELECT severity, message FROM alerts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; rows.Next(); i++ {
		var severity, message string
		if err := rows.Scan(&severity, &message); err != nil {
			t.Fatal(err)
		}
		wantSev, wantMsg := "warning", ""
		if i%4 != 0 {
			wantSev = "critical"
		}
		if i%3 == 0 {
			wantMsg = fmt.Sprint("m", i)
		}
		if severity != wantSev || message != wantMsg {
			t.Fatalf("alert %d: severity %q message %q, want %q %q", i, severity, message, wantSev, wantMsg)
		}
	}
	rows.Close()

	// Events: a module's event has kind = its series, module = its source.
	var want []string
	for i, r := range recs {
		if i == half {
			want = append(want, "test.mid m1 middle {} {}")
		}
		if r.kind != abi.KindEvent {
			continue
		}
		j := i / len(kinds)
		msg := ""
		if j%3 == 0 {
			msg = fmt.Sprint("m", j)
		}
		want = append(want, fmt.Sprintf("%s %s %s {\"v\":%d} %s", r.series, r.source, msg, j, wantTags(j)))
	}
	want = append(want, `test.end   {"k":1} {}`)
	// (Open recorded store.migrated before ts.)
	rows, err = db.Query("SELECT kind, module, message, fields, tags FROM events WHERE time_ns >= ? ORDER BY id", ts)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for ; rows.Next(); i++ {
		var kind, module, message, fields, tags string
		if err := rows.Scan(&kind, &module, &message, &fields, &tags); err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%s %s %s %s %s", kind, module, message, fields, tags)
		if i >= len(want) || got != want[i] {
			t.Fatalf("event %d = %s, want %s", i, got, want[min(i, len(want)-1)])
		}
	}
	if i != len(want) {
		t.Errorf("events has %d rows, want %d", i, len(want))
	}
}

// wantTags is the tags JSON TestRecordMultiRowInsert expects for row i.
func wantTags(i int) string {
	var members []string
	if i%5 != 0 {
		members = append(members, fmt.Sprintf(`"room":"r%d"`, i%2))
	}
	if i%4 != 0 {
		members = append(members, `"severity":"critical"`)
	}
	if i%3 == 0 {
		members = append(members, fmt.Sprintf(`"message":"m%d"`, i))
	}
	s := "{"
	for j, m := range members {
		if j > 0 {
			s += ","
		}
		s += m
	}
	return s + "}"
}

// TestReadingsRingOneCommit: a commit of more readings than the ring holds, inserted in several
// multi-row INSERTs, keeps the newest ReadingsMaxRows.
func TestReadingsRingOneCommit(t *testing.T) {
	const max = 100
	st := openTest(t, Options{ReadingsMaxRows: max, MaxBatchRows: 1 << 20, CommitInterval: time.Hour})
	ts := nowNS()
	var recs []record
	for i := range 300 + 32 + 5 {
		recs = append(recs, reading(ts+int64(i), "ring", float64(i)))
	}
	mustWrite(t, st, encode(recs...))
	mustFlush(t, st)
	db := st.DB()
	if n := queryInt(t, db, "SELECT count(*) FROM readings"); n != max {
		t.Errorf("readings hold %d rows, want %d", n, max)
	}
	if v := queryInt(t, db, "SELECT min(json_extract(fields, '$.v')) FROM readings"); v != int64(len(recs)-max) {
		t.Errorf("oldest reading kept is %d, want %d", v, len(recs)-max)
	}
	if got := st.Stats().RingDeleted; got != uint64(len(recs)-max) {
		t.Errorf("Stats().RingDeleted = %d, want %d", got, len(recs)-max)
	}
}
