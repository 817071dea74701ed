package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// queryRow returns the columns of the one row a query returns, as text.
func queryRow(t *testing.T, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		t.Fatalf("%s: no row (err %v)", query, rows.Err())
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(cols))
	for i, v := range vals {
		out[i] = v.String
	}
	if rows.Next() {
		t.Fatalf("%s: more than one row", query)
	}
	return out
}

func TestKindsLandInTheirTables(t *testing.T) {
	const ts = int64(1_700_000_000_123_456_789)
	tests := []struct {
		name  string
		rec   record
		query string // selects the row by series
		want  []string
	}{
		{
			name: "reading",
			rec: record{abi.KindReading, ts, "bme280", "climate",
				[]abi.Field{{Name: "temperature_c", Value: 21.5}}, []abi.Tag{{Key: "room", Value: "lab"}}},
			query: "SELECT time_ns, source, series, fields, tags FROM readings WHERE series = ?",
			want:  []string{"1700000000123456789", "bme280", "climate", `{"temperature_c":21.5}`, `{"room":"lab"}`},
		},
		{
			name: "summary",
			rec: record{abi.KindSummary, ts, "mean", "climate_1m",
				[]abi.Field{{Name: "mean", Value: 21.25}, {Name: "max", Value: 22}}, []abi.Tag{{Key: "window", Value: "1m"}}},
			query: "SELECT time_ns, source, series, fields, tags FROM summaries WHERE series = ?",
			want:  []string{"1700000000123456789", "mean", "climate_1m", `{"mean":21.25,"max":22}`, `{"window":"1m"}`},
		},
		{
			name: "score",
			rec: record{abi.KindScore, ts, "ae", "climate_score",
				[]abi.Field{{Name: "score", Value: 0.93}}, nil},
			query: "SELECT time_ns, source, series, fields, tags FROM scores WHERE series = ?",
			want:  []string{"1700000000123456789", "ae", "climate_score", `{"score":0.93}`, `{}`},
		},
		{
			name: "alert with severity and message",
			rec: record{abi.KindAlert, ts, "rule", "overheat",
				[]abi.Field{{Name: "temperature_c", Value: 91}},
				[]abi.Tag{{Key: "severity", Value: "critical"}, {Key: "message", Value: "too hot"}}},
			query: "SELECT time_ns, source, series, severity, message, fields, tags FROM alerts WHERE series = ?",
			want: []string{"1700000000123456789", "rule", "overheat", "critical", "too hot",
				`{"temperature_c":91}`, `{"severity":"critical","message":"too hot"}`},
		},
		{
			name:  "alert without tags",
			rec:   record{abi.KindAlert, ts, "rule", "door_open", nil, nil},
			query: "SELECT time_ns, source, series, severity, message, fields, tags FROM alerts WHERE series = ?",
			want:  []string{"1700000000123456789", "rule", "door_open", "warning", "", "{}", "{}"},
		},
		{
			name: "event from a module",
			rec: record{abi.KindEvent, ts, "door", "door.calibrated",
				[]abi.Field{{Name: "offset", Value: -3}}, []abi.Tag{{Key: "message", Value: "zeroed"}}},
			query: "SELECT time_ns, kind, module, message, fields, tags FROM events WHERE kind = ?",
			want:  []string{"1700000000123456789", "door.calibrated", "door", "zeroed", `{"offset":-3}`, `{"message":"zeroed"}`},
		},
	}
	st := openTest(t, Options{})
	for _, tt := range tests {
		mustWrite(t, st, encode(tt.rec))
	}
	mustFlush(t, st)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := queryRow(t, st.DB(), tt.query, tt.rec.series)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("row\n got %q\nwant %q", got, tt.want)
			}
		})
	}
	if got, want := st.Stats().RowsWritten, uint64(len(tests)); got != want {
		t.Errorf("Stats().RowsWritten = %d, want %d", got, want)
	}
}

func TestEvent(t *testing.T) {
	st := openTest(t, Options{})
	ctx := context.Background()
	err := st.Event(ctx, Event{TimeNS: 42, Kind: EventModuleFault, Module: "bme280",
		Message: "deadline exceeded", Fields: map[string]any{"exit_code": 0xbad1, "call": "poll"}})
	if err != nil {
		t.Fatal(err)
	}
	before := nowNS()
	if err := st.Event(ctx, Event{Kind: EventConfigLoaded, Message: "/etc/perch/perch.yaml"}); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, st)

	got := queryRow(t, st.DB(), "SELECT time_ns, module, message, fields, tags FROM events WHERE kind = ?", EventModuleFault)
	want := []string{"42", "bme280", "deadline exceeded", `{"call":"poll","exit_code":47825}`, "{}"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("fault event\n got %q\nwant %q", got, want)
	}
	if ts := queryInt(t, st.DB(), "SELECT time_ns FROM events WHERE kind = ?", EventConfigLoaded); ts < before {
		t.Errorf("event without a time got time_ns %d, before the call (%d)", ts, before)
	}

	if err := st.Event(ctx, Event{Module: "x"}); err == nil {
		t.Error("Event without a kind: no error")
	}
	if err := st.Event(ctx, Event{Kind: "k", Fields: map[string]any{"bad": math.NaN()}}); err == nil {
		t.Error("Event with a NaN field: no error")
	}
}

func TestFieldsAndTagsAreJSON(t *testing.T) {
	st := openTest(t, Options{})
	rec := record{abi.KindReading, nowNS(), "drv", "json",
		[]abi.Field{
			{Name: "temperature_c", Value: 21.5},
			{Name: "count", Value: 3},
			{Name: "tiny", Value: 1.5e-9},
			{Name: "huge", Value: 6.02e23},
			{Name: "neg", Value: -0.25},
			{Name: "nan", Value: math.NaN()},
			{Name: "inf", Value: math.Inf(1)},
			{Name: `we"ird\name`, Value: 1},
			{Name: "temperature_c", Value: 99}, // repeated: the first value wins
		},
		[]abi.Tag{
			{Key: "room", Value: "lab \"north\"\n"},
			{Key: "unicode", Value: "température ✓"},
			{Key: "binary", Value: "a\xffb\x01"},
			{Key: "room", Value: "ignored"},
		}}
	mustWrite(t, st, encode(rec))
	mustFlush(t, st)

	db := st.DB()
	if !(queryInt(t, db, "SELECT json_valid(fields) AND json_valid(tags) FROM readings") == 1) {
		t.Fatal("fields or tags are not valid JSON")
	}
	floats := []struct {
		path string
		want float64
	}{
		{"$.temperature_c", 21.5}, {"$.count", 3}, {"$.tiny", 1.5e-9}, {"$.huge", 6.02e23},
		{"$.neg", -0.25}, {`$."we\"ird\\name"`, 1},
	}
	for _, f := range floats {
		var got float64
		if err := db.QueryRow("SELECT json_extract(fields, ?) FROM readings", f.path).Scan(&got); err != nil {
			t.Fatalf("json_extract(fields, %s): %v", f.path, err)
		}
		if got != f.want {
			t.Errorf("json_extract(fields, %s) = %v, want %v", f.path, got, f.want)
		}
	}
	if got := queryString(t, db, "SELECT json_type(fields, '$.nan') FROM readings"); got != "null" {
		t.Errorf("NaN stored as JSON %s, want null", got)
	}
	var inf float64
	if err := db.QueryRow("SELECT json_extract(fields, '$.inf') FROM readings").Scan(&inf); err != nil || !math.IsInf(inf, 1) {
		t.Errorf("+Inf read back as %v (%v)", inf, err)
	}
	tags := map[string]string{"$.room": "lab \"north\"\n", "$.unicode": "température ✓", "$.binary": "a\ufffdb\x01"}
	for path, want := range tags {
		if got := queryString(t, db, "SELECT json_extract(tags, ?) FROM readings", path); got != want {
			t.Errorf("json_extract(tags, %s) = %q, want %q", path, got, want)
		}
	}
}

func TestReadingsRing(t *testing.T) {
	const max = 10
	st := openTest(t, Options{ReadingsMaxRows: max})
	ts := nowNS()
	for batch := 0; batch < 5; batch++ { // 25 readings in 5 commits
		var b []byte
		for i := 0; i < 5; i++ {
			n := batch*5 + i
			b = append(b, encode(reading(ts+int64(n), "ring", float64(n)))...)
		}
		mustWrite(t, st, b)
		mustFlush(t, st)
	}
	db := st.DB()
	if n := queryInt(t, db, "SELECT count(*) FROM readings"); n != max {
		t.Errorf("readings hold %d rows, want %d", n, max)
	}
	if v := queryInt(t, db, "SELECT min(json_extract(fields, '$.v')) FROM readings"); v != 15 {
		t.Errorf("oldest reading kept is %d, want 15 (the oldest go first)", v)
	}
	if got := st.Stats().RingDeleted; got != 15 {
		t.Errorf("Stats().RingDeleted = %d, want 15", got)
	}
}

func TestGroupCommitByRows(t *testing.T) {
	// No commit by time: only MaxBatchRows and Flush commit.
	st := openTest(t, Options{MaxBatchRows: 100, CommitInterval: time.Hour})
	for i := 0; i < 1000; i++ {
		mustWrite(t, st, encode(reading(nowNS(), "gc", float64(i))))
	}
	mustFlush(t, st)
	if got := st.Stats(); got.Commits != 10 || got.RowsWritten != 1000 {
		t.Errorf("1000 rows with MaxBatchRows 100: %d commits of %d rows, want 10 of 1000", got.Commits, got.RowsWritten)
	}
}

func TestGroupCommitByInterval(t *testing.T) {
	st := openTest(t, Options{CommitInterval: 10 * time.Millisecond})
	mustWrite(t, st, encode(reading(nowNS(), "tick", 1)))
	// No Flush: the interval commits it. Wait for it, without timing it.
	deadline := time.Now().Add(10 * time.Second)
	for queryInt(t, st.DB(), "SELECT count(*) FROM readings") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a queued row was not committed without Flush")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFailedCommitIsReported(t *testing.T) {
	st := openTest(t, Options{CommitInterval: time.Hour})
	// Break the schema behind the store's back: inserting a score now fails.
	other, err := sql.Open("sqlite3", writerDSN(st.opts.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Exec("DROP TABLE scores"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, st, encode(reading(nowNS(), "lost", 1), record{kind: abi.KindScore, timeNS: nowNS(), source: "ae", series: "s"}))
	if err := st.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), "no such table: scores") {
		t.Fatalf("Flush after a failed commit = %v, want the commit's error", err)
	}
	if got := st.Stats(); got.FailedRows != 2 || got.FailedCommits != 1 {
		t.Errorf("Stats: FailedRows %d, FailedCommits %d; want 2, 1", got.FailedRows, got.FailedCommits)
	}
	// The writer goes on, and the failure is reported once.
	mustWrite(t, st, encode(reading(nowNS(), "kept", 1)))
	mustFlush(t, st)
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM readings WHERE series = 'kept'"); n != 1 {
		t.Errorf("after a failed commit, %d rows of the next one stored, want 1", n)
	}
}

func TestBadBatchKeepsEarlierRecords(t *testing.T) {
	good := encode(reading(nowNS(), "ok", 1), reading(nowNS(), "ok", 2))
	tests := []struct {
		name    string
		batch   []byte
		wantErr error
	}{
		{"truncated", append(bytes.Clone(good), encode(reading(1, "cut", 3))[:20]...), abi.ErrShort},
		{"short tail", append(bytes.Clone(good), 1, 2, 3), abi.ErrShort},
		{"size lies", func() []byte {
			b := append(bytes.Clone(good), encode(reading(1, "lie", 3))...)
			b[len(good)+16]++ // the source's length byte: the strings no longer fill the record
			return b
		}(), abi.ErrBadSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openTest(t, Options{})
			err := st.Write(tt.batch)
			var de *abi.DecodeError
			if !errors.As(err, &de) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Write = %v, want an *abi.DecodeError wrapping %v", err, tt.wantErr)
			}
			if de.Offset != len(good) || !strings.Contains(err.Error(), fmt.Sprintf("at byte %d", len(good))) {
				t.Errorf("error %q: offset %d, want %d named in the message", err, de.Offset, len(good))
			}
			mustFlush(t, st)
			if n := queryInt(t, st.DB(), "SELECT count(*) FROM readings WHERE series = 'ok'"); n != 2 {
				t.Errorf("%d of the 2 records before the bad one stored", n)
			}
			if n := queryInt(t, st.DB(), "SELECT count(*) FROM readings WHERE series <> 'ok'"); n != 0 {
				t.Errorf("%d rows stored from the bad record on", n)
			}
		})
	}
}

func TestUnknownKindSkipped(t *testing.T) {
	st := openTest(t, Options{})
	future := encode(reading(nowNS(), "future", 0))
	future[4] = 42 // a kind from a newer ABI
	batch := append(append(encode(reading(nowNS(), "before", 1)), future...), encode(reading(nowNS(), "after", 2))...)
	if err := st.Write(batch); err != nil {
		t.Fatalf("Write with an unknown kind: %v", err)
	}
	mustFlush(t, st)
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM readings WHERE series IN ('before', 'after')"); n != 2 {
		t.Errorf("%d of the 2 known records around the unknown one stored", n)
	}
	if got := st.Stats().Skipped; got != 1 {
		t.Errorf("Stats().Skipped = %d, want 1", got)
	}
}

func TestWriteCopiesTheBatch(t *testing.T) {
	st := openTest(t, Options{CommitInterval: time.Hour})
	batch := encode(reading(nowNS(), "mine", 1))
	mustWrite(t, st, batch)
	for i := range batch { // the caller reuses its buffer before the commit
		batch[i] = 0xff
	}
	mustFlush(t, st)
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM readings WHERE series = 'mine'"); n != 1 {
		t.Errorf("the row changed with the caller's buffer (%d rows named mine)", n)
	}
}

func TestAfterClose(t *testing.T) {
	st, err := Open(context.Background(), Options{Path: t.TempDir() + "/perch.db", CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, st, encode(reading(nowNS(), "last", 1)))
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := context.Background()
	checks := map[string]error{
		"Write":       st.Write(encode(reading(nowNS(), "late", 1))),
		"Write empty": st.Write(nil),
		"Event":       st.Event(ctx, Event{Kind: "late"}),
		"Flush":       st.Flush(ctx),
		"Retain":      st.Retain(ctx),
		"SetState":    st.SetState(ctx, "m", "k", nil),
	}
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}

	// Close committed what was queued.
	db, err := OpenReadOnly(st.opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := queryInt(t, db, "SELECT count(*) FROM readings WHERE series = 'last'"); n != 1 {
		t.Errorf("the row queued before Close: %d stored, want 1", n)
	}
}

func TestConcurrentWriters(t *testing.T) {
	st := openTest(t, Options{MaxBatchRows: 64})
	ctx := context.Background()
	const writers, batches, perBatch = 8, 50, 7
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Go(func() {
			series := fmt.Sprintf("w%d", w)
			var b []byte
			for i := 0; i < batches; i++ {
				b = b[:0] // reuse the buffer: Write copies it
				for j := 0; j < perBatch; j++ {
					b = abi.Append(b, abi.KindReading, nowNS(), "drv", series, []abi.Field{{Name: "i", Value: float64(i)}}, nil)
				}
				if err := st.Write(b); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 0 {
					if err := st.Event(ctx, Event{Kind: "test.tick", Module: series}); err != nil {
						t.Error(err)
					}
					if err := st.SetState(ctx, series, "i", []byte{byte(i)}); err != nil {
						t.Error(err)
					}
					if err := st.Flush(ctx); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	mustFlush(t, st)
	db := st.DB()
	if n := queryInt(t, db, "SELECT count(*) FROM readings"); n != writers*batches*perBatch {
		t.Errorf("%d readings, want %d", n, writers*batches*perBatch)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM events WHERE kind = 'test.tick'"); n != writers*batches/10 {
		t.Errorf("%d events, want %d", n, writers*batches/10)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM module_state"); n != writers {
		t.Errorf("%d state keys, want %d", n, writers)
	}
}

func TestState(t *testing.T) {
	st := openTest(t, Options{})
	ctx := context.Background()
	if _, ok, err := st.GetState(ctx, "m", "k"); ok || err != nil {
		t.Fatalf("GetState of a missing key = %v, %v; want not found", ok, err)
	}
	steps := []struct {
		set  []byte
		want []byte
	}{
		{[]byte("one"), []byte("one")},
		{[]byte{0, 1, 2, 0xff}, []byte{0, 1, 2, 0xff}},
		{nil, []byte{}},
	}
	for _, step := range steps {
		if err := st.SetState(ctx, "m", "k", step.set); err != nil {
			t.Fatal(err)
		}
		got, ok, err := st.GetState(ctx, "m", "k")
		if err != nil || !ok || !bytes.Equal(got, step.want) || got == nil {
			t.Errorf("after SetState(%q): GetState = %q, %v, %v", step.set, got, ok, err)
		}
	}
	if _, ok, _ := st.GetState(ctx, "other", "k"); ok {
		t.Error("state leaks across modules")
	}
	if err := st.DeleteState(ctx, "m", "k"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := st.GetState(ctx, "m", "k"); ok || err != nil {
		t.Errorf("GetState after DeleteState = %v, %v", ok, err)
	}
	if err := st.DeleteState(ctx, "m", "k"); err != nil {
		t.Errorf("DeleteState of a missing key: %v", err)
	}
}

func TestMeta(t *testing.T) {
	st := openTest(t, Options{})
	ctx := context.Background()
	for _, v := range []string{"lab-1", "lab-2"} {
		if err := st.SetMeta(ctx, "site", v); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := st.Meta(ctx, "site"); got != v || !ok || err != nil {
			t.Errorf("Meta(site) = %q, %v, %v; want %q", got, ok, err, v)
		}
	}
	if _, ok, err := st.Meta(ctx, "device"); ok || err != nil {
		t.Errorf("Meta of a missing key = %v, %v", ok, err)
	}
}

func TestDBIsReadOnly(t *testing.T) {
	st := openTest(t, Options{})
	if _, err := st.DB().Exec("DELETE FROM alerts"); err == nil {
		t.Error("DB() accepted a write")
	}
}

func TestOptionsValidation(t *testing.T) {
	_, err := Open(context.Background(), Options{ReadingsMaxRows: -1, MaxBatchRows: -2})
	for _, want := range []string{"Path", "ReadingsMaxRows", "MaxBatchRows"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open with bad options = %v, want it to name %s", err, want)
		}
	}
}

// FuzzWalk feeds arbitrary batches to the decoder behind Write: it never panics, and the prefix
// it accepts walks again without error; the JSON it makes of fields and tags is valid.
func FuzzWalk(f *testing.F) {
	f.Add(encode(reading(1, "a", 1), record{kind: abi.KindAlert, timeNS: 2, source: "r", series: "x",
		tags: []abi.Tag{{Key: "severity", Value: "critical"}}}))
	unknown := encode(reading(1, "a", 1))
	unknown[4] = 9
	f.Add(unknown)
	f.Add([]byte{18, 0, 0, 0})
	f.Fuzz(func(t *testing.T, batch []byte) {
		var enc jsonEncoder
		rows, _, err := walk(batch, new(abi.Iter), func(r *abi.Record) error {
			if js := enc.fields(r); !json.Valid([]byte(js)) {
				t.Fatalf("fields %s are not JSON", js)
			}
			if js := enc.tags(r); !json.Valid([]byte(js)) {
				t.Fatalf("tags %s are not JSON", js)
			}
			return nil
		})
		valid := len(batch)
		if err != nil {
			var de *abi.DecodeError
			if !errors.As(err, &de) || de.Offset < 0 || de.Offset > len(batch) {
				t.Fatalf("walk error %v is not a DecodeError within the batch", err)
			}
			valid = de.Offset
		}
		again, _, err := walk(batch[:valid], new(abi.Iter), nil)
		if err != nil || again != rows {
			t.Fatalf("the accepted prefix walks to %d rows, %v; first walk saw %d", again, err, rows)
		}
	})
}
