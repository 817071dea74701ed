package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

// Event kinds a southbound MQTT source records (module: the source's name).
const (
	EventSourceConnected    = "source.connected"    // subscribed to its topics
	EventSourceDisconnected = "source.disconnected" // the connection was lost; message: why
	EventSourceBadMessage   = "source.bad_message"  // at most one per 10 s; fields: bad_messages, since_last
)

// Reconnect backoff of a source: the wait doubles from sourceBackoffMin up to sourceBackoffMax.
const (
	sourceBackoffMin = 250 * time.Millisecond
	sourceBackoffMax = 30 * time.Second
	sourceQueue      = 1024 // records between paho's callback and the batcher
	// sourceAckWindow is the most messages a batch holds unacknowledged: a batch is passed on
	// (and its messages acknowledged) when it has this many, below mosquitto's default window of
	// 20 unacknowledged QoS 1 messages per client, so that the broker never waits for us.
	sourceAckWindow = 16
	badEventEvery   = 10 * time.Second
)

// source is a southbound MQTT source node: it subscribes to its topics on the site's broker
// (QoS 1), turns each message into a reading, batches them and passes the batches on like a
// driver's output: to the recorder and to the bounded queues of the modules downstream.
// paho's callback goroutine converts messages and hands them to run's goroutine over recs; a
// full queue blocks paho (backpressure to the broker). A message is acknowledged (PUBACK) only
// once its reading is committed to the recorder (or, with record: false, passed downstream); the
// session is persistent (clean session off), so the broker keeps QoS 1 messages for the source
// while it is away, and sends again those it did not acknowledge: a kill -9 loses none.
type source struct {
	rt   *Runtime
	cfg  *config.Source
	down []*node

	recs     chan sourceRec // encoded records, one per message
	stopping chan struct{}  // closed when run stops: the callback drops instead of blocking

	bad      atomic.Int64  // bad messages since start
	msgs     atomic.Uint64 // messages converted and queued, for Metrics
	badMu    sync.Mutex
	badLast  time.Time // when the last source.bad_message event was recorded
	badShown int64     // bad at that time
}

func newSource(r *Runtime, cfg *config.Source) *source {
	return &source{rt: r, cfg: cfg, recs: make(chan sourceRec, sourceQueue), stopping: make(chan struct{})}
}

// sourceRec is one message's record, and the message to acknowledge once it is committed.
type sourceRec struct {
	rec []byte
	msg paho.Message
}

// run connects, and passes batches on until ctx is canceled; then it disconnects, passes on
// what it holds and lets its downstream nodes know that it has finished.
func (s *source) run(ctx context.Context) {
	defer s.finish()
	evCtx := context.WithoutCancel(ctx)
	log := s.rt.log.With("source", s.cfg.Name)
	filters := map[string]byte{}
	for _, f := range s.cfg.Topics {
		filters[f] = 1
	}
	o := paho.NewClientOptions().AddBroker(s.cfg.Broker).SetClientID(s.cfg.ClientID).
		// A persistent session: the broker keeps QoS 1 messages for us while we are away.
		SetCleanSession(false).SetOrderMatters(true).SetStore(paho.NewMemoryStore()).
		SetAutoAckDisabled(true). // message acknowledges what it has queued
		// connect retries the first connection; paho reconnects after a loss, with backoff.
		SetAutoReconnect(true).SetConnectRetry(false).SetMaxReconnectInterval(sourceBackoffMax).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			// On every connection: a broker without persistence forgets subscriptions.
			tok := c.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) { s.message(evCtx, m) })
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				log.Warn("source: subscribe failed", "err", tok.Error())
				s.rt.event(evCtx, EventSourceDisconnected, s.cfg.Name, fmt.Sprintf("subscribe failed: %v", tok.Error()), nil)
				return
			}
			s.rt.event(evCtx, EventSourceConnected, s.cfg.Name, "subscribed to "+strings.Join(s.cfg.Topics, ", ")+" on "+s.cfg.Broker, nil)
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			log.Warn("source: connection lost", "err", err)
			s.rt.event(evCtx, EventSourceDisconnected, s.cfg.Name, fmt.Sprint(err), nil)
		})
	if config.TLSBroker(s.cfg.Broker) {
		t, err := s.cfg.TLS.ClientConfig()
		if err != nil {
			// The rest of the pipeline runs without this source.
			log.Error("source: TLS", "err", err)
			s.rt.event(evCtx, EventSourceDisconnected, s.cfg.Name, "TLS: "+err.Error(), nil)
			return
		}
		o.SetTLSConfig(t)
	}
	cl := paho.NewClient(o)
	connected := make(chan struct{})
	go func() {
		defer close(connected)
		s.connect(ctx, cl, log)
	}()

	var batch []byte
	var unacked []paho.Message
	n := 0
	var flush <-chan time.Time
	var timer *time.Timer
	emit := func() {
		if n > 0 {
			s.emit(batch)
			s.ack(evCtx, unacked, log)
		}
		batch, unacked, n, flush = batch[:0], unacked[:0], 0, nil
		if timer != nil {
			timer.Stop()
		}
	}
	add := func(r sourceRec) {
		batch = append(batch, r.rec...)
		unacked = append(unacked, r.msg)
		n++
		if n >= s.cfg.BatchMaxRecords || len(unacked) >= sourceAckWindow {
			emit()
		} else if n == 1 {
			timer = time.NewTimer(s.cfg.BatchWait.D())
			flush = timer.C
		}
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case r := <-s.recs:
			add(r)
		case <-flush:
			emit()
		}
	}
	// Stop: paho's callback drops what it converts from now on, unacknowledged (the broker
	// sends it again to the next session); what is queued is passed on and acknowledged.
	close(s.stopping)
	<-connected // at most a connection attempt away
	for drained := false; !drained; {
		select {
		case r := <-s.recs:
			add(r)
		default:
			drained = true
		}
	}
	emit()
	cl.Disconnect(250)
}

// ack acknowledges msgs once what emit passed on is safe: committed to the recorder if the
// source records, else handed downstream. If the commit failed they stay unacknowledged, and
// the broker sends them again on the next connection.
func (s *source) ack(ctx context.Context, msgs []paho.Message, log *slog.Logger) {
	if s.cfg.Recorded() {
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.rt.store.Flush(fctx)
		cancel()
		if err != nil {
			log.Error("source: readings not committed; not acknowledged", "messages", len(msgs), "err", err)
			return
		}
	}
	for _, m := range msgs {
		m.Ack()
	}
}

// connect makes the first connection, retrying with exponential backoff and jitter until it
// succeeds or ctx is canceled. Once connected, paho reconnects on its own.
func (s *source) connect(ctx context.Context, cl paho.Client, log *slog.Logger) {
	wait := sourceBackoffMin
	for ctx.Err() == nil {
		tok := cl.Connect()
		tok.Wait() // bounded by the connect timeout
		if tok.Error() == nil {
			return
		}
		jittered := wait/2 + rand.N(wait/2+1)
		log.Warn("source: connect failed", "broker", s.cfg.Broker, "err", tok.Error(), "retry_in", jittered)
		select {
		case <-ctx.Done():
		case <-time.After(jittered):
		}
		wait = min(2*wait, sourceBackoffMax)
	}
}

// emit records a batch and passes it downstream, as a module's output is.
func (s *source) emit(out []byte) {
	s.rt.deliver(s.cfg.Name, s.cfg.Recorded(), s.down, out)
}

// finish closes each downstream queue whose last upstream this was.
func (s *source) finish() {
	for _, d := range s.down {
		d.upMu.Lock()
		d.upstream--
		last := d.upstream == 0
		d.upMu.Unlock()
		if last {
			close(d.in)
		}
	}
}

// message is paho's callback: it converts one message and queues it. A bad message is counted
// and recorded as a source.bad_message event at most every 10 s.
func (s *source) message(ctx context.Context, m paho.Message) {
	rec, err := s.record(m.Topic(), m.Payload(), time.Now().UnixNano())
	if err != nil {
		s.badMessage(ctx, m.Topic(), err)
		m.Ack() // a bad message stays bad: the broker need not send it again
		return
	}
	select {
	case s.recs <- sourceRec{rec, m}:
		s.msgs.Add(1)
	case <-s.stopping:
		// Not acknowledged: the broker keeps it in our session and sends it again next time.
	}
}

func (s *source) badMessage(ctx context.Context, topic string, err error) {
	total := s.bad.Add(1)
	s.badMu.Lock()
	now := time.Now()
	if now.Sub(s.badLast) < badEventEvery {
		s.badMu.Unlock()
		return
	}
	since := total - s.badShown
	s.badLast, s.badShown = now, total
	s.badMu.Unlock()
	msg := fmt.Sprintf("bad message on %s: %v", topic, err)
	s.rt.log.Warn("source: "+msg, "source", s.cfg.Name, "bad_messages", total)
	s.rt.event(ctx, EventSourceBadMessage, s.cfg.Name, msg, map[string]any{"bad_messages": total, "since_last": since})
}

// errNoFields is a message that holds no number.
var errNoFields = errors.New("no numeric field")

// record converts one message into an encoded reading (see [config.Source] for the rules).
func (s *source) record(topic string, payload []byte, now int64) ([]byte, error) {
	var b abi.Builder
	b.Begin(abi.KindReading, now, s.recordSource(topic), s.cfg.Series)
	var tags [][2]string
	text := bytes.TrimSpace(payload)
	switch {
	case s.cfg.Format == config.SourceFormatValue || len(text) > 0 && text[0] != '{':
		if s.cfg.Format == config.SourceFormatJSON && !json.Valid(text) {
			return nil, fmt.Errorf("not JSON")
		}
		v, err := strconv.ParseFloat(string(text), 64)
		if err != nil {
			if s.cfg.Format == config.SourceFormatJSON {
				return nil, fmt.Errorf("not a JSON object or number: %.40q", text)
			}
			return nil, fmt.Errorf("not a number: %.40q", text)
		}
		b.Field("value", v)
	default:
		var obj map[string]any
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return nil, fmt.Errorf("not a JSON object: %w", err)
		}
		if dec.More() {
			return nil, fmt.Errorf("not a JSON object: data after it")
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fields := 0
		for _, k := range keys {
			switch v := obj[k].(type) {
			case json.Number:
				f, err := v.Float64()
				if err != nil && !math.IsInf(f, 0) {
					return nil, fmt.Errorf("field %q: %w", k, err)
				}
				b.Field(k, f)
				fields++
			case bool:
				f := 0.0
				if v {
					f = 1
				}
				b.Field(k, f)
				fields++
			case string:
				tags = append(tags, [2]string{k, v})
			}
			// null, arrays and objects are ignored.
		}
		if fields == 0 {
			return nil, errNoFields
		}
	}
	for _, t := range tags {
		if t[0] != "topic" {
			b.Tag(t[0], t[1])
		}
	}
	b.Tag("topic", topic)
	b.End()
	return b.Buf, nil
}

// recordSource is the source of a message's record: the source's name, then the topic levels
// that the wildcards of the first matching filter matched.
func (s *source) recordSource(topic string) string {
	for _, f := range s.cfg.Topics {
		if levels, ok := matchTopic(f, topic); ok {
			if len(levels) == 0 {
				return s.cfg.Name
			}
			return s.cfg.Name + "/" + strings.Join(levels, "/")
		}
	}
	return s.cfg.Name
}

// matchTopic reports whether topic matches the MQTT filter, and the levels its wildcards
// matched (# matches the rest of the topic as one).
func matchTopic(filter, topic string) ([]string, bool) {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	var out []string
	for i, f := range fs {
		switch {
		case f == "#":
			if i < len(ts) {
				out = append(out, strings.Join(ts[i:], "/"))
			}
			return out, true
		case i >= len(ts):
			return nil, false
		case f == "+":
			out = append(out, ts[i])
		case f != ts[i]:
			return nil, false
		}
	}
	return out, len(fs) == len(ts)
}

// newSources makes the source nodes of the config.
func newSources(r *Runtime) []*source {
	var out []*source
	for i := range r.cfg.Sources {
		out = append(out, newSource(r, &r.cfg.Sources[i]))
	}
	return out
}

// linkSource links n downstream of the source named name, if there is one, and reports whether
// there was.
func (r *Runtime) linkSource(name string, n *node) bool {
	for _, s := range r.srcs {
		if s.cfg.Name == name {
			s.down = append(s.down, n)
			n.upstream++
			return true
		}
	}
	return false
}

// startSources runs every source on a goroutine counted in wg.
func (r *Runtime) startSources(ctx context.Context, wg *sync.WaitGroup) {
	for _, s := range r.srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx)
		}()
	}
}
