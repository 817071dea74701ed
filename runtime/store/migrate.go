package store

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// schemaSQL is the documented schema: a header, then one section per migration that starts with
// a line "-- migration N: title".
//
//go:embed schema.sql
var schemaSQL string

// migration is one step of the schema's history: it brings a database from user_version
// version-1 to version.
type migration struct {
	version int
	title   string
	up      func(ctx context.Context, tx *sql.Tx) error
}

// migrations is the schema's history, in order. Append new steps at the end (a new section of
// schema.sql, or Go code for data changes); never change a step that has shipped.
var migrations = []migration{
	{version: 1, title: "initial schema", up: schemaSection(1)},
	{version: 2, title: "outbox", up: schemaSection(2)},
	{version: 3, title: "updates", up: schemaSection(3)},
}

// schemaSection returns a step that executes section version of schema.sql.
func schemaSection(version int) func(ctx context.Context, tx *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		sections, err := splitSchema(schemaSQL)
		if err != nil {
			return err
		}
		text, ok := sections[version]
		if !ok {
			return fmt.Errorf("schema.sql has no section '-- migration %d:'", version)
		}
		_, err = tx.ExecContext(ctx, text)
		return err
	}
}

const migrationMarker = "-- migration "

// splitSchema cuts schema.sql into its migration sections, by version. The sections must be
// numbered 1, 2, 3 ... in order.
func splitSchema(schema string) (map[int]string, error) {
	sections := map[int]string{}
	version := 0
	var text strings.Builder
	flush := func() {
		if version > 0 {
			sections[version] = text.String()
		}
		text.Reset()
	}
	for line := range strings.Lines(schema) {
		if rest, ok := strings.CutPrefix(line, migrationMarker); ok {
			num, _, _ := strings.Cut(rest, ":")
			n, err := strconv.Atoi(num)
			if err != nil || n != version+1 {
				return nil, fmt.Errorf("schema.sql: %q: want '-- migration %d: title'",
					strings.TrimSpace(line), version+1)
			}
			flush()
			version = n
		}
		text.WriteString(line)
	}
	flush()
	return sections, nil
}

// migrate applies the steps the database lacks, and sets user_version, in one transaction (an
// IMMEDIATE one: two processes opening the same file do not both migrate). It returns the
// versions before and after.
func migrate(ctx context.Context, db *sql.DB, steps []migration) (from, to int, err error) {
	latest := len(steps)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback() // after Commit, a no-op
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&from); err != nil {
		return 0, 0, err
	}
	switch {
	case from > latest:
		return from, from, fmt.Errorf("%w: the database is at schema version %d, this build knows "+
			"versions up to %d; run a newer perch or move the file away", ErrSchemaTooNew, from, latest)
	case from == latest:
		return from, from, nil
	case from == 0:
		// A file with tables but no version was not made by us: do not add ours to it.
		var tables int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
			return 0, 0, err
		}
		if tables > 0 {
			return 0, 0, fmt.Errorf("the file has %d schema objects but no schema version: "+
				"it is not a Perch flight recorder", tables)
		}
	}
	for _, m := range steps[from:] {
		if err := m.up(ctx, tx); err != nil {
			return from, from, fmt.Errorf("migration %d (%s): %w", m.version, m.title, err)
		}
	}
	// PRAGMA takes no bound parameters; latest is an int.
	if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(latest)); err != nil {
		return from, from, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO events (time_ns, kind, message, fields) VALUES (?, ?, ?, ?)`,
		time.Now().UnixNano(), EventStoreMigrated,
		fmt.Sprintf("schema migrated from version %d to %d", from, latest),
		fmt.Sprintf(`{"from":%d,"to":%d}`, from, latest))
	if err != nil {
		return from, from, err
	}
	if err := tx.Commit(); err != nil {
		return from, from, err
	}
	return from, latest, nil
}
