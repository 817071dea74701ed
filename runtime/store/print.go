package store

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"
)

// defaultViews are the views PrintViews prints when given none.
var defaultViews = []string{"recent_alerts", "module_health"}

// viewTitles are the headings of the views schema.sql defines.
var viewTitles = map[string]string{
	"recent_alerts":  "alerts of the last 24 hours, newest first",
	"module_health":  "module lifecycle from the events table",
	"outbox_backlog": "what waits to go upstream, per priority",
}

// printMaxRows is the most rows PrintViews prints per view; sqlite3 shows all of them.
const printMaxRows = 100

// PrintViews prints views (or tables) of the database, recent_alerts and module_health if none
// are given, as aligned text tables, each under a heading: what `perch db` shows, so nobody needs
// the sqlite3 tool. It prints at most 100 rows per view and says so when there are more; NULL
// prints as an empty cell. db may be [Store.DB] or a database from [OpenReadOnly].
func PrintViews(ctx context.Context, w io.Writer, db *sql.DB, views ...string) error {
	if len(views) == 0 {
		views = defaultViews
	}
	for i, view := range views {
		if i > 0 {
			if _, err := io.WriteString(w, "\n"); err != nil {
				return err
			}
		}
		if err := printView(ctx, w, db, view); err != nil {
			return fmt.Errorf("store: print %s: %w", view, err)
		}
	}
	return nil
}

func printView(ctx context.Context, w io.Writer, db *sql.DB, view string) error {
	// A quoted identifier: a view name cannot inject SQL.
	query := `SELECT * FROM "` + strings.ReplaceAll(view, `"`, `""`) + `" LIMIT ` + strconv.Itoa(printMaxRows+1)
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	columns, err := rows.Columns()
	if err != nil {
		return err
	}
	table := [][]string{columns}
	values := make([]any, len(columns))
	ptrs := make([]any, len(columns))
	for i := range values {
		ptrs[i] = &values[i]
	}
	more := false
	for rows.Next() {
		if len(table)-1 == printMaxRows {
			more = true
			break
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		row := make([]string, len(values))
		for i, v := range values {
			row[i] = cell(v)
		}
		table = append(table, row)
	}
	if err := rows.Err(); err != nil {
		return err
	}

	heading := view
	if title, ok := viewTitles[view]; ok {
		heading += ": " + title
	}
	var b strings.Builder
	b.WriteString("== " + heading + " ==\n")
	writeTable(&b, table)
	switch n := len(table) - 1; {
	case n == 0:
		b.WriteString("(no rows)\n")
	case more:
		fmt.Fprintf(&b, "(first %d rows; query the view with sqlite3 for the rest)\n", n)
	case n == 1:
		b.WriteString("(1 row)\n")
	default:
		fmt.Fprintf(&b, "(%d rows)\n", n)
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// writeTable writes the header row, a rule under it, then the rows, in columns padded to their
// widest cell.
func writeTable(b *strings.Builder, table [][]string) {
	widths := make([]int, len(table[0]))
	for _, row := range table {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	rule := make([]string, len(widths))
	for i, n := range widths {
		rule[i] = strings.Repeat("-", n)
	}
	writeRow(b, table[0], widths)
	writeRow(b, rule, widths)
	for _, row := range table[1:] {
		writeRow(b, row, widths)
	}
}

func writeRow(b *strings.Builder, row []string, widths []int) {
	var line strings.Builder
	for i, c := range row {
		line.WriteString(c)
		if i < len(row)-1 {
			line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
		}
	}
	b.WriteString(strings.TrimRight(line.String(), " "))
	b.WriteByte('\n')
}

// cell formats one value for a text table, on one line.
func cell(v any) string {
	var s string
	switch v := v.(type) {
	case nil:
		return ""
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case []byte:
		if !utf8.Valid(v) {
			return fmt.Sprintf("x'%x'", v)
		}
		s = string(v)
	case string:
		s = v
	default:
		s = fmt.Sprint(v)
	}
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}

// OpenReadOnly opens an existing flight recorder read-only (SQLite's mode=ro), for tools such
// as `perch db` that may run beside the runtime. The caller closes the returned database.
func OpenReadOnly(path string) (*sql.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: open read-only: %w", err)
	}
	db, err := sql.Open("sqlite3", readOnlyDSN(path))
	if err != nil {
		return nil, fmt.Errorf("store: open %s read-only: %w", path, err)
	}
	var version int
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s read-only: %w", path, err)
	}
	if version == 0 {
		db.Close()
		return nil, fmt.Errorf("store: open %s read-only: no schema version: not a Perch flight recorder", path)
	}
	return db, nil
}
