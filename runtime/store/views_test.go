package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// seedViews writes alerts and lifecycle events at times relative to now.
func seedViews(t *testing.T, st *Store) {
	t.Helper()
	now := time.Now()
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	mustWrite(t, st, encode(
		record{abi.KindAlert, ago(time.Minute), "rules", "overheat", []abi.Field{{Name: "temperature_c", Value: 91.5}},
			[]abi.Tag{{Key: "severity", Value: "critical"}, {Key: "message", Value: "too hot"}, {Key: "room", Value: "lab"}}},
		record{abi.KindAlert, ago(2 * time.Hour), "rules", "door_open", nil, nil},
		record{abi.KindAlert, ago(25 * time.Hour), "rules", "yesterday", nil, nil},
	))
	ctx := context.Background()
	events := []Event{
		{TimeNS: ago(50 * time.Minute), Kind: EventModuleStarted, Module: "bme280", Message: "v1.2.0"},
		{TimeNS: ago(10 * time.Minute), Kind: EventModuleFault, Module: "bme280", Message: "deadline exceeded"},
		{TimeNS: ago(9 * time.Minute), Kind: EventModuleRestart, Module: "bme280", Fields: map[string]any{"attempt": 1}},
		{TimeNS: ago(9*time.Minute - time.Second), Kind: EventModuleStarted, Module: "bme280"},
		{TimeNS: ago(3 * time.Hour), Kind: EventModuleFault, Module: "bme280", Message: "old fault"},
		{TimeNS: ago(2 * time.Hour), Kind: EventModuleStarted, Module: "door"},
		{TimeNS: ago(90 * time.Minute), Kind: EventModuleFault, Module: "door", Message: "exit 0xbad1"},
		{TimeNS: ago(80 * time.Minute), Kind: EventModuleQuarantined, Module: "door", Message: "5 faults in 10 minutes"},
		{TimeNS: ago(time.Hour / 2), Kind: EventModuleStarted, Module: "ok"},
		{TimeNS: ago(time.Minute), Kind: EventConfigLoaded, Message: "/etc/perch/perch.yaml"},
	}
	for _, e := range events {
		if err := st.Event(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, st)
}

func TestRecentAlerts(t *testing.T) {
	st := openTest(t, Options{})
	seedViews(t, st)
	rows, err := st.DB().Query("SELECT time, severity, series, message, tags FROM recent_alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var ts, severity, series, message, tags string
		if err := rows.Scan(&ts, &severity, &series, &message, &tags); err != nil {
			t.Fatal(err)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", ts); err != nil {
			t.Errorf("time %q is not ISO 8601 UTC with milliseconds: %v", ts, err)
		}
		got = append(got, strings.Join([]string{severity, series, message, tags}, " "))
	}
	want := []string{`critical overheat too hot {"room":"lab"}`, "warning door_open  {}"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("recent_alerts:\n%s\nwant (newest first, last 24 h):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The time column is the alert's time_ns in UTC, to the millisecond.
	const ts = int64(1_700_000_000_123_456_789)
	if got := queryString(t, st.DB(), "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ? / 1000000 / 1000.0, 'unixepoch')", ts); got != "2023-11-14T22:13:20.123Z" {
		t.Errorf("time of %d = %s", ts, got)
	}
}

func TestModuleHealth(t *testing.T) {
	st := openTest(t, Options{})
	seedViews(t, st)
	rows, err := st.DB().Query(`SELECT module, last_started IS NOT NULL, last_fault IS NOT NULL,
		coalesce(last_fault_reason, '-'), faults_1h, restarts_1h, quarantined FROM module_health`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var module, reason string
		var started, faulted bool
		var faults, restarts, quarantined int
		if err := rows.Scan(&module, &started, &faulted, &reason, &faults, &restarts, &quarantined); err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Join([]string{module, yes(started), yes(faulted), reason,
			strconv.Itoa(faults), strconv.Itoa(restarts), strconv.Itoa(quarantined)}, "|"))
	}
	want := []string{
		"bme280|yes|yes|deadline exceeded|1|1|0", // restarted after its last fault
		"door|yes|yes|exit 0xbad1|0|0|1",         // fault more than an hour ago, then quarantined
		"ok|yes|no|-|0|0|0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("module_health:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A start after the quarantine ends it.
	if err := st.Event(context.Background(), Event{Kind: EventModuleStarted, Module: "door"}); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, st)
	if q := queryInt(t, st.DB(), "SELECT quarantined FROM module_health WHERE module = 'door'"); q != 0 {
		t.Error("door still quarantined after module.started")
	}
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// isoTime matches the times the views print; the golden file has them replaced.
var isoTime = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`)

func TestPrintViewsGolden(t *testing.T) {
	st := openTest(t, Options{})
	seedViews(t, st)
	var buf bytes.Buffer
	if err := PrintViews(context.Background(), &buf, st.DB()); err != nil {
		t.Fatal(err)
	}
	got := isoTime.ReplaceAll(buf.Bytes(), []byte("YYYY-MM-DDTHH:MM:SS.sssZ"))
	golden := filepath.Join("testdata", "printviews.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestPrintViewsGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("PrintViews output differs from %s (-update rewrites it):\n%s", golden, got)
	}
}

func TestPrintViewsEdges(t *testing.T) {
	st := openTest(t, Options{})
	ctx := context.Background()
	var buf bytes.Buffer
	if err := PrintViews(ctx, &buf, st.DB(), "recent_alerts"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "(no rows)") {
		t.Errorf("empty view printed as:\n%s", buf.String())
	}
	if err := PrintViews(ctx, &buf, st.DB(), `no_such_view"; DROP TABLE alerts; --`); err == nil {
		t.Error("PrintViews of a missing view: no error")
	}

	// More rows than it prints.
	writeN(t, st, abi.KindAlert, "many", printMaxRows+5, 0)
	buf.Reset()
	if err := PrintViews(ctx, &buf, st.DB(), "recent_alerts"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "(first 100 rows;") || strings.Count(buf.String(), "\n") != printMaxRows+4 {
		t.Errorf("a long view: %d lines, tail %q", strings.Count(buf.String(), "\n"), buf.String()[buf.Len()-80:])
	}
}

func TestOpenReadOnly(t *testing.T) {
	st := openTest(t, Options{})
	seedViews(t, st)
	db, err := OpenReadOnly(st.opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := queryInt(t, db, "SELECT count(*) FROM alerts"); n != 3 {
		t.Errorf("read-only: %d alerts, want 3", n)
	}
	if _, err := db.Exec("DELETE FROM alerts"); err == nil {
		t.Error("a read-only database accepted a write")
	}
	if err := PrintViews(context.Background(), &bytes.Buffer{}, db); err != nil {
		t.Errorf("PrintViews on a read-only database: %v", err)
	}
	if _, err := OpenReadOnly(filepath.Join(t.TempDir(), "missing.db")); err == nil {
		t.Error("OpenReadOnly of a missing file: no error")
	}
}
