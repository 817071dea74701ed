package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// commitAttempts is how many times the writer tries a group commit (an operator's sqlite3 may
// hold the write lock longer than the busy timeout) before it drops the rows.
const commitAttempts = 3

// writer is the state of the writer goroutine: the requests waiting for the next group commit.
// Only that goroutine touches it.
type writer struct {
	s        *Store
	pending  []request
	rows     int                  // rows in pending
	timer    *time.Timer          // fires CommitInterval after the first pending request
	failed   error                // a commit that failed since the last reply to Flush
	urgent   bool                 // pending holds an alert that goes upstream: commit without waiting
	ins      inserter             // the state of a commit: its buffers are reused
	tables   [numRowTables]rowBuf // the rows of a commit, per table
	rowStmts rowStmts             // the record path's multi-row INSERTs, prepared on the writer's connection
	stmts    outboxStmts          // the outbox's multi-row INSERTs, prepared on the writer's connection
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
			w.rowStmts.close()
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
	if err := w.rowStmts.prepare(ctx, w.s.rw); err != nil {
		return 0, 0, err
	}
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
	// Reuse the buffers of the last commit (emptied, whatever happened to it).
	ins := &w.ins
	*ins = inserter{ctx: ctx, tx: tx, rows: &w.tables, stmts: &w.rowStmts, args: ins.args,
		json: ins.json, jsonTags: ins.jsonTags, upstream: w.s.opts.Upstream,
		now: time.Now().UnixNano(), out: ins.out}
	for t := range w.tables {
		w.tables[t].reset()
	}
	defer ins.close()
	ins.out.pending, ins.out.arena = ins.out.pending[:0], ins.out.arena[:0]
	ins.out.rows, ins.out.bytes, ins.out.ingested = 0, 0, 0
	ins.out.stmts = &w.stmts
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
	if err := ins.flushAllRows(); err != nil {
		return 0, 0, err
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

// insertSQL are the single-row INSERTs (the outbox quota's and the retention pass's events).
var insertSQL = [numTables]string{
	tabReadings:  "INSERT INTO readings (time_ns, source, series, fields, tags) VALUES (?, ?, ?, ?, ?)",
	tabSummaries: "INSERT INTO summaries (time_ns, source, series, fields, tags) VALUES (?, ?, ?, ?, ?)",
	tabScores:    "INSERT INTO scores (time_ns, source, series, fields, tags) VALUES (?, ?, ?, ?, ?)",
	tabAlerts: "INSERT INTO alerts (time_ns, source, series, severity, message, fields, tags) " +
		"VALUES (?, ?, ?, ?, ?, ?, ?)",
	tabEvents: "INSERT INTO events (time_ns, kind, module, message, fields, tags) VALUES (?, ?, ?, ?, ?, ?)",
	tabOutbox: "INSERT INTO outbox (priority, topic, payload, bytes, created_ns) VALUES (?, ?, ?, ?, ?)",
}

// numRowTables are the recorder's tables the record path inserts into: tabReadings ... tabEvents.
const numRowTables = tabEvents + 1

// rowColumns are the columns of each recorder table in the order the record path binds them:
// time_ns, then the text columns.
var rowColumns = [numRowTables]string{
	tabReadings:  "readings (time_ns, source, series, fields, tags)",
	tabSummaries: "summaries (time_ns, source, series, fields, tags)",
	tabScores:    "scores (time_ns, source, series, fields, tags)",
	tabAlerts:    "alerts (time_ns, source, series, severity, message, fields, tags)",
	tabEvents:    "events (time_ns, kind, module, message, fields, tags)",
}

// maxText is the most text columns of a recorder table (alerts).
const maxText = 6

// rowText is the number of text columns of each recorder table, after time_ns.
var rowText = [numRowTables]int{tabReadings: 4, tabSummaries: 4, tabScores: 4, tabAlerts: 6, tabEvents: 5}

// rowChunks are the row counts of the record path's multi-row INSERTs, largest first: a table's
// rows go in as a full rowChunks[0] as soon as there are that many, and the rest at the end of
// the transaction as few statements as fit (at most 7 parameters a row).
var rowChunks = [...]int{256, 32, 4, 1}

// rowsInsertSQL returns the INSERT of n rows into table t. It is INSERT OR FAIL, not INSERT (OR
// ABORT): a statement that writes several rows and may abort half-way makes SQLite keep a
// statement journal, a copy of every page the statement touches, which cost more than the rows
// themselves (twice the time per row, measured, when the rows land across an index). No row here
// can fail a constraint (every column is bound, none NULL), and any error rolls the whole
// transaction back (writer.insert), so the rows FAIL keeps before an error are never committed.
func rowsInsertSQL(t, n int) string {
	var b strings.Builder
	b.WriteString("INSERT OR FAIL INTO ")
	b.WriteString(rowColumns[t])
	b.WriteString(" VALUES ")
	row := "(?" + strings.Repeat(",?", rowText[t]) + ")"
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	return b.String()
}

// rowStmts are the record path's multi-row INSERTs, per table and rowChunks entry, prepared on
// the writer's connection before its first transaction and kept until the store closes.
type rowStmts [numRowTables][len(rowChunks)]*sql.Stmt

// prepare prepares the statements if they are not yet. The writer calls it outside of any
// transaction: its database has a single connection, which a transaction holds.
func (r *rowStmts) prepare(ctx context.Context, db *sql.DB) error {
	for t := range r {
		for c, n := range rowChunks {
			if r[t][c] != nil {
				continue
			}
			st, err := db.PrepareContext(ctx, rowsInsertSQL(t, n))
			if err != nil {
				return fmt.Errorf("prepare %s insert: %w", tableName(t), err)
			}
			r[t][c] = st
		}
	}
	return nil
}

// close closes the prepared statements.
func (r *rowStmts) close() {
	for t := range r {
		for c, st := range r[t] {
			if st != nil {
				st.Close()
				r[t][c] = nil
			}
		}
	}
}

// tableName returns the name of recorder table t.
func tableName(t int) string {
	name, _, _ := strings.Cut(rowColumns[t], " ")
	return name
}

// rowBuf holds the rows of one table waiting for their multi-row INSERT. Their text columns are
// copied into arena back to back, so queuing a row allocates nothing once the buffers have
// grown; the writer reuses a rowBuf from one transaction to the next.
type rowBuf struct {
	rows  []pendingRow
	arena []byte
	// The last value bound to each text column, and that value boxed: a value that repeats (the
	// source, the series, often the tags) is passed to the driver without boxing it again.
	last  [maxText]string
	lastV [maxText]any
}

// pendingRow is one row of a rowBuf: its time, and where each text column ends in the arena
// (column c starts where column c-1 ends, column 0 where the previous row's last column ends).
type pendingRow struct {
	timeNS int64
	ends   [maxText]int
}

// reset empties b, keeping its buffers.
func (b *rowBuf) reset() {
	b.rows, b.arena = b.rows[:0], b.arena[:0]
}

// add queues a row of time timeNS whose text columns are cols, in the table's order.
func (b *rowBuf) add(timeNS int64, cols ...[]byte) {
	r := pendingRow{timeNS: timeNS}
	for c, v := range cols {
		b.arena = append(b.arena, v...)
		r.ends[c] = len(b.arena)
	}
	b.rows = append(b.rows, r)
}

// addString is add for columns that are strings (lifecycle events).
func (b *rowBuf) addString(timeNS int64, cols ...string) {
	r := pendingRow{timeNS: timeNS}
	for c, v := range cols {
		b.arena = append(b.arena, v...)
		r.ends[c] = len(b.arena)
	}
	b.rows = append(b.rows, r)
}

// inserter inserts rows within one transaction.
type inserter struct {
	ctx           context.Context
	tx            *sql.Tx
	rows          *[numRowTables]rowBuf // the writer's, reused
	stmts         *rowStmts             // prepared on the writer's connection
	txStmts       [numRowTables][len(rowChunks)]*sql.Stmt
	args          []any       // a statement's arguments, reused
	json          jsonEncoder // fields
	jsonTags      jsonEncoder // tags
	lastReadingID int64
	upstream      UpstreamFunc // nil: no uplink
	now           int64        // the transaction's time, ns: created_ns of its outbox rows
	out           outboxTx
}

// queued notes that table t got a row, and inserts a full rowChunks[0] of them.
func (in *inserter) queued(t int) error {
	if len(in.rows[t].rows) < rowChunks[0] {
		return nil
	}
	return in.flushRows(t)
}

// flushRows inserts the rows queued for table t, in order, in as few statements as rowChunks
// allow, and empties its buffer.
func (in *inserter) flushRows(t int) error {
	b := &in.rows[t]
	nText := rowText[t]
	for c, i := 0, 0; i < len(b.rows); {
		n := rowChunks[c]
		if len(b.rows)-i < n {
			c++
			continue
		}
		chunk := b.rows[i : i+n]
		start := 0
		if i > 0 {
			start = b.rows[i-1].ends[nText-1]
		}
		// One string for the chunk's text: its columns are substrings of it, which cost nothing.
		text := string(b.arena[start:chunk[n-1].ends[nText-1]])
		args := in.args[:0]
		from := start
		for _, r := range chunk {
			args = append(args, r.timeNS)
			for col := range nText {
				v := text[from-start : r.ends[col]-start]
				from = r.ends[col]
				if v != b.last[col] || b.lastV[col] == nil {
					b.last[col], b.lastV[col] = v, v
				}
				args = append(args, b.lastV[col])
			}
		}
		in.args = args
		st := in.txStmts[t][c]
		if st == nil {
			// Prepared on the writer's only connection, which the transaction holds:
			// StmtContext reuses it instead of preparing it again.
			st = in.tx.StmtContext(in.ctx, in.stmts[t][c])
			in.txStmts[t][c] = st
		}
		res, err := st.ExecContext(in.ctx, args...)
		clear(args)
		if err != nil {
			return fmt.Errorf("insert %s: %w", tableName(t), err)
		}
		if t == tabReadings {
			// The last row of a multi-row INSERT gets the highest id.
			if in.lastReadingID, err = res.LastInsertId(); err != nil {
				return fmt.Errorf("insert %s: %w", tableName(t), err)
			}
		}
		i += n
	}
	b.reset()
	return nil
}

// flushAllRows inserts the rows queued for every table.
func (in *inserter) flushAllRows() error {
	for t := range in.rows {
		if err := in.flushRows(t); err != nil {
			return err
		}
	}
	return nil
}

func (in *inserter) close() {
	for t := range in.txStmts {
		for _, st := range in.txStmts[t] {
			if st != nil {
				st.Close()
			}
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

// record queues one decoded record for the table of its kind.
func (in *inserter) record(r *abi.Record) error {
	fields := in.json.fields(r)
	var t int
	switch r.Kind {
	case abi.KindReading:
		t = tabReadings
	case abi.KindSummary:
		t = tabSummaries
	case abi.KindScore:
		t = tabScores
	case abi.KindAlert:
		t = tabAlerts
	case abi.KindEvent:
		t = tabEvents
	default:
		// walk passes only the kinds abi knows, and every one of them has a table above.
		return in.enqueue(r)
	}
	b := &in.rows[t]
	tags := in.jsonTags.tags(r) // another encoder: fields is in.json's buffer
	switch t {
	case tabAlerts:
		severity := []byte("warning")
		if v, ok := r.Tag("severity"); ok && len(v) > 0 {
			severity = v
		}
		message, _ := r.Tag("message")
		b.add(r.TimeNS, r.Source, r.Series, severity, message, fields, tags)
	case tabEvents:
		// A module's own event: its series names what happened, its source is the module.
		message, _ := r.Tag("message")
		b.add(r.TimeNS, r.Series, r.Source, message, fields, tags)
	default:
		b.add(r.TimeNS, r.Source, r.Series, fields, tags)
	}
	if err := in.queued(t); err != nil {
		return err
	}
	return in.enqueue(r)
}

// event queues one lifecycle event.
func (in *inserter) event(e *eventRow) error {
	in.rows[tabEvents].addString(e.timeNS, e.kind, e.module, e.message, e.fields, e.tags)
	if err := in.queued(tabEvents); err != nil {
		return err
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
