package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// writeN writes n records of a kind in batches, with a padding tag of pad bytes, and flushes.
func writeN(t *testing.T, st *Store, kind abi.Kind, series string, n, pad int) {
	t.Helper()
	tags := []abi.Tag{{Key: "pad", Value: strings.Repeat("x", pad)}}
	var b []byte
	for i := 0; i < n; i++ {
		b = abi.Append(b, kind, nowNS(), "src", series, []abi.Field{{Name: "i", Value: float64(i)}}, tags)
		if i%500 == 499 || i == n-1 {
			mustWrite(t, st, b)
			b = b[:0]
		}
	}
	mustFlush(t, st)
}

func counts(t *testing.T, st *Store) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, table := range quotaTables {
		out[table] = queryInt(t, st.DB(), "SELECT count(*) FROM "+table)
	}
	return out
}

func TestRetentionByAge(t *testing.T) {
	st := openTest(t, Options{MaxAge: time.Hour})
	old, fresh := nowNS()-2*int64(time.Hour), nowNS()
	var batch []byte
	for _, kind := range []abi.Kind{abi.KindReading, abi.KindSummary, abi.KindScore, abi.KindAlert, abi.KindEvent} {
		batch = append(batch, encode(
			record{kind: kind, timeNS: old, source: "m", series: "old"},
			record{kind: kind, timeNS: fresh, source: "m", series: "fresh"})...)
	}
	mustWrite(t, st, batch)
	ctx := context.Background()
	if err := st.Retain(ctx); err != nil {
		t.Fatal(err)
	}

	db := st.DB()
	for _, q := range []string{
		"SELECT count(*) FROM readings WHERE series = ?",
		"SELECT count(*) FROM summaries WHERE series = ?",
		"SELECT count(*) FROM scores WHERE series = ?",
		"SELECT count(*) FROM events WHERE kind = ?",
	} {
		if n := queryInt(t, db, q, "old"); n != 0 {
			t.Errorf("%s: %d old rows left", q, n)
		}
		if n := queryInt(t, db, q, "fresh"); n != 1 {
			t.Errorf("%s: %d fresh rows, want 1", q, n)
		}
	}
	if n := queryInt(t, db, "SELECT count(*) FROM alerts"); n != 2 {
		t.Errorf("alerts: %d rows, want both: alerts are not deleted by age", n)
	}
	ev := queryRow(t, db, `SELECT json_extract(fields, '$.readings'), json_extract(fields, '$.summaries'),
		json_extract(fields, '$.scores'), json_extract(fields, '$.events'), json_extract(fields, '$.alerts'),
		json_extract(fields, '$.max_age_s') FROM events WHERE kind = ?`, EventStoreRetention)
	if want := []string{"1", "1", "1", "1", "", "3600"}; strings.Join(ev, ",") != strings.Join(want, ",") {
		t.Errorf("store.retention event counts %q, want %q", ev, want)
	}

	// A pass that deletes nothing records nothing.
	if err := st.Retain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM events WHERE kind = ?", EventStoreRetention); n != 1 {
		t.Errorf("%d store.retention events after a pass that deleted nothing, want 1", n)
	}
	if got := st.Stats(); got.RetentionDeleted != 4 || got.RetentionPasses != 2 {
		t.Errorf("Stats: RetentionDeleted %d, RetentionPasses %d; want 4, 2", got.RetentionDeleted, got.RetentionPasses)
	}
}

func TestRetentionNegativeMaxAgeKeepsForever(t *testing.T) {
	st := openTest(t, Options{MaxAge: -1})
	mustWrite(t, st, encode(reading(1, "ancient", 1))) // 1970
	if err := st.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM readings"); n != 1 {
		t.Errorf("MaxAge < 0 deleted an old reading")
	}
}

func TestRetentionByDiskQuota(t *testing.T) {
	const quota = 1 << 20
	st := openTest(t, Options{MaxBytes: quota, MaxAge: -1, ReadingsMaxRows: 1 << 30})
	writeN(t, st, abi.KindAlert, "a", 200, 20)
	writeN(t, st, abi.KindScore, "s", 300, 20)
	writeN(t, st, abi.KindSummary, "s", 300, 20)
	writeN(t, st, abi.KindEvent, "e", 300, 20)
	writeN(t, st, abi.KindReading, "r", 20000, 100)
	before := counts(t, st)
	if size, _ := st.fileBytes(); size <= quota {
		t.Fatalf("setup: the file is only %d bytes", size)
	}

	if err := st.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := counts(t, st)
	if size, _ := st.fileBytes(); size > quota {
		t.Errorf("after retention the file and WAL are %d bytes, over the %d quota", size, quota)
	}
	if after["readings"] >= before["readings"] || after["readings"] == 0 {
		t.Errorf("readings %d -> %d: want some, not all, deleted", before["readings"], after["readings"])
	}
	for _, table := range []string{"scores", "summaries", "alerts"} {
		if after[table] != before[table] {
			t.Errorf("%s %d -> %d: touched while readings were left", table, before[table], after[table])
		}
	}
	if after["events"] != before["events"]+1 { // + the store.retention event
		t.Errorf("events %d -> %d, want one more", before["events"], after["events"])
	}
	if n := queryInt(t, st.DB(), "SELECT min(json_extract(fields, '$.i')) FROM readings"); n == 0 {
		t.Error("the oldest reading survived: the newest must be kept")
	}
	if n := queryInt(t, st.DB(), "SELECT json_extract(fields, '$.readings') FROM events WHERE kind = ?", EventStoreRetention); n != before["readings"]-after["readings"] {
		t.Errorf("store.retention event says %d readings, %d were deleted", n, before["readings"]-after["readings"])
	}
}

func TestRetentionDropsAlertsLast(t *testing.T) {
	const quota = 256 << 10
	st := openTest(t, Options{MaxBytes: quota, MaxAge: -1})
	writeN(t, st, abi.KindReading, "r", 500, 20)
	writeN(t, st, abi.KindScore, "s", 500, 20)
	writeN(t, st, abi.KindSummary, "s", 500, 20)
	writeN(t, st, abi.KindAlert, "a", 5000, 60)

	if err := st.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := counts(t, st)
	if size, _ := st.fileBytes(); size > quota {
		t.Errorf("after retention the file and WAL are %d bytes, over the %d quota", size, quota)
	}
	for _, table := range []string{"readings", "scores", "summaries"} {
		if after[table] != 0 {
			t.Errorf("%s: %d rows left while alerts were deleted", table, after[table])
		}
	}
	if after["events"] != 1 || queryInt(t, st.DB(), "SELECT count(*) FROM events WHERE kind = ?", EventStoreRetention) != 1 {
		t.Errorf("events: %d rows, want only the store.retention event", after["events"])
	}
	if after["alerts"] == 0 || after["alerts"] >= 5000 {
		t.Errorf("alerts: %d of 5000 left, want the newest part", after["alerts"])
	}
	if n := queryInt(t, st.DB(), "SELECT max(json_extract(fields, '$.i')) FROM alerts"); n != 4999 {
		t.Errorf("the newest alert is gone (max i %d)", n)
	}
}
