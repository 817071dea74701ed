package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// Outbox priorities: the uplink sends rows in order of priority, then id. The outbox quota drops
// the highest numbers first.
const (
	PriorityAlert   = 0
	PrioritySummary = 1
	PriorityEvent   = 2
	PriorityReading = 3
	numPriorities   = 4
)

// EventUplinkDropped is the event kind the outbox quota records when it drops rows.
const EventUplinkDropped = "uplink.dropped"

// priorityNames name the priorities in uplink.dropped events and in [OutboxStats].
var priorityNames = [numPriorities]string{"alerts", "summaries", "events", "readings"}

// UpstreamFunc decides whether a record goes upstream. It returns the MQTT topic, the priority
// (PriorityAlert ... PriorityReading) and the payload: a JSON object without its "id" member, which
// the uplink adds when it publishes (see [OutboxRow]). It is called on the writer goroutine, one
// record at a time, inside the transaction that records r; it must not keep r nor block. The
// recorder copies payload before it calls the hook again, so the hook may reuse its buffer.
type UpstreamFunc func(r *abi.Record) (topic string, priority int, payload []byte, ok bool)

// OutboxRow is one message waiting to go upstream.
type OutboxRow struct {
	ID        int64  // the row id: the message id the far side uses to drop duplicates
	Priority  int    // PriorityAlert ... PriorityReading
	Topic     string // MQTT topic
	Payload   []byte // a JSON object without "id"; see [OutboxRow.Message]
	CreatedNS int64  // when it was queued, ns since the Unix epoch
}

// Message returns the payload with the row id as its first member: {"id":ID,...}.
func (r *OutboxRow) Message() []byte {
	id := fmt.Appendf(nil, `{"id":%d`, r.ID)
	body := r.Payload
	if len(body) < 2 || body[0] != '{' {
		return append(id, '}')
	}
	if strings.TrimSpace(string(body[1:])) != "}" {
		id = append(id, ',')
	}
	return append(id, body[1:]...)
}

// OutboxCursor is where a reader of the outbox is, per priority: [Store.OutboxPending] returns
// the rows of each priority whose id is above the cursor's. The zero value is the start of the
// backlog.
type OutboxCursor [numPriorities]int64

// Advance moves the cursor past row.
func (c *OutboxCursor) Advance(row *OutboxRow) {
	if row.Priority >= 0 && row.Priority < numPriorities && row.ID > c[row.Priority] {
		c[row.Priority] = row.ID
	}
}

// OutboxPending returns up to limit rows after cursor, in order of priority, then id: every
// pending alert before any summary, and so on. The uplink reads from the zero cursor after each
// reconnect, so unacknowledged rows are sent again in order. It is safe for concurrent use.
func (s *Store) OutboxPending(ctx context.Context, cursor OutboxCursor, limit int) ([]OutboxRow, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	var out []OutboxRow
	for p := 0; p < numPriorities && len(out) < limit; p++ {
		rows, err := s.ro.QueryContext(ctx, `SELECT id, topic, payload, created_ns FROM outbox
			WHERE priority = ? AND id > ? ORDER BY id LIMIT ?`, p, cursor[p], limit-len(out))
		if err != nil {
			return nil, fmt.Errorf("store: outbox: %w", err)
		}
		for rows.Next() {
			r := OutboxRow{Priority: p}
			if err := rows.Scan(&r.ID, &r.Topic, &r.Payload, &r.CreatedNS); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: outbox: %w", err)
			}
			out = append(out, r)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("store: outbox: %w", err)
		}
	}
	return out, nil
}

// Ack deletes the outbox rows whose PUBACK the uplink saw, in one transaction, and adds their
// bytes to bytes_published. Ids that are not in the outbox (acknowledged before, or dropped by
// the quota) are ignored. It returns once the deletion is committed; it is safe for concurrent
// use.
func (s *Store) Ack(ctx context.Context, ids []int64) error { return s.ack(ctx, ids, -1) }

// AckBatch is Ack for the rows that one message carried together (a batch of summaries, maybe
// compressed): it deletes them and adds published, the bytes of that message's payload, to
// bytes_published instead of the rows' own bytes, if any of them was still in the outbox.
func (s *Store) AckBatch(ctx context.Context, ids []int64, published int64) error {
	return s.ack(ctx, ids, max(0, published))
}

// ack deletes ids; published < 0 counts the rows' bytes as published.
func (s *Store) ack(ctx context.Context, ids []int64, published int64) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	tx, err := s.rw.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: ack: %w", err)
	}
	defer tx.Rollback() // after Commit, a no-op
	st, err := tx.PrepareContext(ctx, "DELETE FROM outbox WHERE id = ? RETURNING bytes")
	if err != nil {
		return fmt.Errorf("store: ack: %w", err)
	}
	defer st.Close()
	var rows, bytes int64
	for _, id := range ids {
		var n int64
		err := st.QueryRowContext(ctx, id).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("store: ack %d: %w", id, err)
		}
		rows++
		bytes += n
	}
	if rows > 0 {
		if published < 0 {
			published = bytes
		}
		day := dayStart(time.Now())
		_, err = tx.ExecContext(ctx, `UPDATE uplink_counters SET bytes_published = bytes_published + ?4,
			rows_published = rows_published + ?2, outbox_rows = outbox_rows - ?2,
			outbox_bytes = outbox_bytes - ?1,
			day_bytes = CASE WHEN day_start_ns = ?3 THEN day_bytes + ?4 ELSE ?4 END,
			day_start_ns = ?3 WHERE id = 1`, bytes, rows, day, published)
		if err != nil {
			return fmt.Errorf("store: ack: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: ack: %w", err)
	}
	return nil
}

// OutboxStats are the uplink's counters (totals since the database was created) and its backlog.
type OutboxStats struct {
	BytesIngested  int64 // encoded bytes (ABI records) of the readings recorded: what the sensors produced
	BytesPublished int64 // payload bytes the broker acknowledged (of a batch: its message's)
	RowsPublished  int64
	RowsDropped    int64 // rows the outbox quota dropped
	BytesDropped   int64
	PublishedToday int64                       // payload bytes acknowledged since midnight UTC
	Rows           int64                       // rows in the outbox now
	Bytes          int64                       // their payload bytes
	Backlog        [numPriorities]BacklogStats // per priority
}

// BacklogStats is the backlog of one priority.
type BacklogStats struct {
	Name     string // "alerts", "summaries", "events" or "readings"
	Rows     int64
	Bytes    int64
	OldestNS int64 // created_ns of the oldest row; 0 if none
}

// OutboxStats returns the uplink's counters and backlog from the last commit. It is safe for
// concurrent use.
func (s *Store) OutboxStats(ctx context.Context) (OutboxStats, error) {
	var st OutboxStats
	if err := s.checkOpen(); err != nil {
		return st, err
	}
	err := s.ro.QueryRowContext(ctx, `SELECT bytes_ingested, bytes_published, rows_published,
		rows_dropped, bytes_dropped, outbox_rows, outbox_bytes,
		CASE WHEN day_start_ns = ? THEN day_bytes ELSE 0 END FROM uplink_counters WHERE id = 1`,
		dayStart(time.Now())).Scan(
		&st.BytesIngested, &st.BytesPublished, &st.RowsPublished, &st.RowsDropped, &st.BytesDropped,
		&st.Rows, &st.Bytes, &st.PublishedToday)
	if err != nil {
		return st, fmt.Errorf("store: outbox stats: %w", err)
	}
	for p := range st.Backlog {
		st.Backlog[p].Name = priorityNames[p]
	}
	rows, err := s.ro.QueryContext(ctx, `SELECT priority, count(*), sum(bytes), min(created_ns)
		FROM outbox GROUP BY priority`)
	if err != nil {
		return st, fmt.Errorf("store: outbox stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int
		var b BacklogStats
		if err := rows.Scan(&p, &b.Rows, &b.Bytes, &b.OldestNS); err != nil {
			return st, fmt.Errorf("store: outbox stats: %w", err)
		}
		if p >= 0 && p < numPriorities {
			b.Name = priorityNames[p]
			st.Backlog[p] = b
		}
	}
	return st, rows.Err()
}

// OutboxNotify returns a channel that receives a value (without blocking the writer: at most one
// waits) after each commit that added rows to the outbox.
func (s *Store) OutboxNotify() <-chan struct{} { return s.outboxReady }

// outboxTx is what one group commit adds to the outbox and the counters.
type outboxTx struct {
	rows, bytes int64 // rows and payload bytes inserted
	ingested    int64 // encoded bytes of the readings recorded (what the sensors produced)

	// The rows the Upstream hook queued and flush has not inserted yet, in order (their ids
	// are in the order of the records), by multi-row INSERTs of rowChunks rows: one statement
	// step per chunk, its parameters bound from arena in one cgo call (see bulkStmt).
	pending            []pendingOutbox
	arena              []byte      // their payloads and topics, back to back
	params             []bulkParam // a statement's parameters, reused
	topic              string      // the last topic, and where it is in arena (topicEnd 0: not there)
	topicOff, topicEnd int
}

// pendingOutbox is an outbox row waiting for flush: its topic is arena[topicOff:topicEnd] and
// its payload arena[off:end].
type pendingOutbox struct {
	prio               int
	topicOff, topicEnd int
	off, end           int
}

// reset empties the queued rows, keeping the buffers.
func (o *outboxTx) reset() {
	o.pending, o.arena = o.pending[:0], o.arena[:0]
	o.topicOff, o.topicEnd = 0, 0
}

// outboxInsertSQL returns the INSERT of n outbox rows. ?1 is created_ns, shared by every row;
// row i binds priority, topic and payload (a blob), and bytes is the payload's length. OR FAIL:
// no statement journal, as for the recorder's tables (see rowsInsertSQL).
func outboxInsertSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT OR FAIL INTO outbox (priority, topic, payload, bytes, created_ns) VALUES ")
	for i := range n {
		p := 2 + 3*i
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "(?%d,?%d,?%d,length(?%d),?1)", p, p+1, p+2, p+2)
	}
	return b.String()
}

// enqueue queues r for the outbox if the Upstream hook sends it.
func (in *inserter) enqueue(r *abi.Record) error {
	if in.upstream == nil {
		return nil
	}
	topic, prio, payload, ok := in.upstream(r)
	if !ok {
		return nil
	}
	if prio < 0 || prio >= numPriorities {
		prio = PriorityEvent
	}
	in.outboxRow(topic, prio, payload)
	if len(in.out.pending) < rowChunks[0] {
		return nil
	}
	return in.flushOutbox()
}

// outboxRow queues a row; it copies payload, so the hook may reuse its buffer.
func (in *inserter) outboxRow(topic string, prio int, payload []byte) {
	o := &in.out
	if payload == nil {
		payload = emptyObject
	}
	if o.topicEnd == 0 || topic != o.topic {
		o.topic, o.topicOff = topic, len(o.arena)
		o.arena = append(o.arena, topic...)
		o.topicEnd = len(o.arena)
	}
	off := len(o.arena)
	o.arena = append(o.arena, payload...) // []byte{}: inserted as an empty blob, not NULL
	o.pending = append(o.pending, pendingOutbox{prio: prio, topicOff: o.topicOff, topicEnd: o.topicEnd,
		off: off, end: len(o.arena)})
	o.rows++
	o.bytes += int64(len(payload))
}

// flushOutbox inserts the queued rows and empties the queue.
func (in *inserter) flushOutbox() error {
	o := &in.out
	if len(o.arena) > math.MaxInt32 {
		return fmt.Errorf("insert outbox: %d bytes of payload in %d rows: more than a statement binds",
			len(o.arena), len(o.pending))
	}
	for c, i := 0, 0; i < len(o.pending); {
		n := rowChunks[c]
		if len(o.pending)-i < n {
			c++
			continue
		}
		params := append(o.params[:0], intParam(in.now))
		for _, p := range o.pending[i : i+n] {
			params = append(params, intParam(int64(p.prio)), bytesParam(paramText, p.topicOff, p.topicEnd),
				bytesParam(paramBlob, p.off, p.end))
		}
		o.params = params
		if _, err := in.exec(tabOutbox, c, o.arena, params); err != nil {
			return fmt.Errorf("insert outbox: %w", err)
		}
		i += n
	}
	o.reset()
	return nil
}

// finishOutbox updates the counters in the transaction and, if the outbox is over maxBytes,
// drops rows: the lowest priority first, oldest first, and records an uplink.dropped event.
func (in *inserter) finishOutbox(maxBytes int64) error {
	if err := in.flushOutbox(); err != nil {
		return err
	}
	o := &in.out
	if o.rows == 0 && o.ingested == 0 {
		return nil
	}
	_, err := in.tx.ExecContext(in.ctx, `UPDATE uplink_counters SET bytes_ingested = bytes_ingested + ?,
		outbox_rows = outbox_rows + ?, outbox_bytes = outbox_bytes + ? WHERE id = 1`,
		o.ingested, o.rows, o.bytes)
	if err != nil {
		return fmt.Errorf("uplink counters: %w", err)
	}
	if o.rows == 0 || maxBytes <= 0 {
		return nil
	}
	var total int64
	if err := in.tx.QueryRowContext(in.ctx, "SELECT outbox_bytes FROM uplink_counters WHERE id = 1").Scan(&total); err != nil {
		return fmt.Errorf("uplink counters: %w", err)
	}
	if total <= maxBytes {
		return nil
	}
	return dropOutbox(in.ctx, in.tx, total-maxBytes, maxBytes)
}

// dropOutbox deletes at least excess payload bytes from the outbox, the highest priority number
// first and, within one, the oldest rows first, and records what it did.
func dropOutbox(ctx context.Context, tx *sql.Tx, excess, maxBytes int64) error {
	fields := map[string]any{"outbox_max_bytes": maxBytes}
	var rowsDropped, bytesDropped int64
	var parts []string
	for p := numPriorities - 1; p >= 0 && bytesDropped < excess; p-- {
		// The oldest rows of p whose bytes, added up, cover what is still to free.
		var cutoff, n, b sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT id, n, total FROM (
				SELECT id, row_number() OVER w AS n, sum(bytes) OVER w AS total
				FROM outbox WHERE priority = ? WINDOW w AS (ORDER BY id))
			WHERE total >= ? ORDER BY id LIMIT 1`, p, excess-bytesDropped).Scan(&cutoff, &n, &b)
		if errors.Is(err, sql.ErrNoRows) {
			// Not enough in this priority: drop all of it.
			err = tx.QueryRowContext(ctx, `SELECT max(id), count(*), sum(bytes) FROM outbox
				WHERE priority = ?`, p).Scan(&cutoff, &n, &b)
		}
		if err != nil {
			return fmt.Errorf("outbox quota: %w", err)
		}
		if n.Int64 == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM outbox WHERE priority = ? AND id <= ?", p, cutoff.Int64); err != nil {
			return fmt.Errorf("outbox quota: %w", err)
		}
		fields[priorityNames[p]] = n.Int64
		parts = append(parts, fmt.Sprintf("%d %s", n.Int64, priorityNames[p]))
		rowsDropped += n.Int64
		bytesDropped += b.Int64
	}
	fields["bytes"] = bytesDropped
	_, err := tx.ExecContext(ctx, `UPDATE uplink_counters SET rows_dropped = rows_dropped + ?,
		bytes_dropped = bytes_dropped + ?, outbox_rows = outbox_rows - ?,
		outbox_bytes = outbox_bytes - ? WHERE id = 1`, rowsDropped, bytesDropped, rowsDropped, bytesDropped)
	if err != nil {
		return fmt.Errorf("outbox quota: %w", err)
	}
	js, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("outbox over its quota of %d bytes: dropped %s (%d bytes)", maxBytes,
		strings.Join(parts, ", "), bytesDropped)
	_, err = tx.ExecContext(ctx, insertSQL[tabEvents], time.Now().UnixNano(), EventUplinkDropped, "",
		msg, string(js), "{}")
	if err != nil {
		return fmt.Errorf("outbox quota: %w", err)
	}
	return nil
}

// eventRecord encodes a lifecycle event as an event record for the Upstream hook: source the
// module, series the kind, numeric fields as fields, the message and other fields as tags.
func eventRecord(e *Event) []byte {
	var b abi.Builder
	b.Begin(abi.KindEvent, e.TimeNS, e.Module, e.Kind)
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch v := e.Fields[k].(type) {
		case int:
			b.Field(k, float64(v))
		case int64:
			b.Field(k, float64(v))
		case uint64:
			b.Field(k, float64(v))
		case float64:
			b.Field(k, v)
		case bool:
			b.Tag(k, strconv.FormatBool(v))
		case string:
			b.Tag(k, v)
		default:
			if js, err := json.Marshal(v); err == nil {
				b.Tag(k, string(js))
			}
		}
	}
	if e.Message != "" {
		b.Tag("message", e.Message)
	}
	b.End()
	return b.Buf
}

// dayStart returns midnight UTC of t's day, in ns since the Unix epoch.
func dayStart(t time.Time) int64 {
	return t.UTC().Truncate(24 * time.Hour).UnixNano()
}
