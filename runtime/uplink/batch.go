package uplink

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"math"
	"sync"
	"time"

	"github.com/perch-edge/perch/runtime/store"
)

// Batches of summaries and events (uplink.summaries.batch, default 60s).
//
// With a batch interval, summaries are not published one per message. They stay in the outbox,
// each in its own row with its own id, as without batching. Once the oldest pending summary has
// waited the interval (by the time it was recorded), every pending summary, at most
// maxBatchRows of them or maxBatchBytes of JSON, goes in one message on the same topic,
// perch/<site>/<device>/summaries. Events are never held back, but the events pending at the
// same time (the runtime's start-up, a backlog after an outage) go together in one message on
// perch/<site>/<device>/events the same way. Alerts are never batched nor held back, and go
// first; raw readings go one per message, last.
//
// A batch is gzipped columnar (uplink.summaries.compress, the default) or a JSON array of the
// messages: format.go describes the payloads, and [DecodeMessages] reads them. Each message keeps
// its own id, so duplicates are dropped per message, however they were grouped (a batch sent again
// after a reconnect may hold more or fewer messages than the first time). A batch takes one
// in-flight slot; the uplink deletes the rows of all its messages when it has seen the PUBACK of
// the message, and counts the message's payload bytes as published.
const (
	maxBatchRows  = 256
	maxBatchBytes = 256 << 10
)

// encodeBatch returns the payload of the message that carries rows (in order of id): gzipped
// columnar if compress (a gzipped JSON array if a row does not parse as a message), else the JSON
// array of their messages ([store.OutboxRow.Message]).
func encodeBatch(rows []store.OutboxRow, compress bool) []byte {
	var body []byte
	if compress {
		body, _ = encodeColumnar(rows)
	}
	if body == nil {
		body = []byte{'['}
		for i := range rows {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, rows[i].Message()...)
		}
		body = append(body, ']')
	}
	if !compress {
		return body
	}
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression) // the level is valid
	zw.Write(body)                                         // a bytes.Buffer does not fail
	zw.Close()
	return b.Bytes()
}

// batchID returns the message id of a batch: the id of its first message. The sniffer maps the
// PUBLISH's packet id to it, and the uplink the batch's id to the ids of all its rows.
func batchID(payload []byte) (int64, bool) {
	if bytes.HasPrefix(payload, []byte(gzipMagic)) {
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return 0, false
		}
		var head [48]byte // `[{"id":` and up to 19 digits, then ',' or '}'
		n, _ := io.ReadFull(zr, head[:])
		payload = head[:n]
		if n > 0 && payload[0] == columnarMagic {
			id, k := binary.Uvarint(payload[1:])
			if k <= 0 || id > math.MaxInt64 {
				return 0, false
			}
			return int64(id), true
		}
	}
	if len(payload) < 2 || payload[0] != '[' || payload[1] != '{' {
		return 0, false
	}
	return messageID(payload[1:])
}

// sentBatch is a batch in flight: the ids of its rows and its payload's size.
type sentBatch struct {
	ids   []int64
	bytes int64
}

// batches are the batches in flight on one connection, by batch id.
type batches struct {
	mu sync.Mutex
	m  map[int64]sentBatch
}

func (b *batches) add(id int64, s sentBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[int64]sentBatch{}
	}
	b.m[id] = s
}

func (b *batches) take(id int64) (sentBatch, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.m[id]
	delete(b.m, id)
	return s, ok
}

// sendBatch publishes the pending rows of priority prio after cursor cur as one message if the
// oldest has waited hold, and moves cursor past them; otherwise it returns how long until it
// has (0: nothing pending). It calls take, which takes a free in-flight slot, before it publishes.
func (u *Uplink) sendBatch(ctx context.Context, cl client, inflight *batches, cursor *store.OutboxCursor,
	cur store.OutboxCursor, prio int, hold time.Duration, now time.Time, take func()) (sent bool, wait time.Duration) {
	only := store.OutboxCursor{math.MaxInt64, math.MaxInt64, math.MaxInt64, math.MaxInt64}
	only[prio] = cur[prio]
	head, err := u.st.OutboxPending(ctx, only, 1)
	if err != nil || len(head) == 0 {
		if err != nil && ctx.Err() == nil {
			u.log.Error("uplink: reading the outbox", "err", err)
		}
		return false, 0
	}
	if wait := time.Unix(0, head[0].CreatedNS).Add(hold).Sub(now); wait > 0 {
		return false, wait
	}
	rows, err := u.st.OutboxPending(ctx, only, maxBatchRows)
	if err != nil || len(rows) == 0 {
		if err != nil && ctx.Err() == nil {
			u.log.Error("uplink: reading the outbox", "err", err)
		}
		return false, 0
	}
	n, size := 1, len(rows[0].Payload)
	for ; n < len(rows) && size+len(rows[n].Payload) <= maxBatchBytes; n++ {
		size += len(rows[n].Payload)
	}
	rows = rows[:n]
	var msg []byte
	if len(rows) == 1 && prio != store.PrioritySummary {
		msg = rows[0].Message() // a lone event goes as it would without batching
	} else {
		msg = encodeBatch(rows, u.cfg.Summaries.Compress)
	}
	ids := make([]int64, len(rows))
	for i := range rows {
		ids[i] = rows[i].ID
		cursor.Advance(&rows[i])
	}
	take()
	if len(rows) > 1 || prio == store.PrioritySummary {
		inflight.add(rows[0].ID, sentBatch{ids: ids, bytes: int64(len(msg))}) // before its PUBACK can come
	}
	cl.Publish(rows[0].Topic, 1, false, msg)
	u.sentToday += int64(len(msg))
	return true, 0
}

// batchAcker is the store's AckBatch; an outbox without it has batches acknowledged with Ack.
type batchAcker interface {
	AckBatch(ctx context.Context, ids []int64, published int64) error
}
