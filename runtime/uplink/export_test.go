package uplink

import (
	"time"

	"github.com/perch-edge/perch/runtime/store"
)

// Published returns the payload bytes the uplink would publish for rows (the outbox, in order of
// priority then id), per priority, with summaries batched every batch (0: one message each),
// gzipped if compress: a summary batch holds every summary recorded up to batch after its first
// one, as the send loop forms it; the summaries left at the end make a last, smaller batch.
func Published(rows []store.OutboxRow, batch time.Duration, compress bool) (bytes, messages [store.PriorityReading + 1]int64) {
	var group []store.OutboxRow
	size := 0
	flush := func() {
		if len(group) > 0 {
			bytes[store.PrioritySummary] += int64(len(encodeBatch(group, compress)))
			messages[store.PrioritySummary]++
		}
		group, size = group[:0], 0
	}
	for i := range rows {
		r := &rows[i]
		if r.Priority != store.PrioritySummary || batch <= 0 {
			bytes[r.Priority] += int64(len(r.Message()))
			messages[r.Priority]++
			continue
		}
		if len(group) > 0 && (r.CreatedNS > group[0].CreatedNS+batch.Nanoseconds() ||
			len(group) == maxBatchRows || size+len(r.Payload) > maxBatchBytes) {
			flush()
		}
		group = append(group, *r)
		size += len(r.Payload)
	}
	flush()
	return bytes, messages
}
