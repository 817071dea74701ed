package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestMigrationsAreNumberedInOrder(t *testing.T) {
	sections, err := splitSchema(schemaSQL)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migrations {
		if m.version != i+1 {
			t.Errorf("migrations[%d] has version %d, want %d", i, m.version, i+1)
		}
	}
	if len(sections) > len(migrations) {
		t.Errorf("schema.sql has %d migration sections, but only %d steps run them", len(sections), len(migrations))
	}
	if _, err := splitSchema("-- migration 1: a\n-- migration 3: b\n"); err == nil {
		t.Error("splitSchema accepted a gap in the migration numbers")
	}
}

func TestFreshDatabaseGetsLatestVersion(t *testing.T) {
	st := openTest(t, Options{})
	db := st.DB()
	if v := queryInt(t, db, "PRAGMA user_version"); v != int64(len(migrations)) {
		t.Errorf("user_version = %d, want %d", v, len(migrations))
	}
	if got := queryString(t, db, "SELECT fields FROM events WHERE kind = ?", EventStoreMigrated); got != `{"from":0,"to":`+strconv.Itoa(len(migrations))+`}` {
		t.Errorf("store.migrated event fields = %s", got)
	}
	settings := map[string]string{"journal_mode": "wal", "auto_vacuum": "2"}
	for pragma, want := range settings {
		if got := queryString(t, db, "PRAGMA "+pragma); got != want {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
	// The writer's own connection settings.
	rw := map[string]string{"synchronous": "2", "foreign_keys": "1", "busy_timeout": "5000"}
	for pragma, want := range rw {
		if got := queryString(t, st.rw, "PRAGMA "+pragma); got != want {
			t.Errorf("writer PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "perch.db")
	st, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, st, encode(reading(nowNS(), "kept", 1)))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openTest(t, Options{Path: path})
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM readings WHERE series = 'kept'"); n != 1 {
		t.Errorf("after reopening: %d rows, want 1", n)
	}
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM events WHERE kind = ?", EventStoreMigrated); n != 1 {
		t.Errorf("reopening at the latest version migrated again (%d store.migrated events)", n)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "perch.db")
	st, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	newer := len(migrations) + 1
	setUserVersion(t, path, newer)

	_, err = Open(context.Background(), Options{Path: path})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open of a newer database = %v, want ErrSchemaTooNew", err)
	}
	for _, v := range []int{newer, len(migrations)} {
		if !strings.Contains(err.Error(), strconv.Itoa(v)) {
			t.Errorf("error %q does not name version %d", err, v)
		}
	}
}

func TestOlderSchemaIsMigrated(t *testing.T) {
	// A database at version 1 meets a build whose history has one more step.
	path := filepath.Join(t.TempDir(), "perch.db")
	db, err := sql.Open("sqlite3", writerDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, to, err := migrate(ctx, db, migrations[:1]); err != nil || to != 1 {
		t.Fatalf("migrate to 1 = %d, %v", to, err)
	}
	steps := append(migrations[:1:1], migration{version: 2, title: "alerts get an ack column",
		up: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "ALTER TABLE alerts ADD COLUMN acked_ns INTEGER")
			return err
		}})
	from, to, err := migrate(ctx, db, steps)
	if err != nil || from != 1 || to != 2 {
		t.Fatalf("migrate 1 -> 2 = %d, %d, %v", from, to, err)
	}
	if v := queryInt(t, db, "PRAGMA user_version"); v != 2 {
		t.Errorf("user_version = %d, want 2", v)
	}
	if _, err := db.Exec("UPDATE alerts SET acked_ns = 1"); err != nil {
		t.Errorf("the step did not run: %v", err)
	}

	// A failing step leaves the database as it was.
	steps = append(steps, migration{version: 3, title: "broken", up: func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "CREATE TABLE half_done (x)"); err != nil {
			return err
		}
		return errors.New("boom")
	}})
	if _, _, err := migrate(ctx, db, steps); err == nil || !strings.Contains(err.Error(), "migration 3 (broken)") {
		t.Errorf("failing migration = %v", err)
	}
	if v := queryInt(t, db, "PRAGMA user_version"); v != 2 {
		t.Errorf("after a failed migration user_version = %d, want 2", v)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'"); n != 0 {
		t.Error("a failed migration left its changes behind")
	}
}

func TestForeignDatabaseIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE customers (name TEXT)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(context.Background(), Options{Path: path}); err == nil || !strings.Contains(err.Error(), "not a Perch") {
		t.Errorf("Open of another application's database = %v", err)
	}
}

func setUserVersion(t *testing.T, path string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("PRAGMA user_version = " + strconv.Itoa(v)); err != nil {
		t.Fatal(err)
	}
}
