package runtime

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/wasm"
	"github.com/perch-edge/perch/sdk/abi"
)

// Event kinds a model node records (module: the model's name).
const (
	EventModelStarted = "model.started" // the model is loaded and scoring; message: what it is
	EventModelFailed  = "model.failed"  // the model could not be loaded (no ONNX Runtime library, a bad model); message: why
	EventModelError   = "model.error"   // a run failed; at most one per 10 s
	EventModelDropped = "model.dropped" // records were dropped (the model is unavailable, or too many streams); at most one per 10 s
)

// maxModelStreams bounds the (source, series) streams a model node keeps a window and an alarm
// for; the samples of further streams are dropped and counted.
const maxModelStreams = 1024

// InferenceBuckets are the upper bounds, in seconds, of the inference latency histogram's
// buckets (the +Inf bucket is implied): a tiny model's run takes a few microseconds.
var InferenceBuckets = [...]float64{0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1}

var inferenceBucketNS = func() (ns [len(InferenceBuckets)]int64) {
	for i, s := range InferenceBuckets {
		ns[i] = int64(s * 1e9)
	}
	return ns
}()

// latency is a histogram of calls into ONNX Runtime. Atomics only: written by the model node and
// by modules (perch:infer/v1) at once, read by Metrics at any time.
type latency struct {
	buckets [len(InferenceBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	count   atomic.Uint64
	ns      atomic.Uint64
	rows    atomic.Uint64 // rows scored
}

func (l *latency) observe(d time.Duration, rows int) {
	i := 0
	for i < len(inferenceBucketNS) && int64(d) > inferenceBucketNS[i] {
		i++
	}
	l.buckets[i].Add(1)
	l.ns.Add(uint64(max(d, 0)))
	l.rows.Add(uint64(rows))
	l.count.Add(1)
}

func (l *latency) histogram() Histogram {
	// Count and sum first, buckets after (see Metrics).
	h := Histogram{Bounds: InferenceBuckets[:], Counts: make([]uint64, len(InferenceBuckets))}
	h.Count = l.count.Load()
	h.Sum = float64(l.ns.Load()) / 1e9
	var cum uint64
	for i := range InferenceBuckets {
		cum += l.buckets[i].Load()
		h.Counts[i] = min(cum, h.Count)
	}
	return h
}

// timedScorer is a model's session as modules see it (perch:infer/v1): each call is timed into
// the model's latency histogram. Safe for concurrent use, as the session is; a swap
// (model_swap.go) replaces the session under mu once no call is using it.
type timedScorer struct {
	mu  sync.RWMutex // held for reading during a call, for writing to replace s
	s   *ort.Session
	lat *latency
}

func (t *timedScorer) Features() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.s.Features()
}

func (t *timedScorer) ScoreFlat(dst, x []float32) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	t0 := time.Now()
	err := t.s.ScoreFlat(dst, x)
	t.lat.observe(time.Since(t0), len(x)/max(t.s.Features(), 1))
	return err
}

// modelNode runs one model of the config's models section. It takes batches from its inputs
// like a filter, turns each matching record into a sample of its stream ((source, series):
// card.Feeder for the window and normalisation, card.Alarm for the alert state), scores the
// rows of a batch in one ONNX Runtime run (at most Batch rows a run) and emits one score record
// per sample (fields score, smoothed, threshold, active: 1 while the alarm is raised, and with a
// card's score.likelihood raw, the model's own score before the likelihood) and an
// alert when a stream's alarm raises or clears.
//
// Its fields are owned by its goroutine, except n's queue fields (see node) and the atomics read
// by Metrics and Health. In steady state (every stream seen) a batch allocates nothing.
// [Runtime.SwapModel] replaces cfg (a copy naming the new card), sess and the buffers between
// two batches, on the node's goroutine (model_swap.go).
type modelNode struct {
	rt  *Runtime
	cfg *config.Model
	n   *node // the queue end: in, upstream, down; n.stats.recordsIn

	sess   *ort.Session // nil when err is set
	err    error        // why the model is unavailable
	scorer *timedScorer // sess for modules, timed; nil when the model did not load at start

	swap    chan modelSwapReq            // SwapModel's requests, taken between batches
	running atomic.Pointer[modelRunning] // cfg and err as Metrics and Health read them
	swaps   atomic.Uint64                // swaps since start
	runErrs atomic.Uint64                // failed runs and non-finite scores since the last swap

	inputs    int       // values per row: features × window
	rows      []float32 // Batch rows
	scores    []float32 // Batch scores
	pend      []pending // the stream and time of each row
	psample   []float64 // the raw features of each row, Batch × features (for the likelihood)
	sample    []float64 // one sample's features
	streams   map[string]*stream
	key       []byte // scratch: source \x00 series
	out       abi.Builder
	message   string // the alerts' message tag
	threshold float64
	lastEvent map[string]time.Time // rate limit of model.error and model.dropped

	lat     latency
	samples atomic.Uint64 // samples scored
	skipped atomic.Uint64 // records in that are not samples (kind, series, fields missing or not finite)
	warming atomic.Uint64 // samples pushed before their stream's window was full (not scored)
	dropped atomic.Uint64 // samples dropped: the model unavailable, a run failed, too many streams
	scored  atomic.Uint64 // score records emitted
	alerts  atomic.Uint64 // alert records emitted
	nstream atomic.Int64
}

// stream is the state of one (source, series) a model scores.
type stream struct {
	source, series string
	feed           *card.Feeder
	lik            *card.Likelihood // nil: the card has no score.likelihood
	alarm          *card.Alarm
}

type pending struct {
	s      *stream
	timeNS int64
}

// newModel makes the node of one model and loads it; a model that fails to load keeps its error
// and its node drops its input (everything else runs).
func (r *Runtime) newModel(m *config.Model) *modelNode {
	mn := &modelNode{rt: r, cfg: m, streams: map[string]*stream{}, lastEvent: map[string]time.Time{},
		n: newNode(r, &config.Module{Name: m.Name, Inputs: m.Inputs}, wasm.Spec{}, r.opts.QueueBatches), swap: make(chan modelSwapReq)}
	defer mn.publish()
	if m.Loaded == nil { // a config not made by config.Load
		mn.err = fmt.Errorf("model %s: card %s not loaded", m.Name, m.Card)
		return mn
	}
	mn.sess, mn.err = loadSession(r.cfg.Engine.ONNXRuntime, m)
	if mn.err != nil {
		return mn
	}
	mn.scorer = &timedScorer{s: mn.sess, lat: &mn.lat}
	mn.size()
	return mn
}

// size sets what follows from the card of m.cfg: the row width, the threshold and the buffers.
func (m *modelNode) size() {
	c := m.cfg.Loaded
	m.inputs, m.threshold = c.Inputs(), c.Score.Threshold
	m.message = c.Name + " anomaly score above " + strconv.FormatFloat(c.Score.Threshold, 'g', -1, 64)
	m.rows = make([]float32, m.cfg.Batch*m.inputs)
	m.scores = make([]float32, m.cfg.Batch)
	m.pend = make([]pending, m.cfg.Batch)
	m.psample = make([]float64, m.cfg.Batch*len(c.Features))
	m.sample = make([]float64, len(c.Features))
	if m.out.Buf == nil {
		m.out.Buf = make([]byte, 0, 4096)
		m.key = make([]byte, 0, 2*abi.MaxString+1)
	}
}

// loadSession loads the ONNX Runtime library (lib, else $PERCH_ORT_LIB, else the default
// places) and the model, after checking the model file against its card's digest again.
func loadSession(lib string, m *config.Model) (*ort.Session, error) {
	c := m.Loaded
	// A configured path that does not exist is reported as such, without loading anything.
	if _, err := ort.FindLibrary(lib); err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	if err := ort.Init(lib); err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	path := m.ModelPath()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	if got := card.Digest(data); got != c.SHA256 {
		return nil, fmt.Errorf("model %s: %s has sha256 %s, its card %s says %s", m.Name, path, got, m.Card, c.SHA256)
	}
	s, err := ort.NewSession(data, ort.Options{IntraOpThreads: m.IntraOpThreads, MaxBatch: m.Batch})
	if err != nil {
		return nil, fmt.Errorf("model %s (%s): %w", m.Name, path, err)
	}
	if s.Features() != c.Inputs() {
		s.Close()
		return nil, fmt.Errorf("model %s: %s takes rows of %d values; its card gives %d features × window %d = %d",
			m.Name, path, s.Features(), len(c.Features), c.Window, c.Inputs())
	}
	if s.MaxBatch() < m.Batch { // a model with a fixed batch dimension
		s.Close()
		return nil, fmt.Errorf("model %s: %s takes batches of exactly %d rows; set batch: %d", m.Name, path, s.MaxBatch(), s.MaxBatch())
	}
	return s, nil
}

// run is the model node's goroutine: it scores its input until every upstream node has
// finished, then lets its downstream nodes know. An unavailable model records why once and
// drops its input.
func (m *modelNode) run(ctx context.Context) {
	defer m.n.finish()
	evCtx := context.WithoutCancel(ctx)
	m.n.upMu.Lock()
	inputs := m.n.upstream
	m.n.upMu.Unlock()
	if m.err != nil {
		m.rt.log.Error("model unavailable: its records are dropped; the rest of the pipeline runs", "model", m.cfg.Name, "err", m.err)
		m.rt.event(evCtx, EventModelFailed, m.cfg.Name, m.err.Error(), map[string]any{"card": m.cfg.Card})
	} else {
		c := m.cfg.Loaded
		m.rt.event(evCtx, EventModelStarted, m.cfg.Name,
			fmt.Sprintf("scoring with %s %s (%s, %s): %d features × window %d, threshold %g", c.Name, c.Version, c.Detector, c.Precision, len(c.Features), c.Window, c.Score.Threshold),
			map[string]any{"card": m.cfg.Card, "library": ort.LoadedPath(), "batch": m.cfg.Batch})
	}
	if inputs == 0 {
		// Scoring for modules only (perch:infer/v1): nothing to take but swaps, until the end.
		for {
			select {
			case <-ctx.Done():
				return
			case req := <-m.swap:
				m.doSwap(evCtx, req)
			}
		}
	}
	for {
		select {
		case b, ok := <-m.n.in:
			if !ok {
				return
			}
			if m.err != nil {
				m.drop(evCtx, b.b, "the model is unavailable")
			} else {
				m.process(evCtx, b.b)
			}
			batchPool.Put(b)
		case req := <-m.swap:
			m.doSwap(evCtx, req)
		}
	}
}

// drop counts the samples of a batch that cannot be scored and records why, at most every 10 s.
func (m *modelNode) drop(ctx context.Context, batch []byte, why string) {
	cnt, _ := abi.Count(batch)
	total := m.dropped.Add(uint64(cnt))
	m.rateEvent(ctx, EventModelDropped, fmt.Sprintf("%d records dropped in all: %s", total, why), map[string]any{"dropped": total})
}

// rateEvent records an event of kind at most every 10 s.
func (m *modelNode) rateEvent(ctx context.Context, kind, msg string, fields map[string]any) {
	if now := time.Now(); now.Sub(m.lastEvent[kind]) >= 10*time.Second {
		m.lastEvent[kind] = now
		m.rt.log.Warn("model: "+msg, "model", m.cfg.Name, "event", kind)
		m.rt.event(ctx, kind, m.cfg.Name, msg, fields)
	}
}

// process scores one batch of records and passes the scores and alerts on.
func (m *modelNode) process(ctx context.Context, batch []byte) {
	m.out.Buf = m.out.Buf[:0]
	k := 0
	it := abi.Iter{Buf: batch}
	for it.Next() {
		r := &it.Rec
		if !m.sampleOf(r) {
			m.skipped.Add(1)
			continue
		}
		s := m.stream(r)
		if s == nil {
			m.dropped.Add(1)
			m.rateEvent(ctx, EventModelDropped, fmt.Sprintf("a sample of %s/%s dropped: more than %d streams", r.Source, r.Series, maxModelStreams), nil)
			continue
		}
		s.feed.Push(m.sample)
		if !s.feed.Ready() {
			m.warming.Add(1)
			continue
		}
		s.feed.Row(m.rows[k*m.inputs:])
		m.pend[k] = pending{s: s, timeNS: r.TimeNS}
		copy(m.psample[k*len(m.sample):], m.sample)
		if k++; k == len(m.pend) {
			m.flush(ctx, k)
			k = 0
		}
	}
	if k > 0 {
		m.flush(ctx, k)
	}
	if err := it.Err(); err != nil { // upstream output is checked by the engine: a bug if seen
		m.rt.log.Error("model: a batch does not decode", "model", m.cfg.Name, "err", err)
	}
	if len(m.out.Buf) > 0 {
		m.n.stats.recordsOut.Add(uint64(m.rt.deliver(m.cfg.Name, m.cfg.Recorded(), m.n.down, m.out.Buf)))
	}
}

// sampleOf reads the features of r into m.sample and reports whether r is a sample: a reading
// or summary of the model's series with a finite value for every feature.
func (m *modelNode) sampleOf(r *abi.Record) bool {
	if r.Kind != abi.KindReading && r.Kind != abi.KindSummary {
		return false
	}
	if m.cfg.Series != "" && string(r.Series) != m.cfg.Series {
		return false
	}
	for j, f := range m.cfg.FieldNames {
		v, ok := r.Field(f)
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
		m.sample[j] = v
	}
	return true
}

// stream returns the stream of r's source and series, making it on first sight; nil past
// maxModelStreams.
func (m *modelNode) stream(r *abi.Record) *stream {
	m.key = append(append(append(m.key[:0], r.Source...), 0), r.Series...)
	if s, ok := m.streams[string(m.key)]; ok {
		return s
	}
	if len(m.streams) >= maxModelStreams {
		return nil
	}
	c := m.cfg.Loaded
	s := &stream{source: string(r.Source), series: string(r.Series), feed: c.NewFeeder(), lik: c.NewLikelihood(), alarm: c.NewAlarm()}
	m.streams[string(m.key)] = s
	m.nstream.Store(int64(len(m.streams)))
	return s
}

// flush scores the first k pending rows in one run, steps each row's alarm in order and writes
// the score records and alerts into m.out.
func (m *modelNode) flush(ctx context.Context, k int) {
	t0 := time.Now()
	err := m.sess.ScoreFlat(m.scores[:k], m.rows[:k*m.inputs])
	m.lat.observe(time.Since(t0), k)
	if err != nil {
		m.dropped.Add(uint64(k))
		m.runErrs.Add(1)
		m.rateEvent(ctx, EventModelError, fmt.Sprintf("run failed, %d samples dropped: %v", k, err), nil)
		return
	}
	m.samples.Add(uint64(k))
	b := &m.out
	for i := range k {
		p := &m.pend[i]
		raw := float64(m.scores[i])
		if math.IsNaN(raw) || math.IsInf(raw, 0) { // a broken model: no record, and Health says so
			m.dropped.Add(1)
			m.runErrs.Add(1)
			m.rateEvent(ctx, EventModelError, fmt.Sprintf("the model scored %v: sample of %s/%s dropped", raw, p.s.source, p.s.series), nil)
			p.s = nil
			continue
		}
		score := raw
		if p.s.lik != nil {
			nf := len(m.sample)
			score = p.s.lik.Step(m.psample[i*nf:(i+1)*nf], raw)
		}
		smoothed, active, changed := p.s.alarm.Step(score)
		b.Begin(abi.KindScore, p.timeNS, m.cfg.Name, p.s.series)
		b.Field("score", score)
		if p.s.lik != nil {
			b.Field("raw", raw)
		}
		b.Field("smoothed", smoothed)
		b.Field("threshold", m.threshold)
		b.Field("active", boolField(active))
		b.Tag("source", p.s.source)
		b.Tag("model", m.cfg.Loaded.Name)
		b.End()
		m.scored.Add(1)
		if changed {
			m.alert(p, smoothed, active)
		}
		p.s = nil
	}
}

// alert writes an alert shaped as modules/rules/threshold shapes its own (fields value and
// threshold; tags state, severity, message, field, source, direction), so that the uplink and
// the recorder treat both alike.
func (m *modelNode) alert(p *pending, smoothed float64, raised bool) {
	state := "cleared"
	if raised {
		state = "raised"
	}
	b := &m.out
	b.Begin(abi.KindAlert, p.timeNS, m.cfg.Name, p.s.series)
	b.Field("value", smoothed)
	b.Field("threshold", m.threshold)
	b.Tag("state", state)
	b.Tag("severity", m.cfg.Severity)
	b.Tag("message", m.message)
	b.Tag("field", "score")
	b.Tag("source", p.s.source)
	b.Tag("direction", "above")
	b.End()
	m.alerts.Add(1)
}

// close releases the model's session.
func (m *modelNode) close() error {
	if m.sess == nil {
		return nil
	}
	return m.sess.Close()
}

// ModelMetrics are one model node's counters.
type ModelMetrics struct {
	Name      string `json:"name"`
	Card      string `json:"card"`            // the card's path
	Model     string `json:"model"`           // the card's name and version
	Detector  string `json:"detector"`        // what produced the score
	Available bool   `json:"available"`       // loaded and scoring
	Error     string `json:"error,omitempty"` // why not, when not
	RecordsIn uint64 `json:"records_in"`      // records queued to it
	Samples   uint64 `json:"samples"`         // samples scored (one score record each)
	Skipped   uint64 `json:"skipped"`         // records in that are not samples of its series and features
	Warming   uint64 `json:"warming"`         // samples before their stream's window was full
	Dropped   uint64 `json:"dropped"`         // samples (or records, when unavailable) not scored
	Alerts    uint64 `json:"alerts"`          // alerts emitted (raised and cleared)
	Streams   int    `json:"streams"`         // (source, series) streams it keeps state for
	// Rows counts the rows ONNX Runtime scored for it, its own and those of modules
	// (perch:infer/v1); Inference is the latency of each call into ONNX Runtime (one run of up
	// to batch rows for its own samples).
	Rows       uint64    `json:"rows"`
	Inference  Histogram `json:"inference"`
	QueueDepth int       `json:"queue_depth"`
	QueueCap   int       `json:"queue_cap"`
}

// modelMetrics returns the counters of every model node. Safe for concurrent use.
func (r *Runtime) modelMetrics() []ModelMetrics {
	var out []ModelMetrics
	for _, m := range r.models {
		cur := m.running.Load()
		mm := ModelMetrics{Name: cur.cfg.Name, Card: cur.cfg.Card, Available: cur.err == nil,
			RecordsIn: m.n.stats.recordsIn.Load(), Samples: m.samples.Load(), Skipped: m.skipped.Load(),
			Warming: m.warming.Load(), Dropped: m.dropped.Load(), Alerts: m.alerts.Load(),
			Streams: int(m.nstream.Load()), Rows: m.lat.rows.Load(), Inference: m.lat.histogram(),
			QueueDepth: len(m.n.in), QueueCap: cap(m.n.in)}
		if c := cur.cfg.Loaded; c != nil {
			mm.Model, mm.Detector = c.Name+" "+c.Version, c.Detector
		}
		if cur.err != nil {
			mm.Error = cur.err.Error()
		}
		out = append(out, mm)
	}
	return out
}

// newModels makes the model nodes of the config and adds their queue ends to byName, for
// linking.
func (r *Runtime) newModels(byName map[string]*node) {
	for i := range r.cfg.Models {
		m := r.newModel(&r.cfg.Models[i])
		r.models = append(r.models, m)
		byName[m.cfg.Name] = m.n
	}
}

// grantModels gives each module the scorers of the models it is granted (perch:infer/v1); an
// unavailable model stays nil (ENODEV).
func (r *Runtime) grantModels() {
	for _, n := range r.nodes {
		for j := range n.spec.Grants.Models {
			g := &n.spec.Grants.Models[j]
			for _, m := range r.models {
				if m.cfg.Name == g.Name && m.scorer != nil {
					g.Scorer = m.scorer
				}
			}
		}
	}
}

// startModels runs every model node on a goroutine counted in wg.
func (r *Runtime) startModels(ctx context.Context, wg *sync.WaitGroup) {
	for _, m := range r.models {
		wg.Go(func() { m.run(ctx) })
	}
}

// boolField is a boolean as a record field: 1 or 0.
func boolField(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
