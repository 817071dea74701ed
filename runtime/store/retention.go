package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// ageTables are the tables whose rows retention deletes once older than MaxAge. Alerts are not
// among them: they go only when the disk quota needs their space.
var ageTables = []string{"readings", "summaries", "scores", "events"}

// quotaTables are the tables retention deletes from, oldest rows first, while the database is
// over its disk quota: each is emptied before the next is touched, and alerts come last.
var quotaTables = []string{"readings", "scores", "summaries", "events", "alerts"}

// quotaHeadroom is the part of MaxBytes that a pass over quota frees beyond the quota, so that
// the next passes do not each delete a sliver.
const quotaHeadroom = 10 // percent

// retention is what one pass deleted, by table.
type retention struct {
	byAge, byQuota map[string]int64
	bytesBefore    int64
	bytesAfter     int64
}

func (r *retention) total() int64 { return sum(r.byAge) + sum(r.byQuota) }

// retain runs one retention pass on the writer goroutine: by age, then by disk quota. If it
// deleted anything, even when it then failed, it records a store.retention event.
//
// Rows deleted by age leave free pages in the file, which the next inserts reuse: the file
// shrinks only when it is over its quota (see enforceQuota), not at every pass.
func (w *writer) retain() error {
	s := w.s
	ctx := context.Background() // see insert
	s.retentionPasses.Add(1)
	r := retention{byAge: map[string]int64{}, byQuota: map[string]int64{}}
	var err error
	if r.bytesBefore, err = s.fileBytes(); err != nil {
		return err
	}
	if s.opts.MaxAge > 0 {
		err = w.deleteOlderThan(ctx, time.Now().Add(-s.opts.MaxAge).UnixNano(), r.byAge)
	}
	if err == nil && s.opts.MaxBytes > 0 {
		err = w.enforceQuota(ctx, r.byQuota)
	}
	if r.total() == 0 {
		return err
	}
	s.retentionDeleted.Add(uint64(r.total()))
	r.bytesAfter, _ = s.fileBytes() // best effort: the event matters more
	s.log.Info("store: retention pass", "deleted_by_age", r.byAge, "deleted_by_quota", r.byQuota,
		"bytes_before", r.bytesBefore, "bytes_after", r.bytesAfter)
	return errors.Join(err, w.recordRetention(ctx, &r))
}

// deleteOlderThan deletes, in one transaction, the rows of ageTables older than cutoff (ns).
func (w *writer) deleteOlderThan(ctx context.Context, cutoff int64, deleted map[string]int64) error {
	tx, err := w.s.rw.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // after Commit, a no-op
	for _, table := range ageTables {
		res, err := tx.ExecContext(ctx, "DELETE FROM "+table+" WHERE time_ns < ?", cutoff)
		if err != nil {
			return fmt.Errorf("store: retention by age, %s: %w", table, err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			deleted[table] = n
		}
	}
	return tx.Commit()
}

// enforceQuota keeps the database file and its WAL under MaxBytes. A DELETE does not shrink the
// file (SQLite keeps the freed pages for reuse), so it first gives free pages back to the file
// system; if the file is still over, it deletes the oldest rows of quotaTables, in order, until
// the pages in use fit under MaxBytes less the headroom, then shrinks the file again.
func (w *writer) enforceQuota(ctx context.Context, deleted map[string]int64) error {
	s := w.s
	if size, err := s.fileBytes(); err != nil || size <= s.opts.MaxBytes {
		return err
	}
	if err := reclaim(ctx, s); err != nil {
		return err
	}
	if size, err := s.fileBytes(); err != nil || size <= s.opts.MaxBytes {
		return err
	}
	target := s.opts.MaxBytes - s.opts.MaxBytes*quotaHeadroom/100
	used, err := s.usedBytes(ctx)
	if err != nil {
		return err
	}
	for _, table := range quotaTables {
		if used <= target {
			break
		}
		if used, err = w.deleteOldestUntil(ctx, table, used, target, deleted); err != nil {
			return err
		}
	}
	return reclaim(ctx, s)
}

// deleteOldestUntil deletes the oldest rows of table in chunks until the database's pages in
// use (used, in bytes) are at most target or the table is empty, and returns the bytes in use
// afterwards. A page is freed only once all its rows are gone, so the bytes a row takes are
// known only roughly: the first chunk is small, and each next one deletes half the rows that the
// bytes freed so far say are still needed. Few alerts go more than needed.
func (w *writer) deleteOldestUntil(ctx context.Context, table string, used, target int64, deleted map[string]int64) (int64, error) {
	const firstChunk, minChunk = 100, 16 // rows
	start := used
	chunk := int64(firstChunk)
	for used > target {
		res, err := w.s.rw.ExecContext(ctx,
			"DELETE FROM "+table+" WHERE id IN (SELECT id FROM "+table+" ORDER BY id LIMIT ?)", chunk)
		if err != nil {
			return used, fmt.Errorf("store: retention by quota, %s: %w", table, err)
		}
		n, _ := res.RowsAffected()
		if n == 0 {
			break // the table is empty
		}
		deleted[table] += n
		if used, err = w.s.usedBytes(ctx); err != nil {
			return used, err
		}
		if freed := start - used; freed > 0 {
			bytesPerRow := max(freed/deleted[table], 1)
			chunk = max((used-target)/bytesPerRow/2, minChunk)
		}
	}
	return used, nil
}

// recordRetention inserts the store.retention event of a pass that deleted rows.
func (w *writer) recordRetention(ctx context.Context, r *retention) error {
	fields := map[string]any{"bytes_before": r.bytesBefore, "bytes_after": r.bytesAfter}
	if w.s.opts.MaxAge > 0 {
		fields["max_age_s"] = int64(w.s.opts.MaxAge / time.Second)
	}
	for _, table := range quotaTables {
		if n := r.byAge[table] + r.byQuota[table]; n > 0 {
			fields[table] = n
		}
	}
	js, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	var parts []string
	if n := sum(r.byAge); n > 0 {
		parts = append(parts, fmt.Sprintf("%d rows older than %v", n, w.s.opts.MaxAge))
	}
	if n := sum(r.byQuota); n > 0 {
		parts = append(parts, fmt.Sprintf("%d rows over the disk quota of %d bytes", n, w.s.opts.MaxBytes))
	}
	row := eventRow{timeNS: time.Now().UnixNano(), kind: EventStoreRetention,
		message: "deleted " + strings.Join(parts, " and "), fields: string(js), tags: "{}"}
	_, err = w.s.rw.ExecContext(ctx, insertSQL[tabEvents], row.timeNS, row.kind, row.module,
		row.message, row.fields, row.tags)
	if err != nil {
		return fmt.Errorf("store: record retention event: %w", err)
	}
	w.s.rowsWritten.Add(1)
	return nil
}

func sum(m map[string]int64) (n int64) {
	for _, c := range m {
		n += c
	}
	return n
}

// reclaim gives the database's free pages back to the file system (the file is created with
// auto_vacuum=INCREMENTAL) and truncates the WAL.
func reclaim(ctx context.Context, s *Store) error {
	// incremental_vacuum frees one page per step of the statement: read all of its rows, as Exec
	// would step it only once.
	rows, err := s.rw.QueryContext(ctx, "PRAGMA incremental_vacuum")
	if err != nil {
		return fmt.Errorf("store: incremental_vacuum: %w", err)
	}
	for rows.Next() {
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("store: incremental_vacuum: %w", err)
	}
	return checkpoint(ctx, s.rw)
}

// usedBytes returns the bytes of the database's pages in use: the file's size once the free
// pages are given back.
func (s *Store) usedBytes(ctx context.Context) (int64, error) {
	var used int64
	err := s.rw.QueryRowContext(ctx, `SELECT (p.page_count - f.freelist_count) * z.page_size
		FROM pragma_page_count() AS p, pragma_freelist_count() AS f, pragma_page_size() AS z`).Scan(&used)
	if err != nil {
		return 0, fmt.Errorf("store: page count: %w", err)
	}
	return used, nil
}

// fileBytes returns the size of the database file and its WAL, in bytes.
func (s *Store) fileBytes() (int64, error) {
	var total int64
	for _, name := range []string{s.opts.Path, s.opts.Path + "-wal"} {
		fi, err := os.Stat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("store: %w", err)
		}
		total += fi.Size()
	}
	return total, nil
}
