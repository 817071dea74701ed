// Package uplink sends what the recorder's outbox holds to an MQTT broker (MQTT 3.1.1, QoS 1,
// TLS and mutual TLS), publishes the device's status, and answers commands and desired state.
//
// # Overview
//
// The SQLite outbox (see the store package) is the only source of truth. [Upstream] is the
// recorder's hook that puts alerts, summaries and events (and, opt-in, rate-limited raw readings)
// into the outbox in the transaction that records them. [Uplink.Run] connects, reads the outbox
// in order of priority then id (alerts first), publishes up to in_flight messages ahead of their
// acknowledgements, and deletes a row only when it has itself seen the broker's PUBACK on the wire:
// the network connection is wrapped, and its MQTT packets are followed both ways (paho's tokens
// can complete after a reconnect before delivery, and its file store does not fsync, so neither
// is trusted). paho's own reconnect is off: after a connection is lost, Run waits with
// exponential backoff and jitter, connects again with a fresh client and reads the outbox from
// the start of its backlog, so order is kept across reconnects and a message is sent twice only
// with the same "id", which the far side uses to drop duplicates. A daily byte budget
// (uplink.daily_budget_bytes) holds back events and raw readings past 80 % of it, and summaries
// past all of it; alerts always go. By default (uplink.summaries.batch 60s) summaries wait in
// the outbox and go together, one message per interval, gzipped in a columnar form
// (uplink.summaries.compress), and the events pending at the same time go together too without
// waiting; alerts are never batched nor held back. See batch.go for the mechanism, format.go for
// the payloads, and [DecodeMessages] for a decoder.
//
// Topics, under perch/<site>/<device>/:
//
//	alerts, summaries, events, readings   outbox messages, QoS 1: {"id":N,"time":...,"kind":...,
//	                                      "source":...,"series":...,"fields":{},"tags":{}};
//	                                      summaries and events also in batches (format.go)
//	status          retained: {"state":"online",...} on connect and every heartbeat (uptime,
//	                version, outbox backlog, byte counters, each update target's last step);
//	                the last will {"state":"offline"}
//	cmd/<name>      commands in; answered on cmd/<name>/reply: ping, status, update (poll the
//	                registry now), actuate (drive an actuator allowed by
//	                uplink.commands.actuate: see command.go); others get an error
//	state/desired   desired settings in (log_level); the outcome, retained, on state/reported
//
// # Usage
//
//	st, err := store.Open(ctx, store.Options{Path: p, Upstream: uplink.Upstream(cfg),
//		OutboxMaxBytes: cfg.Uplink.OutboxMaxBytes})
//	up, err := uplink.New(cfg, st, uplink.Options{Logger: log})
//	go up.Run(ctx) // until ctx is canceled
package uplink

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
)

// Options tune an Uplink. The zero value is usable.
type Options struct {
	Logger *slog.Logger // nil: discard
	// Version is reported in the status heartbeat.
	Version string
	// LogLevel, if set, is what state/desired {"log_level": ...} changes.
	LogLevel *slog.LevelVar
	// BackoffMin and BackoffMax bound the wait between two connection attempts; defaults 1s
	// and 60s.
	BackoffMin, BackoffMax time.Duration
	// ConnectTimeout bounds a connection attempt, TLS handshake and CONNACK included; default 10s.
	ConnectTimeout time.Duration
	// Inject, if set, puts encoded records (sdk/abi) on the input queue of a module: how the
	// actuate command reaches an actuator (the runtime sets it to Runtime.Inject). Nil: the
	// actuate command is refused.
	Inject func(ctx context.Context, module string, batch []byte) error
	// Nudge, if set, makes the update agent poll the registry now: the update command. Nil: the
	// update command is refused (the box has no update agent).
	Nudge func()

	// newClient makes the MQTT client: the unit-test seam. Nil: paho.
	newClient func(*paho.ClientOptions) client
	// written, if set, is called with the message id of each outbox PUBLISH once it is written
	// to the connection (the latency benchmark).
	written func(id int64)
}

// client is the part of paho's client the uplink uses.
type client interface {
	Connect() paho.Token
	Disconnect(quiesce uint)
	Publish(topic string, qos byte, retained bool, payload any) paho.Token
	Subscribe(topic string, qos byte, callback paho.MessageHandler) paho.Token
}

// outbox is the part of the store the uplink uses.
type outbox interface {
	OutboxPending(ctx context.Context, cursor store.OutboxCursor, limit int) ([]store.OutboxRow, error)
	Ack(ctx context.Context, ids []int64) error
	OutboxStats(ctx context.Context) (store.OutboxStats, error)
	OutboxNotify() <-chan struct{}
	LastSteps(ctx context.Context) ([]store.UpdateStep, error) // the status's updates
}

// Uplink is the MQTT uplink of one device. Create it with [New]; call Run once.
type Uplink struct {
	cfg    config.Uplink
	prefix string
	st     outbox
	opts   Options
	log    *slog.Logger
	tls    *tls.Config
	start  time.Time

	ackMu   sync.Mutex
	acks    []int64       // message ids whose PUBACK was seen, not yet deleted
	batched []sentBatch   // batches whose PUBACK was seen, not yet deleted
	ackWake chan struct{} // a value when acks is not empty

	connMu sync.Mutex
	conn   net.Conn // the current connection, for KillConnection

	reportMu sync.Mutex
	reported map[string]any // the settings state/desired applied

	// The daily budget: payload bytes sent on day (midnight UTC, ns). Only the session
	// goroutine touches them.
	day, sentToday int64
}

// budgetEventsPct is the share of the daily budget past which only alerts and summaries go.
const budgetEventsPct = 80

// budgetCursor returns cursor with the priorities the daily budget holds back moved past every
// row, so that OutboxPending skips them.
func (u *Uplink) budgetCursor(cursor store.OutboxCursor, now time.Time) store.OutboxCursor {
	budget := u.cfg.DailyBudgetBytes
	if budget <= 0 {
		return cursor
	}
	if day := now.UTC().Truncate(24 * time.Hour).UnixNano(); day != u.day {
		u.day, u.sentToday = day, 0
	}
	from := store.PriorityReading + 1 // the first priority held back
	switch {
	case u.sentToday >= budget:
		from = store.PrioritySummary
	case u.sentToday >= budget*budgetEventsPct/100:
		from = store.PriorityEvent
	}
	for p := from; p <= store.PriorityReading; p++ {
		cursor[p] = math.MaxInt64
	}
	return cursor
}

// New returns the uplink of cfg, or nil if cfg has no uplink section. It loads the TLS files.
func New(cfg *config.Config, st *store.Store, opts Options) (*Uplink, error) {
	if !cfg.Uplink.Enabled() {
		return nil, nil
	}
	return newUplink(cfg, st, opts)
}

func newUplink(cfg *config.Config, st outbox, opts Options) (*Uplink, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(60*time.Second, opts.BackoffMin)
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.newClient == nil {
		opts.newClient = func(o *paho.ClientOptions) client { return paho.NewClient(o) }
	}
	u := &Uplink{cfg: cfg.Uplink, prefix: Prefix(cfg.Site, cfg.Device), st: st, opts: opts,
		log: opts.Logger, start: time.Now(), ackWake: make(chan struct{}, 1), reported: map[string]any{}}
	if u.cfg.InFlight <= 0 {
		u.cfg.InFlight = config.DefaultUplinkInFlight
	}
	if u.cfg.Keepalive <= 0 {
		u.cfg.Keepalive = config.Duration(config.DefaultUplinkKeepalive)
	}
	if u.cfg.Heartbeat <= 0 {
		u.cfg.Heartbeat = config.Duration(config.DefaultUplinkHeartbeat)
	}
	if u.cfg.ClientID == "" {
		u.cfg.ClientID = "perch-" + cfg.Site + "-" + cfg.Device
	}
	if config.TLSBroker(u.cfg.Broker) {
		var err error
		if u.tls, err = u.cfg.TLS.ClientConfig(); err != nil {
			return nil, fmt.Errorf("uplink: %w", err)
		}
	}
	return u, nil
}

// Run connects and keeps the uplink going until ctx is canceled: then it publishes the offline
// status, disconnects, records the acknowledgements it saw and returns nil.
func (u *Uplink) Run(ctx context.Context) error {
	ackDone := make(chan struct{})
	ackCtx, stopAcks := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(ackDone)
		u.ackLoop(ackCtx)
	}()
	defer func() {
		stopAcks()
		<-ackDone
		u.flushAcks(context.WithoutCancel(ctx))
	}()
	backoff := u.opts.BackoffMin
	for {
		connected, err := u.session(ctx)
		u.flushAcks(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			backoff = u.opts.BackoffMin
		}
		// Jitter: wait between half and all of the backoff.
		wait := backoff/2 + rand.N(backoff/2+1)
		u.log.Warn("uplink: disconnected", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, u.opts.BackoffMax)
	}
}

// KillConnection closes the current network connection abruptly, as a network failure would:
// the broker then publishes the last will. For tests and the chaos drill.
func (u *Uplink) KillConnection() {
	u.connMu.Lock()
	defer u.connMu.Unlock()
	if u.conn != nil {
		if tc, ok := u.conn.(interface{ SetLinger(int) error }); ok {
			tc.SetLinger(0)
		}
		u.conn.Close()
	}
}

// session is one connection: it returns when the connection is lost or ctx is canceled, and
// whether it got connected at all.
func (u *Uplink) session(ctx context.Context) (connected bool, err error) {
	lost := make(chan error, 1)
	fail := func(err error) {
		select {
		case lost <- err:
		default:
		}
	}
	slots := make(chan struct{}, u.cfg.InFlight) // one value per unacknowledged outbox publish
	freed := make(chan struct{}, 1)              // a value after an ack freed a slot
	tracked := func(topic string) bool {
		rest, ok := strings.CutPrefix(topic, u.prefix)
		return ok && (rest == TopicAlerts || rest == TopicSummaries || rest == TopicEvents || rest == TopicReadings)
	}
	var inflight batches // summaries sent together, by batch id
	acked := func(id int64) {
		select {
		case <-slots:
		default:
		}
		select {
		case freed <- struct{}{}:
		default:
		}
		b, isBatch := inflight.take(id)
		u.ackMu.Lock()
		if isBatch {
			u.batched = append(u.batched, b)
		} else {
			u.acks = append(u.acks, id)
		}
		u.ackMu.Unlock()
		select {
		case u.ackWake <- struct{}{}:
		default:
		}
	}
	o := paho.NewClientOptions().AddBroker(u.brokerURL()).SetClientID(u.cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(u.cfg.Keepalive.D()).SetOrderMatters(false).SetStore(paho.NewMemoryStore()).
		SetConnectTimeout(u.opts.ConnectTimeout).SetWriteTimeout(u.opts.ConnectTimeout).
		SetBinaryWill(u.prefix+TopicStatus, []byte(`{"state":"offline"}`), 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) { fail(err) }).
		SetCustomOpenConnectionFn(func(uri *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := u.dial(ctx, uri)
			if err != nil {
				return nil, err
			}
			sc := newSniffConn(c, tracked, acked, fail)
			sc.written = u.opts.written
			u.connMu.Lock()
			u.conn = c
			u.connMu.Unlock()
			return sc, nil
		})
	cl := u.opts.newClient(o)
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		cl.Disconnect(0)
		return false, ctx.Err()
	case <-time.After(u.opts.ConnectTimeout + time.Second):
		cl.Disconnect(0)
		return false, errors.New("uplink: connect timed out")
	}
	if err := tok.Error(); err != nil {
		return false, fmt.Errorf("uplink: connect: %w", err)
	}
	u.log.Info("uplink: connected", "broker", u.cfg.Broker)
	defer func() {
		u.connMu.Lock()
		u.conn = nil
		u.connMu.Unlock()
	}()
	subs := []paho.Token{
		cl.Subscribe(u.prefix+TopicCommands, 1, func(_ paho.Client, m paho.Message) { u.command(cl, m) }),
		cl.Subscribe(u.prefix+TopicStateDesired, 1, func(_ paho.Client, m paho.Message) { u.desired(cl, m) }),
	}
	for _, t := range subs {
		if !t.WaitTimeout(u.opts.ConnectTimeout) || t.Error() != nil {
			cl.Disconnect(0)
			return true, fmt.Errorf("uplink: subscribe: %v", t.Error())
		}
	}
	u.publishStatus(ctx, cl)

	heartbeat := time.NewTicker(u.cfg.Heartbeat.D())
	defer heartbeat.Stop()
	poll := time.NewTicker(time.Second) // a backstop for a missed notification
	defer poll.Stop()
	batchDue := time.NewTimer(time.Hour) // when the oldest held summary has waited its batch
	batchDue.Stop()
	defer batchDue.Stop()
	batching := u.cfg.Summaries.Batch > 0
	var cursor store.OutboxCursor
	if s, err := u.st.OutboxStats(ctx); err == nil && u.day == 0 {
		// After a restart, the budget starts from what the broker acknowledged today.
		u.day, u.sentToday = time.Now().UTC().Truncate(24*time.Hour).UnixNano(), s.PublishedToday
	}
	for {
		free := cap(slots) - len(slots)
		if free > 0 {
			now := time.Now()
			cur := u.budgetCursor(cursor, now)
			plain := cur
			if batching { // alerts here; summaries and events below, together; then readings
				plain[store.PrioritySummary] = math.MaxInt64
				plain[store.PriorityEvent] = math.MaxInt64
				plain[store.PriorityReading] = math.MaxInt64
			}
			n := u.publishRows(ctx, cl, &cursor, plain, free, slots)
			if n == free {
				continue // there may be more at once
			}
			if batching {
				// A slot is left: sendBatch takes it before it publishes.
				take := func() { slots <- struct{}{} }
				var wait time.Duration
				sent := false
				if cur[store.PrioritySummary] != math.MaxInt64 {
					sent, wait = u.sendBatch(ctx, cl, &inflight, &cursor, cur, store.PrioritySummary,
						u.cfg.Summaries.Batch.D(), now, take)
				}
				if !sent && cur[store.PriorityEvent] != math.MaxInt64 {
					sent, _ = u.sendBatch(ctx, cl, &inflight, &cursor, cur, store.PriorityEvent, 0, now, take)
				}
				if sent {
					continue
				}
				if wait > 0 {
					batchDue.Reset(wait)
				}
				readings := store.OutboxCursor{math.MaxInt64, math.MaxInt64, math.MaxInt64, cur[store.PriorityReading]}
				if u.publishRows(ctx, cl, &cursor, readings, free-n, slots) == free-n {
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			u.goodbye(cl, slots)
			return true, nil
		case err := <-lost:
			cl.Disconnect(0)
			return true, err
		case <-u.st.OutboxNotify():
		case <-freed:
		case <-poll.C:
		case <-batchDue.C:
		case <-heartbeat.C:
			u.publishStatus(ctx, cl)
		}
	}
}

// publishRows publishes up to free rows after cur, one message each, takes a slot for each and
// moves cursor past them. It returns how many it published.
func (u *Uplink) publishRows(ctx context.Context, cl client, cursor *store.OutboxCursor, cur store.OutboxCursor,
	free int, slots chan struct{}) int {
	rows, err := u.st.OutboxPending(ctx, cur, free)
	if err != nil && ctx.Err() == nil {
		u.log.Error("uplink: reading the outbox", "err", err)
	}
	for i := range rows {
		slots <- struct{}{} // free slots were counted by the caller; only acks take them back
		msg := rows[i].Message()
		cl.Publish(rows[i].Topic, 1, false, msg)
		cursor.Advance(&rows[i])
		u.sentToday += int64(len(msg))
	}
	return len(rows)
}

// goodbye waits a little for the acknowledgements still in flight, then publishes the offline
// status and disconnects.
func (u *Uplink) goodbye(cl client, slots chan struct{}) {
	deadline := time.Now().Add(2 * time.Second)
	for len(slots) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	tok := cl.Publish(u.prefix+TopicStatus, 1, true, []byte(`{"state":"offline"}`))
	tok.WaitTimeout(2 * time.Second)
	cl.Disconnect(250)
}

// brokerURL is the broker's URL as paho wants it (it knows tcp, ssl, tls, mqtt, mqtts; the
// connection is ours anyway).
func (u *Uplink) brokerURL() string { return u.cfg.Broker }

// dial opens the network connection, TLS if the broker's scheme asks for it.
func (u *Uplink) dial(ctx context.Context, uri *url.URL) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, u.opts.ConnectTimeout)
	defer cancel()
	d := &net.Dialer{}
	if u.tls == nil {
		return d.DialContext(ctx, "tcp", uri.Host)
	}
	t := u.tls.Clone()
	if t.ServerName == "" {
		t.ServerName = uri.Hostname()
	}
	raw, err := d.DialContext(ctx, "tcp", uri.Host)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, t)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("uplink: TLS: %w", err)
	}
	return &tlsConn{Conn: tc, raw: raw}, nil
}

// tlsConn lets KillConnection reach the TCP connection under TLS.
type tlsConn struct {
	*tls.Conn
	raw net.Conn
}

func (c *tlsConn) SetLinger(sec int) error {
	if tc, ok := c.raw.(*net.TCPConn); ok {
		return tc.SetLinger(sec)
	}
	return nil
}

// ackLoop deletes acknowledged rows from the outbox, in batches, until ctx is canceled.
func (u *Uplink) ackLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.ackWake:
			u.flushAcks(ctx)
		}
	}
}

// flushAcks deletes the rows acknowledged so far. On failure they stay in the outbox and are
// sent again (with the same id).
func (u *Uplink) flushAcks(ctx context.Context) {
	u.ackMu.Lock()
	ids, batched := u.acks, u.batched
	u.acks, u.batched = nil, nil
	u.ackMu.Unlock()
	for _, b := range batched {
		var err error
		if ba, ok := u.st.(batchAcker); ok {
			err = ba.AckBatch(ctx, b.ids, b.bytes)
		} else {
			err = u.st.Ack(ctx, b.ids)
		}
		if err != nil && ctx.Err() == nil {
			u.log.Error("uplink: deleting acknowledged rows", "rows", len(b.ids), "err", err)
		}
	}
	if len(ids) == 0 {
		return
	}
	if err := u.st.Ack(ctx, ids); err != nil && ctx.Err() == nil {
		u.log.Error("uplink: deleting acknowledged rows", "rows", len(ids), "err", err)
	}
}

// Status is the status heartbeat's payload.
type Status struct {
	State          string           `json:"state"` // "online"; the last will says "offline"
	Time           time.Time        `json:"time"`
	UptimeS        float64          `json:"uptime_s"`
	Version        string           `json:"version,omitempty"`
	Backlog        map[string]int64 `json:"backlog_rows"`  // per kind
	BacklogBytes   int64            `json:"backlog_bytes"` // all kinds
	BytesIngested  int64            `json:"bytes_ingested"`
	BytesPublished int64            `json:"bytes_published"`
	RowsDropped    int64            `json:"rows_dropped"`
	// Updates is the last step the update agent journaled for each target it handled (its
	// deployment, modules, models, firmware, runtime), newest first: how far this box is with
	// each deployment. Empty on a box without an agent.
	Updates []UpdateState `json:"updates,omitempty"`
}

// UpdateState is one target's last update step (the recorder's update_status view).
type UpdateState struct {
	Target  string    `json:"target"`
	Kind    string    `json:"kind"`
	Version string    `json:"version"`
	Release uint64    `json:"release"`
	Step    string    `json:"step"` // found, downloaded, staged, swapped, committed, rolled_back, failed, skipped, ...
	Detail  string    `json:"detail,omitempty"`
	Time    time.Time `json:"time"`
}

func (u *Uplink) status(ctx context.Context) Status {
	s := Status{State: "online", Time: time.Now().UTC(), UptimeS: time.Since(u.start).Seconds(),
		Version: u.opts.Version, Backlog: map[string]int64{}}
	if st, err := u.st.OutboxStats(ctx); err == nil {
		for _, b := range st.Backlog {
			s.Backlog[b.Name] = b.Rows
		}
		s.BacklogBytes, s.BytesIngested, s.BytesPublished, s.RowsDropped = st.Bytes, st.BytesIngested, st.BytesPublished, st.RowsDropped
	}
	if steps, err := u.st.LastSteps(ctx); err == nil {
		for _, st := range steps {
			s.Updates = append(s.Updates, UpdateState{Target: st.Target, Kind: st.Kind, Version: st.Version, Release: st.Release,
				Step: st.Step, Detail: st.Detail, Time: time.Unix(0, st.TimeNS).UTC()})
		}
	}
	return s
}

func (u *Uplink) publishStatus(ctx context.Context, cl client) {
	js, _ := json.Marshal(u.status(ctx))
	cl.Publish(u.prefix+TopicStatus, 1, true, js)
}

// command answers cmd/<name> on cmd/<name>/reply. paho calls it on a goroutine of its own.
func (u *Uplink) command(cl client, m paho.Message) {
	name := m.Topic()[strings.LastIndexByte(m.Topic(), '/')+1:]
	var req struct {
		RequestID any `json:"request_id"`
	}
	_ = json.Unmarshal(m.Payload(), &req) // a command may have no payload
	reply := map[string]any{"command": name, "time": time.Now().UTC()}
	if req.RequestID != nil {
		reply["request_id"] = req.RequestID
	}
	switch name {
	case "ping":
		reply["ok"] = true
	case "status":
		reply["ok"] = true
		reply["status"] = u.status(context.Background())
	case "actuate": // command.go
		ar, err := u.actuate(m.Payload())
		reply["ok"] = err == nil
		if ar.Module != "" {
			reply["module"], reply["state"] = ar.Module, ar.State
		}
		if err != nil {
			reply["error"] = err.Error()
		}
	case "update":
		reply["ok"] = u.opts.Nudge != nil
		if u.opts.Nudge != nil {
			u.opts.Nudge()
		} else {
			reply["error"] = "this box has no update agent (no update section in its config)"
		}
	default:
		reply["ok"] = false
		reply["error"] = fmt.Sprintf("unknown command %q (known: ping, status, actuate, update)", name)
	}
	js, _ := json.Marshal(reply)
	cl.Publish(u.prefix+"cmd/"+name+"/reply", 1, false, js)
}

// desired applies the settings of state/desired that are safe to change at run time and reports
// the outcome, retained, on state/reported.
func (u *Uplink) desired(cl client, m paho.Message) {
	applied, refused := map[string]any{}, map[string]string{}
	var want map[string]json.RawMessage
	if err := json.Unmarshal(m.Payload(), &want); err != nil {
		refused["*"] = "payload is not a JSON object: " + err.Error()
	}
	for k, v := range want {
		switch k {
		case "log_level":
			var s string
			var lvl slog.Level
			switch {
			case u.opts.LogLevel == nil:
				refused[k] = "this runtime's log level is not adjustable"
			case json.Unmarshal(v, &s) != nil || lvl.UnmarshalText([]byte(s)) != nil:
				refused[k] = "want one of debug, info, warn, error"
			default:
				u.opts.LogLevel.Set(lvl)
				applied[k] = strings.ToLower(lvl.String())
			}
		default:
			refused[k] = "not a setting that can change at run time (known: log_level)"
		}
	}
	u.reportMu.Lock()
	for k, v := range applied {
		u.reported[k] = v
	}
	report := map[string]any{"time": time.Now().UTC(), "applied": applied, "refused": refused,
		"state": maps(u.reported)}
	u.reportMu.Unlock()
	js, _ := json.Marshal(report)
	cl.Publish(u.prefix+TopicStateReported, 1, true, js)
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
