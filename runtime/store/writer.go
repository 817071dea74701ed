package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
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
	s       *Store
	pending []request
	rows    int                  // rows in pending
	timer   *time.Timer          // fires CommitInterval after the first pending request
	failed  error                // a commit that failed since the last reply to Flush
	urgent  bool                 // pending holds an alert that goes upstream: commit without waiting
	ins     inserter             // the state of a commit: its buffers are reused
	tables  [numRowTables]rowBuf // the rows of a commit, per table
	bulk    bulkStmts            // the multi-row INSERTs, prepared on the writer's connection
	iter    abi.Iter             // walks the batches of a commit
	ckAt    int                  // WAL frames when the checkpointer was last woken
}

// checkpoint wakes the checkpointer if the commits since it last was have added
// walCheckpointFrames frames to the WAL.
func (w *writer) checkpoint() {
	frames := w.s.wal.frames()
	if frames < w.ckAt {
		w.ckAt = 0 // the WAL started over
	}
	if frames < w.ckAt+walCheckpointFrames {
		return
	}
	w.ckAt = frames
	select {
	case w.s.ckWake <- struct{}{}:
	default: // it is awake already, and will see these frames too
	}
}

// run is the writer goroutine. It owns every write to the recorder's tables, so commits and
// retention passes never wait on each other inside SQLite.
func (s *Store) run() {
	defer close(s.stopped)
	w := &writer{s: s, timer: time.NewTimer(time.Hour)}
	w.bulk.wal = s.wal
	w.timer.Stop()
	retention := time.NewTicker(RetentionInterval)
	defer retention.Stop()
	for {
		select {
		case r := <-s.queue:
			w.handle(s.dequeued(r))
			if w.urgent {
				// Commit now, with whatever else is already queued: under a storm of alerts
				// the commits still group while each one waits for its fsync.
				for more := true; more; {
					select {
					case r := <-s.queue:
						w.handle(s.dequeued(r))
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
					w.handle(s.dequeued(r))
				default:
					drained = true
				}
			}
			w.commit()
			s.walFree = w.bulk.close(s.rw)
			close(s.ckWake)
			<-s.ckDone
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
		w.checkpoint()
		if queued > 0 {
			select {
			case s.outboxReady <- struct{}{}:
			default:
			}
		}
	}
	w.urgent = false
	clear(w.pending) // drop the references to the batches
	w.iter = abi.Iter{}
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
	// The transaction holds the writer's only connection, which the multi-row INSERTs use
	// directly (see bulkStmt): through a sql.Conn, whose Raw reaches it.
	conn, err := w.s.rw.Conn(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close() // after the transaction: back to the pool
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback() // after Commit, a no-op
	// Reuse the buffers of the last commit (emptied, whatever happened to it).
	ins := &w.ins
	*ins = inserter{ctx: ctx, tx: tx, conn: conn, rows: &w.tables, bulk: &w.bulk, iter: &w.iter, params: ins.params,
		json: ins.json, jsonTags: ins.jsonTags, upstream: w.s.opts.Upstream,
		now: time.Now().UnixNano(), out: ins.out}
	for t := range w.tables {
		w.tables[t].reset()
	}
	ins.out.reset()
	ins.out.rows, ins.out.bytes, ins.out.ingested = 0, 0, 0
	for _, r := range reqs {
		if r.event != nil {
			err = ins.event(r.event)
		} else {
			_, _, err = walk(r.batch, &w.iter, ins.record)
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

// rowChunks are the row counts of the multi-row INSERTs, largest first: a table's rows (and the
// outbox's) go in as a full rowChunks[0] as soon as there are that many, and the rest at the end
// of the transaction in as few statements as fit (at most 7 parameters a row, so at most 1793
// parameters a statement).
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

// bulkStmts are the writer's multi-row INSERTs, per table (tabReadings ... tabOutbox) and
// rowChunks entry, prepared on the writer's connection when first used and kept until the store
// closes. Only the writer goroutine uses them, inside sql.Conn.Raw on that connection.
type bulkStmts struct {
	conn    any // the go-sqlite3 connection they belong to
	stmts   [numTables][len(rowChunks)]*bulkStmt
	wal     walWatch  // installed on conn with its first statement
	watched *bulkStmt // a statement of conn, once wal watches conn
}

// get returns the INSERT of rowChunks[c] rows into table t, prepared on conn, the driver
// connection that sql.Conn.Raw passed. If database/sql has replaced the connection since the
// last call, the statements of the old one are dropped and prepared again.
func (b *bulkStmts) get(conn any, t, c int) (*bulkStmt, error) {
	if conn != b.conn {
		b.closeAll()
		b.conn = conn
	}
	if st := b.stmts[t][c]; st != nil {
		return st, nil
	}
	defer b.watch()
	query := outboxInsertSQL(rowChunks[c])
	if t != tabOutbox {
		query = rowsInsertSQL(t, rowChunks[c])
	}
	st, err := prepareBulk(conn, query)
	if err != nil {
		return nil, fmt.Errorf("prepare %s insert: %w", tableName(t), err)
	}
	b.stmts[t][c] = st
	return st, nil
}

// watch makes b.wal follow the WAL of b.conn, once it has a statement.
func (b *bulkStmts) watch() {
	if b.watched != nil || b.wal.w == nil {
		return
	}
	for t := range b.stmts {
		for _, st := range b.stmts[t] {
			if st != nil {
				b.wal.watch(st)
				b.watched = st
				return
			}
		}
	}
}

// closeAll finalizes the statements (those of a closed connection are left to it).
func (b *bulkStmts) closeAll() {
	b.watched = nil // a connection that is not b.conn has gone, and its hook with it
	for t := range b.stmts {
		for c, st := range b.stmts[t] {
			if st != nil {
				st.close()
				b.stmts[t][c] = nil
			}
		}
	}
	b.conn = nil
}

// close puts SQLite's own WAL hook back on b.conn and finalizes the statements, before db
// closes. It reports whether no connection has b.wal's hook any more (it may be freed).
func (b *bulkStmts) close(db *sql.DB) (unwatched bool) {
	if conn, err := db.Conn(context.Background()); err == nil {
		conn.Raw(func(dc any) error {
			if dc == b.conn && b.watched != nil {
				b.wal.unwatch(b.watched)
			}
			unwatched = true
			b.closeAll()
			return nil
		})
		conn.Close()
	}
	b.closeAll()
	return unwatched
}

// tableName returns the name of table t.
func tableName(t int) string {
	if t == tabOutbox {
		return "outbox"
	}
	name, _, _ := strings.Cut(rowColumns[t], " ")
	return name
}

// rowBuf holds the rows of one table waiting for their multi-row INSERT. Their text columns are
// copied into arena back to back, and bound from there (see bulkStmt), so queuing and inserting
// a row allocate nothing once the buffers have grown; the writer reuses a rowBuf from one
// transaction to the next.
type rowBuf struct {
	rows  []pendingRow
	arena []byte
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
	conn          *sql.Conn             // the connection tx holds
	rows          *[numRowTables]rowBuf // the writer's, reused
	bulk          *bulkStmts            // the writer's
	params        []bulkParam           // a statement's parameters, reused
	iter          *abi.Iter             // the writer's, for walk
	json          jsonEncoder           // fields
	jsonTags      jsonEncoder           // tags
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
	if len(b.arena) > math.MaxInt32 {
		return fmt.Errorf("insert %s: %d bytes of text in %d rows: more than a statement binds",
			tableName(t), len(b.arena), len(b.rows))
	}
	nText := rowText[t]
	for c, i := 0, 0; i < len(b.rows); {
		n := rowChunks[c]
		if len(b.rows)-i < n {
			c++
			continue
		}
		from := 0
		if i > 0 {
			from = b.rows[i-1].ends[nText-1]
		}
		params := in.params[:0]
		for _, r := range b.rows[i : i+n] {
			params = append(params, intParam(r.timeNS))
			for col := range nText {
				params = append(params, bytesParam(paramText, from, r.ends[col]))
				from = r.ends[col]
			}
		}
		in.params = params
		id, err := in.exec(t, c, b.arena, params)
		if err != nil {
			return fmt.Errorf("insert %s: %w", tableName(t), err)
		}
		if t == tabReadings {
			in.lastReadingID = id // the last row of a multi-row INSERT gets the highest id
		}
		i += n
	}
	b.reset()
	return nil
}

// exec runs the INSERT of rowChunks[c] rows into table t with params, whose text and blobs are
// in arena, on the transaction's connection, and returns the rowid of its last row.
func (in *inserter) exec(t, c int, arena []byte, params []bulkParam) (rowid int64, err error) {
	err = in.conn.Raw(func(conn any) error {
		st, err := in.bulk.get(conn, t, c)
		if err != nil {
			return err
		}
		rowid, err = st.exec(arena, params)
		return err
	})
	return rowid, err
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
		if _, _, err := walk(e.upstream, in.iter, in.enqueue); err != nil && !errors.As(err, &de) {
			return err
		}
	}
	return nil
}

// walk calls fn, if not nil, for each record of batch, and returns how many it saw. Records of a
// kind that abi does not know (a newer ABI's) are skipped by their size and counted in skipped.
// It stops at fn's first error, or at the first record that does not decode with an
// *abi.DecodeError whose Offset counts from the start of batch. it is the iterator it uses, the
// caller's (the records passed to fn are in it, so a local one would be an allocation per call);
// it is left pointing into batch.
func walk(batch []byte, it *abi.Iter, fn func(*abi.Record) error) (rows, skipped int, err error) {
	for off := 0; off < len(batch); {
		*it = abi.Iter{Buf: batch[off:]}
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
