package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/internal/jsonx"
	"github.com/perch-edge/perch/sdk/abi"
)

// Stream defaults.
const (
	// DefaultStreamBuffer is the events a stream client's buffer holds before the hub drops
	// events for it.
	DefaultStreamBuffer = 256
	// DefaultMaxRate is the readings per second per module and series a stream client gets
	// unless it asks for another max_rate.
	DefaultMaxRate = 10.0
	// MaxMaxRate is the highest max_rate a client may ask for (0 asks for no cap at all).
	MaxMaxRate = 1000.0

	streamKeepAlive = 15 * time.Second // a comment line this often keeps proxies from timing out
	streamHealth    = 2 * time.Second  // how often a client's module health is compared
	streamWrite     = 30 * time.Second // a client that takes longer to take a write is cut off
	maxRateKeys     = 4096             // rate-cap entries a client keeps before it starts over
)

// Stream event names besides the record kinds (reading, summary, score, alert, event).
const (
	eventHealth  = "health"  // module health, on connect and on every change
	eventDropped = "dropped" // events the hub dropped for this client since the last one
)

// HubOptions tune a [Hub]. The zero value is usable.
type HubOptions struct {
	Buffer int // events each client's buffer holds; default DefaultStreamBuffer
}

// Hub fans the records a runtime emits out to the clients of GET /api/v1/stream. [Hub.Publish]
// has the signature of runtime.Options.OnRecords.
//
// The hub never blocks the pipeline: each client has a bounded buffer, and an event that does
// not fit is dropped and counted (the client is told with a "dropped" event). With no client,
// Publish costs one atomic load. A Hub is safe for concurrent use; its zero value is not usable:
// create it with [NewHub].
type Hub struct {
	buffer  int
	epoch   time.Time                 // monotonic clock origin of the rate caps
	mu      sync.Mutex                // serializes subscribe and unsubscribe
	clients atomic.Pointer[[]*client] // copy on write: Publish reads it without locking
	sent    atomic.Uint64             // events queued to clients
	dropped atomic.Uint64             // events dropped because a client's buffer was full
}

// NewHub returns a hub with no clients.
func NewHub(opts HubOptions) *Hub {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultStreamBuffer
	}
	return &Hub{buffer: opts.Buffer, epoch: time.Now()}
}

// HubStats are a hub's counters, from [Hub.Stats].
type HubStats struct {
	Clients int    // connected now
	Sent    uint64 // events queued to clients, in total
	Dropped uint64 // events dropped for clients whose buffer was full, in total
}

// Stats returns the hub's counters. It is safe for concurrent use.
func (h *Hub) Stats() HubStats {
	s := HubStats{Sent: h.sent.Load(), Dropped: h.dropped.Load()}
	if p := h.clients.Load(); p != nil {
		s.Clients = len(*p)
	}
	return s
}

// event is one server-sent event, encoded once and shared (read-only) by every client that
// takes it.
type event struct {
	name string // the SSE event name: a record kind, health or dropped
	data []byte // one line of JSON
}

// filter is what a client asked for.
type filter struct {
	kinds  uint32          // bit k set: records of abi.Kind k; bit 0: health
	series map[string]bool // nil: every series
	gapNS  int64           // least time between two readings of one module and series; 0: no cap
}

const healthBit = 1

func (f *filter) wantsKind(k abi.Kind) bool { return f.kinds&(1<<k) != 0 }

// client is one stream subscriber.
type client struct {
	f       filter
	ch      chan *event
	dropped atomic.Uint64 // events dropped for this client, in total

	mu   sync.Mutex       // guards key and last (Publish runs on many goroutines)
	key  []byte           // scratch: module NUL series
	last map[string]int64 // when a reading of a module and series was last queued, hub ns
}

// Publish queues every record of batch, emitted by module, to the clients that want it. It
// never waits for a client (it holds a client's lock only to check the rate cap of a reading)
// and does not keep batch. It is safe to call from many goroutines at once.
func (h *Hub) Publish(module string, batch []byte) {
	p := h.clients.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	h.publish(*p, module, batch)
}

func (h *Hub) publish(clients []*client, module string, batch []byte) {
	now := int64(time.Since(h.epoch))
	it := abi.Iter{Buf: batch}
	for it.Next() {
		r := &it.Rec
		var ev *event // encoded for the first client that wants it
		for _, c := range clients {
			if !c.wants(module, r, now) {
				continue
			}
			if len(c.ch) == cap(c.ch) { // full: drop without encoding
				c.dropped.Add(1)
				h.dropped.Add(1)
				continue
			}
			if ev == nil {
				// Room for the usual record in one allocation.
				size := 160 + len(module) + len(r.Source) + len(r.Series) + 40*r.NumFields() + 48*r.NumTags()
				ev = &event{name: r.Kind.String(), data: appendRecordJSON(make([]byte, 0, size), module, r)}
			}
			select {
			case c.ch <- ev:
				h.sent.Add(1)
			default:
				c.dropped.Add(1)
				h.dropped.Add(1)
			}
		}
	}
}

// wants reports whether c takes r, emitted by module, at hub time now; for a reading it takes,
// it notes the time for the rate cap.
func (c *client) wants(module string, r *abi.Record, now int64) bool {
	if !c.f.wantsKind(r.Kind) {
		return false
	}
	if c.f.series != nil && !c.f.series[string(r.Series)] {
		return false
	}
	if r.Kind != abi.KindReading || c.f.gapNS == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.key = append(append(append(c.key[:0], module...), 0), r.Series...)
	if t, ok := c.last[string(c.key)]; ok && now-t < c.f.gapNS {
		return false
	}
	if len(c.last) >= maxRateKeys {
		clear(c.last)
	}
	c.last[string(c.key)] = now
	return true
}

// subscribe adds a client with filter f.
func (h *Hub) subscribe(f filter) *client {
	c := &client{f: f, ch: make(chan *event, h.buffer), last: map[string]int64{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	var next []*client
	if p := h.clients.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, c)
	h.clients.Store(&next)
	return c
}

// unsubscribe removes c.
func (h *Hub) unsubscribe(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.clients.Load()
	if p == nil {
		return
	}
	next := make([]*client, 0, len(*p))
	for _, x := range *p {
		if x != c {
			next = append(next, x)
		}
	}
	h.clients.Store(&next)
}

// parseFilter reads the stream's query: kinds (comma-separated; default reading, score, alert,
// health), series (comma-separated; default all) and max_rate (readings per second per module
// and series; default DefaultMaxRate; 0: no cap).
func parseFilter(q map[string][]string) (filter, error) {
	f := filter{}
	get := func(name string) string {
		if v := q[name]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	kinds := get("kinds")
	if kinds == "" {
		kinds = "reading,score,alert,health"
	}
	for _, k := range strings.Split(kinds, ",") {
		switch k = strings.TrimSpace(k); k {
		case "reading":
			f.kinds |= 1 << abi.KindReading
		case "summary":
			f.kinds |= 1 << abi.KindSummary
		case "score":
			f.kinds |= 1 << abi.KindScore
		case "alert":
			f.kinds |= 1 << abi.KindAlert
		case "event":
			f.kinds |= 1 << abi.KindEvent
		case "health":
			f.kinds |= healthBit
		default:
			return f, fmt.Errorf("kinds: unknown kind %q; want a comma-separated list of reading, summary, score, alert, event and health", k)
		}
	}
	if s := get("series"); s != "" {
		f.series = map[string]bool{}
		for _, name := range strings.Split(s, ",") {
			if name = strings.TrimSpace(name); name != "" {
				f.series[name] = true
			}
		}
	}
	rate := DefaultMaxRate
	if s := get("max_rate"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > MaxMaxRate {
			return f, fmt.Errorf("max_rate: %q is not a number of readings per second from 0 (no cap) to %g", s, MaxMaxRate)
		}
		rate = v
	}
	if rate > 0 {
		f.gapNS = int64(float64(time.Second) / rate)
	}
	return f, nil
}

// serveStream serves GET /api/v1/stream: server-sent events until the client goes away or the
// server shuts down (both end the request's context). rt may be nil: no health events.
func serveStream(w http.ResponseWriter, r *http.Request, hub *Hub, rt *runtime.Runtime) {
	if hub == nil {
		http.Error(w, "the live stream is not enabled in this server", http.StatusServiceUnavailable)
		return
	}
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	c := hub.subscribe(f)
	defer hub.unsubscribe(c)

	var buf bytes.Buffer
	buf.WriteString("retry: 2000\n: perch live stream\n\n")
	var lastHealth []byte
	health := func() {
		if rt == nil || f.kinds&healthBit == 0 {
			return
		}
		// Health only, not the counters that change with every record.
		type health struct {
			Name     string `json:"name"`
			Kind     string `json:"kind"`
			Health   string `json:"health"` // ok, restarted or quarantined
			Restarts uint64 `json:"restarts"`
			Faults   uint64 `json:"faults"`
		}
		mods := []health{}
		for _, m := range status(rt.Metrics(), nil).Modules {
			mods = append(mods, health{m.Name, m.Kind, m.Health, m.Restarts, m.Faults})
		}
		b, err := json.Marshal(map[string]any{"modules": mods})
		if err != nil || bytes.Equal(b, lastHealth) {
			return
		}
		lastHealth = b
		writeEvent(&buf, eventHealth, b)
	}
	health()
	// When the request ends (the client went away, or the server shuts down), a write blocked
	// on a client that stopped reading is cut short at once.
	var deadlineMu sync.Mutex
	ended := false
	stop := context.AfterFunc(r.Context(), func() {
		deadlineMu.Lock()
		defer deadlineMu.Unlock()
		ended = true
		rc.SetWriteDeadline(time.Now())
	})
	defer stop()
	var reported uint64 // drops told to the client so far
	flush := func() bool {
		if d := c.dropped.Load(); d != reported {
			writeEvent(&buf, eventDropped, fmt.Appendf(nil, `{"dropped":%d,"total":%d}`, d-reported, d))
			reported = d
		}
		if buf.Len() == 0 {
			return true
		}
		deadlineMu.Lock()
		if !ended {
			rc.SetWriteDeadline(time.Now().Add(streamWrite))
		}
		deadlineMu.Unlock()
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		return err == nil && rc.Flush() == nil
	}
	if !flush() {
		return
	}
	keep := time.NewTicker(streamKeepAlive)
	defer keep.Stop()
	tick := time.NewTicker(streamHealth)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-c.ch:
			writeEvent(&buf, ev.name, ev.data)
			// Take what else is waiting, up to a bound, into the same write.
			for more := true; more && buf.Len() < 64<<10; {
				select {
				case ev := <-c.ch:
					writeEvent(&buf, ev.name, ev.data)
				default:
					more = false
				}
			}
		case <-tick.C:
			health()
		case <-keep.C:
			buf.WriteString(": keep-alive\n\n")
		}
		if !flush() {
			return
		}
	}
}

// writeEvent appends one server-sent event. data is one line (JSON has no raw newlines).
func writeEvent(buf *bytes.Buffer, name string, data []byte) {
	buf.WriteString("event: ")
	buf.WriteString(name)
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
}

// appendRecordJSON appends r, emitted by module, as one line of JSON:
//
//	{"kind":"reading","module":"env","time":"2026-12-07T01:27:16.5Z","time_ms":1796606836500,
//	 "source":"env","series":"environment","fields":{"temperature_c":22.1},"tags":{}}
//
// time is RFC 3339 in UTC; time_ms is the same instant in milliseconds since the Unix epoch. A
// field that is NaN or infinite is null.
func appendRecordJSON(b []byte, module string, r *abi.Record) []byte {
	b = append(b, `{"kind":"`...)
	b = append(b, r.Kind.String()...)
	b = append(b, `","module":`...)
	b = jsonx.AppendString(b, module)
	b = append(b, `,"time":"`...)
	b = time.Unix(0, r.TimeNS).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","time_ms":`...)
	b = strconv.AppendFloat(b, float64(r.TimeNS)/1e6, 'f', 3, 64)
	b = append(b, `,"source":`...)
	b = jsonx.AppendString(b, r.Source)
	b = append(b, `,"series":`...)
	b = jsonx.AppendString(b, r.Series)
	b = append(b, `,"fields":{`...)
	first := true
	r.Fields(func(name []byte, v float64) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = jsonx.AppendString(b, name)
		b = append(b, ':')
		if math.IsNaN(v) || math.IsInf(v, 0) {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		}
	})
	b = append(b, `},"tags":{`...)
	first = true
	r.Tags(func(k, v []byte) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = jsonx.AppendString(b, k)
		b = append(b, ':')
		b = jsonx.AppendString(b, v)
	})
	return append(b, "}}"...)
}

// writeStreamMetrics writes the hub's counters in the Prometheus text format.
func writeStreamMetrics(p *promWriter, s HubStats) {
	p.family("perch_stream_clients", "gauge", "Clients of the live stream (/api/v1/stream) now.")
	p.sample("perch_stream_clients", nil, float64(s.Clients))
	p.family("perch_stream_events_total", "counter", "Events queued to live stream clients.")
	p.sample("perch_stream_events_total", nil, float64(s.Sent))
	p.family("perch_stream_dropped_events_total", "counter", "Events dropped because a live stream client's buffer was full.")
	p.sample("perch_stream_dropped_events_total", nil, float64(s.Dropped))
}
