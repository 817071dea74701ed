package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/perch-edge/perch/runtime/store"
)

// cmdDB prints the recorder's views, so that nobody needs the sqlite3 tool on the box.
func cmdDB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch db", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("db", "/var/lib/perch/perch.db", "the recorder `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	db, err := store.OpenReadOnly(*path)
	if err != nil {
		return fmt.Errorf("perch db: %w", err)
	}
	defer db.Close()
	return store.PrintViews(ctx, stdout, db, fs.Args()...)
}
