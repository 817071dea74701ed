package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/wasm"
	"github.com/perch-edge/perch/sdk/abi"
)

// batch is one encoded batch of records on a queue between modules.
type batch struct{ b []byte }

var batchPool = sync.Pool{New: func() any { return &batch{b: make([]byte, 0, 4096)} }}

// node runs one module instance under supervision. All its fields are owned by its goroutine,
// except in (written by upstream nodes) and upstream (counted down by them on exit).
type node struct {
	rt   *Runtime
	mod  *config.Module
	spec wasm.Spec
	in   chan *batch
	down []*node

	upstream    int // upstream nodes still running; guarded by upMu
	upMu        sync.Mutex
	inst        *wasm.Instance
	faults      []time.Time // recent faults, for quarantine
	restarts    int
	retryAt     time.Time
	quarantined bool
	dropped     int // batches dropped while the module was down
	lastErrno   time.Time
	stats       nodeStats // counters for Metrics (metrics.go)

	swap     chan swapReq                    // Swap's requests, taken between calls
	done     chan struct{}                   // closed when run returns
	manifest atomic.Pointer[config.Manifest] // the running binary's manifest after a swap; nil: mod's
}

// newNode makes the node of module m, with an input queue of queue batches.
func newNode(r *Runtime, m *config.Module, spec wasm.Spec, queue int) *node {
	return &node{rt: r, mod: m, in: make(chan *batch, queue), spec: spec, swap: make(chan swapReq), done: make(chan struct{})}
}

// run is the node's goroutine: a driver polls until ctx is done; a filter or rule processes its
// input until every upstream node has finished. Then it closes its instance and lets its
// downstream nodes know.
func (n *node) run(ctx context.Context) {
	defer n.finish()
	// Guest calls run on a context that is not canceled with ctx, so that a shutdown drains
	// the pipeline instead of counting as faults; each call still has its deadline.
	callCtx := context.WithoutCancel(ctx)
	if n.mod.Manifest.Kind == config.KindDriver {
		t := time.NewTicker(n.mod.Poll.D())
		defer t.Stop()
		for {
			// The first poll is at once; then one every interval.
			if n.ensure(callCtx) {
				t0 := time.Now()
				out, err := n.inst.Poll(callCtx, n.mod.PollMax)
				n.stats.observe(time.Since(t0))
				n.handle(callCtx, out, err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case req := <-n.swap:
				n.doSwap(callCtx, req)
			}
		}
	}
	n.ensure(callCtx)
	for {
		select {
		case b, ok := <-n.in:
			if !ok {
				return
			}
			if n.ensure(callCtx) {
				t0 := time.Now()
				out, err := n.inst.Process(callCtx, b.b)
				n.stats.observe(time.Since(t0))
				n.handle(callCtx, out, err)
			} else {
				n.dropped++
			}
			batchPool.Put(b)
		case req := <-n.swap:
			n.doSwap(callCtx, req)
		}
	}
}

// finish closes the instance and closes each downstream queue whose last upstream this was.
func (n *node) finish() {
	defer close(n.done)
	if n.inst != nil {
		n.inst.Close(context.Background())
		n.inst = nil
	}
	n.stats.up.Store(false)
	for _, d := range n.down {
		d.upMu.Lock()
		d.upstream--
		last := d.upstream == 0
		d.upMu.Unlock()
		if last {
			close(d.in)
		}
	}
}

// ensure makes sure the module is instantiated, unless it is quarantined or waiting out its
// backoff. It reports whether an instance is ready.
func (n *node) ensure(ctx context.Context) bool {
	if n.inst != nil {
		return true
	}
	if n.quarantined || time.Now().Before(n.retryAt) {
		return false
	}
	inst, err := n.rt.engine.Instantiate(ctx, &n.spec)
	if err != nil {
		n.fault(ctx, err)
		return false
	}
	n.inst = inst
	n.stats.up.Store(true)
	if n.restarts == 0 {
		n.rt.event(ctx, "module.started", n.mod.Name, "started "+n.mod.Manifest.Name+" "+n.mod.Manifest.Version, nil)
	} else {
		msg := fmt.Sprintf("restarted after %d restarts", n.restarts)
		if n.dropped > 0 {
			msg += fmt.Sprintf("; %d input batches dropped while down", n.dropped)
		}
		n.rt.event(ctx, "module.restart", n.mod.Name, msg, map[string]any{"restarts": n.restarts, "dropped_batches": n.dropped})
		n.dropped = 0
	}
	return true
}

// handle passes a call's output on and deals with its error.
func (n *node) handle(ctx context.Context, out []byte, err error) {
	var ee *wasm.ErrnoError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		// The guest reported an error; it stays up. Record it at most every 10 s.
		n.stats.errorsSinceSwap.Add(1)
		if time.Since(n.lastErrno) > 10*time.Second {
			n.lastErrno = time.Now()
			n.rt.event(ctx, "module.error", n.mod.Name, ee.Error(), map[string]any{"errno": ee.Errno.String()})
		}
	default:
		n.fault(ctx, err)
		return
	}
	n.stats.recordsOut.Add(uint64(n.rt.deliver(n.mod.Name, n.mod.Recorded(), n.down, out)))
}

// deliver records a batch a module or source emitted (unless record is false), shows it to
// Options.OnRecords, and passes a copy to each downstream node's queue. It returns the number
// of records in the batch.
func (r *Runtime) deliver(name string, record bool, down []*node, out []byte) int {
	if len(out) == 0 {
		return 0
	}
	cnt, _ := abi.Count(out) // the engine checked the batch; an error only stops the count
	if record {
		if err := r.store.Write(out); err != nil {
			r.log.Error("recording failed", "from", name, "err", err)
		}
	}
	if r.opts.OnRecords != nil {
		r.opts.OnRecords(name, out)
	}
	for _, d := range down {
		b := batchPool.Get().(*batch)
		b.b = append(b.b[:0], out...)
		d.stats.recordsIn.Add(uint64(cnt))
		d.in <- b // blocks when d is behind: backpressure
	}
	return cnt
}

// fault records a fault, schedules a restart with exponential backoff, and quarantines the
// module after too many faults in the window.
func (n *node) fault(ctx context.Context, err error) {
	if n.inst != nil {
		n.inst.Close(context.Background())
		n.inst = nil
	}
	n.stats.up.Store(false)
	reason, detail := "init", err.Error()
	var f *wasm.Fault
	if errors.As(err, &f) {
		if f.Reason == wasm.ReasonCanceled {
			return
		}
		reason, detail = f.Reason, f.Error()
	}
	now := time.Now()
	o := &n.rt.opts
	recent := n.faults[:0]
	for _, t := range n.faults {
		if now.Sub(t) < o.QuarantineWindow {
			recent = append(recent, t)
		}
	}
	n.faults = append(recent, now)
	n.stats.fault(reason)
	n.stats.faultsSinceSwap.Add(1)
	n.rt.log.Warn("module fault", "module", n.mod.Name, "reason", reason, "err", detail)
	n.rt.event(ctx, "module.fault", n.mod.Name, detail, map[string]any{"reason": reason})
	if len(n.faults) >= o.QuarantineAfter {
		n.quarantined = true
		n.stats.quarantined.Store(true)
		msg := fmt.Sprintf("quarantined after %d faults in %v; last: %s", len(n.faults), o.QuarantineWindow, reason)
		n.rt.event(ctx, "module.quarantined", n.mod.Name, msg, map[string]any{"reason": reason})
		var b abi.Builder
		b.Begin(abi.KindAlert, now.UnixNano(), n.mod.Name, "module.health")
		b.Field("faults", float64(len(n.faults)))
		b.Tag("state", "raised")
		b.Tag("severity", "critical")
		b.Tag("message", msg)
		b.End()
		if err := n.rt.store.Write(b.Buf); err != nil {
			n.rt.log.Error("recording failed", "module", n.mod.Name, "err", err)
		}
		if n.rt.opts.OnRecords != nil {
			n.rt.opts.OnRecords(n.mod.Name, b.Buf)
		}
		return
	}
	backoff := o.BackoffMin << (len(n.faults) - 1)
	if backoff > o.BackoffMax || backoff <= 0 {
		backoff = o.BackoffMax
	}
	n.restarts++
	n.stats.restarts.Add(1)
	n.retryAt = now.Add(backoff)
}

// ErrNotRunning is returned by [Runtime.Inject] for a module that has stopped taking input: its
// upstream modules have all finished (the pipeline is shutting down).
var ErrNotRunning = errors.New("runtime: the module no longer takes input")

// Inject puts a batch of encoded records on the input queue of the module named module, as if
// one of its inputs had emitted it: it is how an upstream command (the uplink's command handler)
// reaches an actuator, such as an alert record with state raised for the relay actuator. The
// module must take inputs (any kind but driver). The batch must decode (sdk/abi); it is copied,
// and it is not recorded (what the module does with it is). Inject blocks while the queue is
// full (backpressure) until ctx is done. It is safe for concurrent use, before and during Run;
// once the module's inputs have all finished it returns [ErrNotRunning].
func (r *Runtime) Inject(ctx context.Context, module string, records []byte) error {
	var n *node
	for _, c := range r.nodes {
		if c.mod.Name == module {
			n = c
		}
	}
	if n == nil {
		return fmt.Errorf("runtime: inject: no module %q", module)
	}
	if n.mod.Manifest.Kind == config.KindDriver {
		return fmt.Errorf("runtime: inject: module %q is a driver and takes no input", module)
	}
	cnt, err := abi.Count(records)
	if err != nil {
		return fmt.Errorf("runtime: inject into %s: %w", module, err)
	} else if cnt == 0 {
		return nil
	}
	b := batchPool.Get().(*batch)
	b.b = append(b.b[:0], records...)
	// The queue is closed by the last upstream node's finish, under upMu: holding it while
	// sending means the queue cannot close under the send. The node drains its queue until it
	// is closed, so the send completes (or ctx ends it).
	n.upMu.Lock()
	defer n.upMu.Unlock()
	if n.upstream == 0 {
		batchPool.Put(b)
		return fmt.Errorf("runtime: inject into %s: %w", module, ErrNotRunning)
	}
	select {
	case n.in <- b:
		n.stats.recordsIn.Add(uint64(cnt))
		return nil
	case <-ctx.Done():
		batchPool.Put(b)
		return fmt.Errorf("runtime: inject into %s: %w", module, ctx.Err())
	}
}
