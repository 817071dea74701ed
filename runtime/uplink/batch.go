package uplink

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math"
	"sync"
	"time"

	"github.com/perch-edge/perch/runtime/store"
)

// Batches of summaries (uplink.summaries.batch).
//
// With a batch interval, summaries are not published one per message. They stay in the outbox,
// each in its own row with its own id, as without batching. Once the oldest pending summary has
// waited the interval (by the time it was recorded), every pending summary, at most
// maxBatchRows of them or maxBatchBytes of JSON, goes in one message on the same topic,
// perch/<site>/<device>/summaries. Alerts, events and status are never held back; alerts still go
// first.
//
// The far side tells the three forms of a summaries payload apart by its first byte:
//
//	'{'        one summary: {"id":N,"time":...,"kind":"summary",...} (no batching)
//	'['        a batch: a JSON array of such objects, in order of id (summaries.compress off)
//	0x1f 0x8b  a batch, gzip-compressed (RFC 1952; summaries.compress on): gunzip it to get
//	           the JSON array above
//
// Each element keeps its own "id", so duplicates are dropped per summary, however they were
// grouped (a batch sent again after a reconnect may hold more or fewer summaries than the first
// time). A batch takes one in-flight slot; the uplink deletes the rows of all its summaries when it
// has seen the PUBACK of the message, and counts the message's payload bytes as published.
const (
	maxBatchRows  = 256
	maxBatchBytes = 256 << 10
)

// gzipMagic starts a gzip stream (RFC 1952).
const gzipMagic = "\x1f\x8b"

// encodeBatch returns the payload of the message that carries rows: the JSON array of their
// messages ([store.OutboxRow.Message]), gzipped if compress.
func encodeBatch(rows []store.OutboxRow, compress bool) []byte {
	js := []byte{'['}
	for i := range rows {
		if i > 0 {
			js = append(js, ',')
		}
		js = append(js, rows[i].Message()...)
	}
	js = append(js, ']')
	if !compress {
		return js
	}
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression) // the level is valid
	zw.Write(js)                                           // a bytes.Buffer does not fail
	zw.Close()
	return b.Bytes()
}

// batchID returns the message id of a batch: the id of its first summary. The sniffer maps the
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

// sendBatch publishes the pending summaries after cursor cur as one message if the oldest has
// waited the batch interval, and moves cursor past them; otherwise it returns how long until it
// has (0: nothing pending). It calls take, which takes a free in-flight slot, before it publishes.
func (u *Uplink) sendBatch(ctx context.Context, cl client, inflight *batches, cursor *store.OutboxCursor,
	cur store.OutboxCursor, now time.Time, take func()) (sent bool, wait time.Duration) {
	only := store.OutboxCursor{math.MaxInt64, cur[store.PrioritySummary], math.MaxInt64, math.MaxInt64}
	head, err := u.st.OutboxPending(ctx, only, 1)
	if err != nil || len(head) == 0 {
		if err != nil && ctx.Err() == nil {
			u.log.Error("uplink: reading the outbox", "err", err)
		}
		return false, 0
	}
	if wait := time.Unix(0, head[0].CreatedNS).Add(u.cfg.Summaries.Batch.D()).Sub(now); wait > 0 {
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
	msg := encodeBatch(rows, u.cfg.Summaries.Compress)
	ids := make([]int64, len(rows))
	for i := range rows {
		ids[i] = rows[i].ID
		cursor.Advance(&rows[i])
	}
	take()
	inflight.add(rows[0].ID, sentBatch{ids: ids, bytes: int64(len(msg))}) // before its PUBACK can come
	cl.Publish(rows[0].Topic, 1, false, msg)
	u.sentToday += int64(len(msg))
	return true, 0
}

// batchAcker is the store's AckBatch; an outbox without it has batches acknowledged with Ack.
type batchAcker interface {
	AckBatch(ctx context.Context, ids []int64, published int64) error
}
