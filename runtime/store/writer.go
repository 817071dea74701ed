package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// commitAttempts is how many times the writer tries a group commit (an operator's sqlite3 may
// hold the write lock longer than the busy timeout) before it drops the rows.
const commitAttempts = 3

// writer is the state of the writer goroutine: the requests waiting for the next group commit.
// Only that goroutine touches it.
type writer struct {
	s       *Store
	pending []request
	rows    int         // rows in pending
	timer   *time.Timer // fires CommitInterval after the first pending request
	failed  error       // a commit that failed since the last reply to Flush
	urgent  bool        // pending holds an alert that goes upstream: commit without waiting
	outbox  outboxTx    // the outbox rows of a commit: its buffers and statements are reused
	stmts   outboxStmts // the outbox's multi-row INSERTs, prepared on the writer's connection
}

// run is the writer goroutine. It owns every write to the recorder's tables, so commits and
// retention passes never wait on each other inside SQLite.
func (s *Store) run() {
	defer close(s.stopped)
	w := &writer{s: s, timer: time.NewTimer(time.Hour)}
	w.timer.Stop()
	retention := time.NewTicker(RetentionInterval)
	defer retention.Stop()
	for {
		select {
		case r := <-s.queue:
			w.handle(r)
			if w.urgent {
				// Commit now, with whatever else is already queued: under a storm of alerts
				// the commits still group while each one waits for its fsync.
				for more := true; more; {
					select {
					case r := <-s.queue:
						w.handle(r)
					default:
						more = false
					}
				}
				w.commit()
			}
		case <-w.timer.C:
			w.commit()
		case <-retention.C:
			w.commit()
			if err := w.retain(); err != nil {
				s.log.Error("store: retention pass failed", "err", err)
			}
		case <-s.stop:
			// Close has set closed under the lock, so nothing more is coming: drain and stop.
			for drained := false; !drained; {
				select {
				case r := <-s.queue:
					w.handle(r)
				default:
					drained = true
				}
			}
			w.commit()
			w.stmts.close()
			s.runErr = errors.Join(w.failed, checkpoint(context.Background(), s.rw))
			return
		}
	}
}

// handle takes one request off the queue.
func (w *writer) handle(r request) {
	if r.reply != nil {
		w.commit()
		err := w.failed
		w.failed = nil
		if r.retain {
			err = errors.Join(err, w.retain())
		}
		r.reply <- err
		return
	}
	w.pending = append(w.pending, r)
	w.rows += r.rows
	if len(w.pending) == 1 {
		w.timer.Reset(w.s.opts.CommitInterval)
	}
	if w.rows >= w.s.opts.MaxBatchRows {
		w.commit()
	}
	w.urgent = w.urgent || r.urgent
}

// commit writes everything pending in one transaction, retrying a failed one a few times. Rows
// it cannot commit are dropped, counted, and reported by the next Flush.
func (w *writer) commit() {
	if len(w.pending) == 0 {
		return
	}
	w.timer.Stop()
	s := w.s
	var err error
	var trimmed, queued int64
	for attempt := 1; attempt <= commitAttempts; attempt++ {
		if trimmed, queued, err = w.insert(w.pending); err == nil {
			break
		}
		if attempt < commitAttempts {
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
	}
	if err != nil {
		s.failedRows.Add(uint64(w.rows))
		s.failedCommits.Add(1)
		s.log.Error("store: group commit failed, rows dropped", "rows", w.rows, "err", err)
		if w.failed == nil {
			w.failed = fmt.Errorf("store: group commit of %d rows failed: %w", w.rows, err)
		}
	} else {
		s.rowsWritten.Add(uint64(w.rows))
		s.commits.Add(1)
		s.ringDeleted.Add(uint64(trimmed))
		if queued > 0 {
			select {
			case s.outboxReady <- struct{}{}:
			default:
			}
		}
	}
	w.urgent = false
	clear(w.pending) // drop the references to the batches
	w.pending = w.pending[:0]
	w.rows = 0
}

// insert inserts the requests in one transaction, with the outbox rows of the records that go
// upstream, and trims the readings ring. It returns the number of readings the ring deleted and
// of rows added to the outbox.
func (w *writer) insert(reqs []request) (trimmed, queued int64, err error) {
	// A context without a Done channel: go-sqlite3 then runs each statement directly instead of
	// starting a goroutine that watches for cancellation.
	ctx := context.Background()
	if w.s.opts.Upstream != nil {
		if err := w.stmts.prepare(ctx, w.s.rw); err != nil {
			return 0, 0, err
		}
	}
	tx, err := w.s.rw.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback() // after Commit, a no-op
	ins := inserter{ctx: ctx, tx: tx, upstream: w.s.opts.Upstream, now: time.Now().UnixNano()}
	defer ins.close()
	// Reuse the outbox buffers of the last commit (emptied, whatever happened to it).
	w.outbox.pending, w.outbox.arena = w.outbox.pending[:0], w.outbox.arena[:0]
	w.outbox.rows, w.outbox.bytes, w.outbox.ingested = 0, 0, 0
	ins.out, ins.out.stmts = w.outbox, &w.stmts
	defer func() { w.outbox = ins.out }()
	for _, r := range reqs {
		if r.event != nil {
			err = ins.event(r.event)
		} else {
			_, _, err = walk(r.batch, ins.record)
			ins.out.ingested += readingBytes(r.batch)
		}
		if err != nil {
			return 0, 0, err
		}
	}
	if err := ins.finishOutbox(w.s.opts.OutboxMaxBytes); err != nil {
		return 0, 0, err
	}
	if ring := int64(w.s.opts.ReadingsMaxRows); ins.lastReadingID > ring {
		// Ids are handed out in increasing order, so the newest ring rows are the ids above
		// last-ring; deleting the rest keeps at most ring rows even if retention left holes.
		res, err := tx.ExecContext(ctx, "DELETE FROM readings WHERE id <= ?", ins.lastReadingID-ring)
		if err != nil {
			return 0, 0, fmt.Errorf("trim readings: %w", err)
		}
		trimmed, _ = res.RowsAffected()
	}
	return trimmed, ins.out.rows, tx.Commit()
}

// eventRow is an event ready to insert into the events table.
type eventRow struct {
	timeNS                int64
	kind, module, message string
	fields, tags          string // JSON objects
	upstream              []byte // the event as an ABI record, for the Upstream hook; or nil
}

// Tables the writer inserts into, in the order of their statements.
const (
	tabReadings = iota
	tabSummaries
	tabScores
	tabAlerts
	tabEvents
	tabOutbox
	numTables
)

var insertSQL = [numTables]string{
	tabReadings:  "INSERT INTO readings (time_ns, source, series, fields, tags) VALUES (?, ?, ?, ?, ?)",
	tabSummaries: "INSERT INTO summaries (time_ns, source, series, fields, tags) VALUES (?, ?, ?, ?, ?)",
	tabScores:    "INSERT INTO scores (time_ns, source, series, fields, tags) VALUES (?, ?, ?, ?, ?)",
	tabAlerts: "INSERT INTO alerts (time_ns, source, series, severity, message, fields, tags) " +
		"VALUES (?, ?, ?, ?, ?, ?, ?)",
	tabEvents: "INSERT INTO events (time_ns, kind, module, message, fields, tags) VALUES (?, ?, ?, ?, ?, ?)",
	tabOutbox: "INSERT INTO outbox (priority, topic, payload, bytes, created_ns) VALUES (?, ?, ?, ?, ?)",
}

// inserter inserts rows within one transaction, preparing each table's statement on first use.
type inserter struct {
	ctx           context.Context
	tx            *sql.Tx
	stmts         [numTables]*sql.Stmt
	json          jsonEncoder
	lastReadingID int64
	upstream      UpstreamFunc // nil: no uplink
	now           int64        // the transaction's time, ns: created_ns of its outbox rows
	out           outboxTx
}

func (in *inserter) exec(table int, args ...any) (sql.Result, error) {
	if in.stmts[table] == nil {
		st, err := in.tx.PrepareContext(in.ctx, insertSQL[table])
		if err != nil {
			return nil, err
		}
		in.stmts[table] = st
	}
	return in.stmts[table].ExecContext(in.ctx, args...)
}

func (in *inserter) close() {
	for _, st := range in.stmts {
		if st != nil {
			st.Close()
		}
	}
}

// readingBytes returns the encoded size of the readings in batch: the bytes ingested, what the
// sensors produced (summaries, scores, alerts and events are what the pipeline made of them).
// It reads only the records' headers; batch decoded without error (unknown kinds are skipped by
// their size), and it stops at anything that does not fit.
func readingBytes(batch []byte) int64 {
	var n int64
	for off := 0; off+abi.HeaderSize <= len(batch); {
		size := int(binary.LittleEndian.Uint32(batch[off:]))
		if size < abi.HeaderSize || size > len(batch)-off {
			break
		}
		if abi.Kind(batch[off+4]) == abi.KindReading {
			n += int64(size)
		}
		off += size
	}
	return n
}

// record inserts one decoded record into the table of its kind.
func (in *inserter) record(r *abi.Record) error {
	fields := in.json.fields(r)
	tags := in.json.tags(r)
	source, series := string(r.Source), string(r.Series)
	var err error
	switch r.Kind {
	case abi.KindReading:
		var res sql.Result
		if res, err = in.exec(tabReadings, r.TimeNS, source, series, fields, tags); err == nil {
			in.lastReadingID, err = res.LastInsertId()
		}
	case abi.KindSummary:
		_, err = in.exec(tabSummaries, r.TimeNS, source, series, fields, tags)
	case abi.KindScore:
		_, err = in.exec(tabScores, r.TimeNS, source, series, fields, tags)
	case abi.KindAlert:
		severity := "warning"
		if v, ok := r.Tag("severity"); ok && len(v) > 0 {
			severity = string(v)
		}
		message, _ := r.Tag("message")
		_, err = in.exec(tabAlerts, r.TimeNS, source, series, severity, string(message), fields, tags)
	case abi.KindEvent:
		// A module's own event: its series names what happened, its source is the module.
		message, _ := r.Tag("message")
		_, err = in.exec(tabEvents, r.TimeNS, series, source, string(message), fields, tags)
	default:
		// walk passes only the kinds abi knows, and every one of them has a table above.
	}
	if err != nil {
		return fmt.Errorf("insert %s: %w", r.Kind, err)
	}
	return in.enqueue(r)
}

// event inserts one lifecycle event.
func (in *inserter) event(e *eventRow) error {
	if _, err := in.exec(tabEvents, e.timeNS, e.kind, e.module, e.message, e.fields, e.tags); err != nil {
		return fmt.Errorf("insert event %s: %w", e.kind, err)
	}
	if e.upstream != nil {
		// The event is recorded whatever happens to its upstream copy (Builder makes valid
		// records, so a decoding error is not expected; it must not fail the commit).
		var de *abi.DecodeError
		if _, _, err := walk(e.upstream, in.enqueue); err != nil && !errors.As(err, &de) {
			return err
		}
	}
	return nil
}

// walk calls fn, if not nil, for each record of batch, and returns how many it saw. Records of a
// kind that abi does not know (a newer ABI's) are skipped by their size and counted in skipped.
// It stops at fn's first error, or at the first record that does not decode with an
// *abi.DecodeError whose Offset counts from the start of batch.
func walk(batch []byte, fn func(*abi.Record) error) (rows, skipped int, err error) {
	for off := 0; off < len(batch); {
		it := abi.Iter{Buf: batch[off:]}
		for it.Next() {
			if fn != nil {
				if err := fn(&it.Rec); err != nil {
					return rows, skipped, err
				}
			}
			rows++
		}
		err := it.Err()
		if err == nil {
			break
		}
		var de *abi.DecodeError
		if !errors.As(err, &de) {
			return rows, skipped, err
		}
		at := off + de.Offset
		if !errors.Is(err, abi.ErrBadKind) {
			return rows, skipped, &abi.DecodeError{Offset: at, Err: de.Err}
		}
		// Iter checks a record's size against the batch before its kind, so the size is sound.
		skipped++
		off = at + int(binary.LittleEndian.Uint32(batch[at:]))
	}
	return rows, skipped, nil
}

// checkpoint copies the WAL into the database file and truncates the WAL to zero bytes. It
// waits (up to the busy timeout) for readers that still use the WAL; if some still do, it copies
// what it can and leaves the rest for a later checkpoint, which is not an error: the data is safe
// in the WAL either way.
func checkpoint(ctx context.Context, db *sql.DB) error {
	var busy, walFrames, copied int
	err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &walFrames, &copied)
	if err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	return nil
}
