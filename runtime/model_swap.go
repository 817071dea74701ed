package runtime

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

// EventModelSwapped is recorded when [Runtime.SwapModel] switched a model node to a new card
// (module: the model's name; message: from what to what, streams carried or warming again).
const EventModelSwapped = "model.swapped"

// ModelSwapReport says what a [Runtime.SwapModel] did.
type ModelSwapReport struct {
	Model      string
	OldVersion string // the card version it ran; "" when it had no model loaded
	NewVersion string
	// Load is how long reading the card and the model and making the ONNX Runtime session took,
	// before the switch; the node kept scoring with the old model meanwhile.
	Load time.Duration
	// Gap is how long the node scored nothing: the switch itself, between two batches.
	// Batches queued meanwhile; none was lost.
	Gap time.Duration
	// Carried counts the streams whose window carried over (same features and window, the
	// samples re-normalised with the new card's normalisation); Warming counts those that
	// start a new window (their next window-1 samples are not scored).
	Carried, Warming int
}

// modelRunning is what Metrics and Health read of a model node: the config (a copy naming the
// card it runs) and why it is unavailable. Replaced whole, never changed.
type modelRunning struct {
	cfg *config.Model
	err error
}

// modelSwapReq asks a model node's goroutine to switch to a loaded model between two batches.
type modelSwapReq struct {
	cfg   *config.Model // the node's config, naming the new card
	sess  *ort.Session
	reply chan ModelSwapReport
}

// publish makes m.cfg and m.err what Metrics and Health read.
func (m *modelNode) publish() { m.running.Store(&modelRunning{cfg: m.cfg, err: m.err}) }

// SwapModel replaces the card and ONNX model of the running model node named name with the card
// at cardPath (NAME.card.yaml, with its .onnx beside it, as a config's models section names
// them), between two of its batches: batches wait on the node's queue meanwhile, so no record is
// lost, and upstream nodes never stop. The new model is loaded first, and refused with
// ErrSwapRefused, the old one scoring on, when its card does not load or its digest does not
// match, when ONNX Runtime refuses it or its rows are not the card's features × window, when the
// node's fields do not map the card's features, or when modules score with the model through
// perch:infer/v1 and its row width changes.
//
// Each stream (source, series) keeps its window when the new card has the same features and
// window (its samples re-normalised), else it warms up again; it keeps its alarm when the
// card's score section is the same, else the alarm starts anew, and one that was raised is
// cleared by an alert that says so; its likelihood (score.likelihood) starts anew unless the
// model file is the same. Modules granted the model score with the new session from the next
// call. The node's run errors (Health) are cleared, so that Health tells about the new model
// alone. A node whose model failed to load at start takes a working one; its granted modules
// keep ENODEV until a restart.
//
// SwapModel is how the update agent installs a model and how it rolls one back (with the old
// card). It returns once the node switched, or with ctx's error. It is safe for concurrent use,
// during Run; swaps of one node are serialised by its goroutine.
func (r *Runtime) SwapModel(ctx context.Context, name, cardPath string) (ModelSwapReport, error) {
	rep := ModelSwapReport{Model: name}
	var m *modelNode
	for _, x := range r.models {
		if x.running.Load().cfg.Name == name {
			m = x
		}
	}
	if m == nil {
		return rep, fmt.Errorf("%w: no model %q", ErrSwapRefused, name)
	}
	cur := m.running.Load()
	if c := cur.cfg.Loaded; c != nil && cur.err == nil {
		rep.OldVersion = c.Version
	}
	t0 := time.Now()
	c, err := card.Load(cardPath)
	if err != nil {
		return rep, fmt.Errorf("%w: model %s: %w", ErrSwapRefused, name, err)
	}
	rep.NewVersion = c.Version
	nc := *cur.cfg
	nc.Card, nc.Loaded = cardPath, c
	if nc.FieldNames, err = ModelFields(&nc, c); err != nil {
		return rep, fmt.Errorf("%w: model %s: %w", ErrSwapRefused, name, err)
	}
	if old := cur.cfg.Loaded; old != nil && old.Inputs() != c.Inputs() && r.modelGranted(name) {
		return rep, fmt.Errorf("%w: model %s: modules score rows of %d values with it (grants.models); %s takes %d",
			ErrSwapRefused, name, old.Inputs(), cardPath, c.Inputs())
	}
	sess, err := loadSession(r.cfg.Engine.ONNXRuntime, &nc)
	if err != nil {
		return rep, fmt.Errorf("%w: %w", ErrSwapRefused, err)
	}
	rep.Load = time.Since(t0)
	req := modelSwapReq{cfg: &nc, sess: sess, reply: make(chan ModelSwapReport, 1)}
	select {
	case m.swap <- req:
	case <-m.n.done:
		sess.Close()
		return rep, fmt.Errorf("%w: model %s has stopped", ErrSwapRefused, name)
	case <-ctx.Done():
		sess.Close()
		return rep, ctx.Err()
	}
	// Taken: the node switches at once and replies without blocking.
	got := <-req.reply
	got.Load = rep.Load
	return got, nil
}

// doSwap runs on the model node's goroutine, between two batches.
func (m *modelNode) doSwap(ctx context.Context, req modelSwapReq) {
	t0 := time.Now()
	old, nc := m.cfg.Loaded, req.cfg.Loaded
	if m.err != nil {
		old = nil // its card never scored: nothing to carry
	}
	rep := ModelSwapReport{Model: m.cfg.Name, NewVersion: nc.Version}
	if old != nil {
		rep.OldVersion = old.Version
	}
	sameFeed := old != nil && slices.Equal(old.Features, nc.Features) && old.Window == nc.Window
	sameScore := old != nil && reflect.DeepEqual(old.Score, nc.Score)
	sameModel := old != nil && old.SHA256 == nc.SHA256
	// Alarms that are raised and do not carry over are cleared under the old card's threshold.
	if !sameScore && old != nil {
		m.out.Buf = m.out.Buf[:0]
		now := time.Now().UnixNano()
		for _, s := range m.streams {
			if s.alarm.Active() {
				m.clearAlarm(s, now, nc)
			}
		}
		if len(m.out.Buf) > 0 {
			m.n.stats.recordsOut.Add(uint64(m.rt.deliver(m.cfg.Name, m.cfg.Recorded(), m.n.down, m.out.Buf)))
			m.out.Buf = m.out.Buf[:0]
		}
	}
	oldSess := m.sess
	m.cfg, m.sess, m.err = req.cfg, req.sess, nil
	m.size()
	for _, s := range m.streams {
		f := nc.NewFeeder()
		if sameFeed && f.Carry(s.feed) {
			rep.Carried++
		} else {
			rep.Warming++
		}
		s.feed = f
		if !sameModel || !sameScore {
			s.lik = nc.NewLikelihood()
		}
		if !sameScore {
			s.alarm = nc.NewAlarm()
		}
	}
	if m.scorer != nil {
		m.scorer.mu.Lock() // waits for the modules' calls on the old session
		m.scorer.s = m.sess
		m.scorer.mu.Unlock()
	}
	if oldSess != nil {
		if err := oldSess.Close(); err != nil {
			m.rt.log.Warn("model: closing the old session", "model", m.cfg.Name, "err", err)
		}
	}
	m.runErrs.Store(0)
	m.swaps.Add(1)
	m.publish()
	rep.Gap = time.Since(t0)
	m.rt.event(ctx, EventModelSwapped, m.cfg.Name,
		fmt.Sprintf("%s %s -> %s %s in %v: %d streams carried, %d warming", nc.Name, rep.OldVersion, nc.Name, rep.NewVersion,
			rep.Gap.Round(time.Microsecond), rep.Carried, rep.Warming),
		map[string]any{"from": rep.OldVersion, "to": rep.NewVersion, "card": m.cfg.Card, "carried": rep.Carried, "warming": rep.Warming})
	req.reply <- rep
}

// clearAlarm writes an alert that clears the raised alarm of s, whose card gives way to next.
func (m *modelNode) clearAlarm(s *stream, timeNS int64, next *card.Card) {
	b := &m.out
	b.Begin(abi.KindAlert, timeNS, m.cfg.Name, s.series)
	b.Field("threshold", m.threshold)
	b.Tag("state", "cleared")
	b.Tag("severity", m.cfg.Severity)
	b.Tag("message", fmt.Sprintf("%s: the model was replaced by %s %s, whose alarm starts anew", m.message, next.Name, next.Version))
	b.Tag("field", "score")
	b.Tag("source", s.source)
	b.Tag("direction", "above")
	b.End()
	m.alerts.Add(1)
}

// modelGranted reports whether a module scores with the model named name (grants.models).
func (r *Runtime) modelGranted(name string) bool {
	for _, n := range r.nodes {
		for _, g := range n.spec.Grants.Models {
			if g.Name == name {
				return true
			}
		}
	}
	return false
}

// ModelFields returns the record fields model node m reads the features of card c from, in
// c's feature order, with m's fields map, as config.Load does for the config's own card: every
// key of m.Fields must be a feature of c, and no two features may read one field. Errors name
// the feature and m's card.
func ModelFields(m *config.Model, c *card.Card) ([]string, error) {
	for k := range m.Fields {
		if !slices.Contains(c.Features, k) {
			return nil, fmt.Errorf("the config maps feature %q (fields.%s), which card %s does not have (features: %v)", k, k, m.Card, c.Features)
		}
	}
	out := make([]string, len(c.Features))
	used := map[string]string{}
	for j, f := range c.Features {
		name := f
		if v := m.Fields[f]; v != "" {
			name = v
		}
		if other, dup := used[name]; dup {
			return nil, fmt.Errorf("card %s: features %q and %q both read field %q", m.Card, other, f, name)
		}
		used[name] = f
		out[j] = name
	}
	return out, nil
}

// health is [Runtime.Health] for a model node: Up while a model is loaded and scoring,
// Errors its failed runs and non-finite scores since the last swap.
func (m *modelNode) health() Health {
	cur := m.running.Load()
	h := Health{Up: cur.err == nil, Errors: m.runErrs.Load(), RecordsOut: m.n.stats.recordsOut.Load(), Swaps: m.swaps.Load()}
	if c := cur.cfg.Loaded; c != nil {
		h.Version = c.Version
	}
	select {
	case <-m.n.done:
		h.Up = false
	default:
	}
	return h
}
