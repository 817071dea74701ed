package uplink

import (
	"time"

	"github.com/perch-edge/perch/runtime/store"
)

// Published returns the payload bytes the uplink would publish for rows (the outbox, in order of
// priority then id) if they were all pending now, per priority, with summaries batched every
// batch (0: one message each, and one per event), gzipped if compress: a summary batch holds
// every summary recorded up to batch after its first one, as the send loop forms it, and the
// summaries left at the end make a last, smaller batch; with batching, the events go together
// (one message if there is one).
func Published(rows []store.OutboxRow, batch time.Duration, compress bool) (bytes, messages [store.PriorityReading + 1]int64) {
	var group []store.OutboxRow
	size := 0
	flush := func() {
		switch {
		case len(group) == 0:
		case len(group) == 1 && group[0].Priority != store.PrioritySummary:
			bytes[group[0].Priority] += int64(len(group[0].Message()))
			messages[group[0].Priority]++
		default:
			bytes[group[0].Priority] += int64(len(encodeBatch(group, compress)))
			messages[group[0].Priority]++
		}
		group, size = group[:0], 0
	}
	for i := range rows {
		r := &rows[i]
		batched := r.Priority == store.PrioritySummary || r.Priority == store.PriorityEvent
		if !batched || batch <= 0 {
			bytes[r.Priority] += int64(len(r.Message()))
			messages[r.Priority]++
			continue
		}
		if len(group) > 0 && (r.Priority != group[0].Priority ||
			r.Priority == store.PrioritySummary && r.CreatedNS > group[0].CreatedNS+batch.Nanoseconds() ||
			len(group) == maxBatchRows || size+len(r.Payload) > maxBatchBytes) {
			flush()
		}
		group = append(group, *r)
		size += len(r.Payload)
	}
	flush()
	return bytes, messages
}
