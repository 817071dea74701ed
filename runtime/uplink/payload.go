package uplink

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/perch-edge/perch/runtime/internal/jsonx"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

// Topics under perch/<site>/<device>/.
const (
	TopicAlerts        = "alerts"
	TopicSummaries     = "summaries"
	TopicEvents        = "events"
	TopicReadings      = "readings" // raw readings, opt-in
	TopicStatus        = "status"
	TopicStateDesired  = "state/desired"
	TopicStateReported = "state/reported"
	TopicCommands      = "cmd/+"
)

// Prefix returns the topic prefix of a device: perch/<site>/<device>/.
func Prefix(site, device string) string { return "perch/" + site + "/" + device + "/" }

// Upstream returns the recorder's hook that decides what goes upstream (see
// [store.Options].Upstream), or nil if cfg has no uplink. Alerts, summaries and events go
// upstream with priorities 0, 1 and 2; raw readings with priority 3 only if
// uplink.raw_readings.enabled, at most max_per_second of them; scores never.
//
// The payload is a JSON object, to which the uplink adds the message id "id" when it publishes:
//
//	{"id":42,"time":"2026-11-25T19:24:02.123456789Z","kind":"alert","source":"threshold",
//	 "series":"overheat","fields":{"temperature_c":31.5},"tags":{"severity":"critical"}}
//
// The numeric fields of a summary keep uplink.summaries.digits significant digits (default 6:
// statistics of readings whose resolution is far coarser); those of alerts, events and raw
// readings are exact. With uplink.summaries.batch (the default), summaries and events go in
// batches (see batch.go and format.go).
func Upstream(cfg *config.Config) store.UpstreamFunc {
	if !cfg.Uplink.Enabled() {
		return nil
	}
	e := newEncoder(Prefix(cfg.Site, cfg.Device), cfg.Uplink.RawReadings)
	if d := cfg.Uplink.Summaries.Digits; d != 0 { // 0: a config not parsed; the default
		e.digits = d
	}
	return e.upstream
}

// encoder builds payloads. It is called on the recorder's writer goroutine.
type encoder struct {
	topics [store.PriorityReading + 1]string
	raw    bool
	digits int      // significant digits of summary fields; 0 or MaxSummaryDigits: exact
	buf    []byte   // the last payload: the recorder copies it before it calls again
	seen   [][]byte // the names already in the object being written

	mu     sync.Mutex // the rate limiter (the writer is one goroutine, but be safe)
	rate   float64    // raw readings per second
	tokens float64
	last   time.Time
}

func newEncoder(prefix string, raw config.RawReadings) *encoder {
	e := &encoder{raw: raw.Enabled, rate: raw.MaxPerSecond, digits: config.DefaultSummaryDigits}
	e.topics[store.PriorityAlert] = prefix + TopicAlerts
	e.topics[store.PrioritySummary] = prefix + TopicSummaries
	e.topics[store.PriorityEvent] = prefix + TopicEvents
	e.topics[store.PriorityReading] = prefix + TopicReadings
	e.tokens = max(1, e.rate)
	return e
}

func (e *encoder) upstream(r *abi.Record) (string, int, []byte, bool) {
	var prio int
	switch r.Kind {
	case abi.KindAlert:
		prio = store.PriorityAlert
	case abi.KindSummary:
		prio = store.PrioritySummary
	case abi.KindEvent:
		prio = store.PriorityEvent
	case abi.KindReading:
		if !e.raw || !e.allow(time.Now()) {
			return "", 0, nil, false
		}
		prio = store.PriorityReading
	default:
		return "", 0, nil, false
	}
	digits := -1
	if prio == store.PrioritySummary && e.digits > 0 && e.digits < config.MaxSummaryDigits {
		digits = e.digits
	}
	e.buf, e.seen = appendPayload(e.buf[:0], r, digits, e.seen[:0])
	return e.topics[prio], prio, e.buf, true
}

// allow is a token bucket: rate per second, a burst of max(1, rate).
func (e *encoder) allow(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.last.IsZero() {
		e.tokens = min(max(1, e.rate), e.tokens+now.Sub(e.last).Seconds()*e.rate)
	}
	e.last = now
	if e.tokens < 1 {
		return false
	}
	e.tokens--
	return true
}

// appendPayload appends the record as a JSON object without "id", its numeric fields with
// digits significant digits (-1: exact). seen is scratch space, returned for reuse.
func appendPayload(b []byte, r *abi.Record, digits int, seen [][]byte) ([]byte, [][]byte) {
	b = append(b, `{"time":"`...)
	b = time.Unix(0, r.TimeNS).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":"`...)
	b = append(b, r.Kind.String()...)
	b = append(b, `","source":`...)
	b = jsonx.AppendString(b, r.Source)
	b = append(b, `,"series":`...)
	b = jsonx.AppendString(b, r.Series)
	b = append(b, `,"fields":{`...)
	n := 0
	r.Fields(func(name []byte, v float64) {
		if dup(seen, name) {
			return
		}
		seen = append(seen, name)
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = jsonx.AppendString(b, name)
		b = append(b, ':')
		b = appendJSONNumberDigits(b, v, digits)
	})
	b = append(b, `},"tags":{`...)
	n, seen = 0, seen[:0]
	r.Tags(func(k, v []byte) {
		if dup(seen, k) {
			return
		}
		seen = append(seen, k)
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = jsonx.AppendString(b, k)
		b = append(b, ':')
		b = jsonx.AppendString(b, v)
	})
	clear(seen) // it pointed into r
	return append(b, "}}"...), seen[:0]
}

func dup(seen [][]byte, name []byte) bool {
	for _, s := range seen {
		if string(s) == string(name) {
			return true
		}
	}
	return false
}

// appendJSONNumber appends v; JSON has no NaN nor infinities: they become null.
func appendJSONNumber(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, "null"...)
	}
	return jsonx.AppendFinite(dst, v)
}

// appendJSONNumberDigits appends v rounded to digits significant digits, in the shorter of
// plain and exponent notation, without trailing zeros (21.5, 1013.25, 1.23457e+06); digits < 0
// appends v exactly (appendJSONNumber).
func appendJSONNumberDigits(dst []byte, v float64, digits int) []byte {
	if digits < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return appendJSONNumber(dst, v)
	}
	return strconv.AppendFloat(dst, v, 'g', digits, 64)
}
