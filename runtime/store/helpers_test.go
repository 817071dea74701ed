package store

import (
	"context"
	"database/sql"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	// The kill -9 test runs this binary again as the process it kills.
	if dir := os.Getenv(kill9ChildEnv); dir != "" {
		os.Exit(runKill9Child(dir))
	}
	os.Exit(m.Run())
}

// openTest opens a store in a fresh directory and closes it when the test ends.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Path == "" {
		opts.Path = filepath.Join(t.TempDir(), "perch.db")
	}
	st, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

// nowNS is the current time in ns since the epoch.
func nowNS() int64 { return time.Now().UnixNano() }

// record is one record to encode with abi.Append.
type record struct {
	kind           abi.Kind
	timeNS         int64
	source, series string
	fields         []abi.Field
	tags           []abi.Tag
}

func encode(recs ...record) []byte {
	var b []byte
	for _, r := range recs {
		b = abi.Append(b, r.kind, r.timeNS, r.source, r.series, r.fields, r.tags)
	}
	return b
}

func reading(timeNS int64, series string, v float64) record {
	return record{kind: abi.KindReading, timeNS: timeNS, source: "drv", series: series,
		fields: []abi.Field{{Name: "v", Value: v}}}
}

func mustWrite(t testing.TB, st *Store, batch []byte) {
	t.Helper()
	if err := st.Write(batch); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func mustFlush(t testing.TB, st *Store) {
	t.Helper()
	if err := st.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// queryInt runs a query that returns one integer.
func queryInt(t testing.TB, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

// queryString runs a query that returns one text value (NULL reads as "").
func queryString(t testing.TB, db *sql.DB, query string, args ...any) string {
	t.Helper()
	var s sql.NullString
	if err := db.QueryRow(query, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return s.String
}
