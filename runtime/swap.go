package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/wasm"
)

// SwapReport says what a [Runtime.Swap] did.
type SwapReport struct {
	Module     string
	OldVersion string
	NewVersion string
	// Compile is how long compiling the new binary took (or loading it from the cache).
	Compile time.Duration
	// Gap is how long the module made no call: from the end of the old instance's last call
	// to the new instance being ready, the state handoff included. Batches queued meanwhile;
	// none was lost.
	Gap time.Duration
	// Started reports whether the new instance started; if not, its error is supervised as a
	// fault (restart with backoff) like any other, and StartErr says why.
	Started  bool
	StartErr error
	// Handoff is how many bytes of in-memory state the old instance handed to the new one
	// (perch_snapshot, then perch_restore; see sdk/ABI.md, State handoff); 0 when nothing was
	// handed over. HandoffErr says why a handoff was tried and failed, in which case the new
	// instance started fresh; it is nil when the state was handed over or there was none.
	Handoff    int
	HandoffErr error
}

// ErrSwapRefused is wrapped by [Runtime.Swap] errors that leave the running module untouched.
var ErrSwapRefused = errors.New("runtime: swap refused")

// swapReq asks a node's goroutine to change its binary between two calls.
type swapReq struct {
	bin   []byte
	man   config.Manifest
	reply chan SwapReport
}

// Swap replaces the binary of the running module named name with bin, whose manifest is man,
// between two of its calls: batches wait on the module's queue meanwhile, so no record is lost,
// and upstream modules never stop. The new binary is compiled first (which warms the compile
// cache); a binary that does not compile, a manifest of another kind, or one whose needs the
// module's grants do not cover is refused with ErrSwapRefused, and the old binary keeps running.
// The module keeps its name, config, grants and state store (perch:state): the new instance
// reads what the old one wrote. Its in-memory state is handed over when both binaries take part
// (perch_snapshot and perch_restore, see sdk/ABI.md); a handoff that fails never stops the swap:
// the new instance starts fresh and a module.handoff_failed event says why. Its fault history
// is cleared, so that Health tells about the new binary alone.
//
// Swap is how the update agent installs a module and how it rolls one back (with the old
// binary). It returns once the new instance is ready or failed to start, or with ctx's error.
// It is safe for concurrent use, during Run; swaps of one module are serialised.
func (r *Runtime) Swap(ctx context.Context, name string, bin []byte, man *config.Manifest) (SwapReport, error) {
	rep := SwapReport{Module: name, NewVersion: man.Version}
	var n *node
	for _, x := range r.nodes {
		if x.mod.Name == name {
			n = x
		}
	}
	if n == nil {
		return rep, fmt.Errorf("%w: no module %q", ErrSwapRefused, name)
	}
	rep.OldVersion = n.version()
	if man.Kind != n.mod.Manifest.Kind {
		return rep, fmt.Errorf("%w: module %s is a %s, the new binary a %s", ErrSwapRefused, name, n.mod.Manifest.Kind, man.Kind)
	}
	if errs := config.CheckGrants(&n.mod.Grants, &man.Needs); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Field + ": " + e.Msg
		}
		return rep, fmt.Errorf("%w: module %s: the new manifest does not match the grants: %s", ErrSwapRefused, name, strings.Join(msgs, "; "))
	}
	t0 := time.Now()
	if err := r.engine.Compile(ctx, bin, man.Kind, n.mod.MemoryPages); err != nil {
		return rep, fmt.Errorf("%w: module %s: %v", ErrSwapRefused, name, err)
	}
	rep.Compile = time.Since(t0)
	req := swapReq{bin: bin, man: *man, reply: make(chan SwapReport, 1)}
	select {
	case n.swap <- req:
	case <-n.done:
		return rep, fmt.Errorf("%w: module %s has stopped", ErrSwapRefused, name)
	case <-ctx.Done():
		return rep, ctx.Err()
	}
	select {
	case got := <-req.reply:
		got.Compile = rep.Compile
		return got, nil
	case <-ctx.Done():
		return rep, ctx.Err()
	}
}

// doSwap runs on the node's goroutine, between two calls.
func (n *node) doSwap(ctx context.Context, req swapReq) {
	rep := SwapReport{Module: n.mod.Name, OldVersion: n.version(), NewVersion: req.man.Version}
	t0 := time.Now()
	var snap []byte
	if n.inst != nil {
		// The old instance hands over its in-memory state; whatever goes wrong, the swap goes on.
		snap, rep.HandoffErr = n.inst.Snapshot(ctx)
		n.inst.Close(context.Background())
		n.inst = nil
	}
	n.spec.Binary = req.bin
	n.spec.Emits = req.man.Emits
	n.manifest.Store(&req.man)
	// A new binary starts with a clean record: no backoff, no quarantine, no fault history.
	n.faults, n.retryAt, n.quarantined, n.dropped = nil, time.Time{}, false, 0
	n.stats.quarantined.Store(false)
	n.stats.swaps.Add(1)
	n.stats.faultsSinceSwap.Store(0)
	n.stats.errorsSinceSwap.Store(0)
	inst, err := n.rt.engine.Instantiate(ctx, &n.spec)
	if err == nil && len(snap) > 0 {
		inst, err = n.restore(ctx, inst, snap, &rep)
	}
	if err != nil {
		rep.StartErr = err
		n.fault(ctx, err)
	} else {
		n.inst = inst
		n.stats.up.Store(true)
		rep.Started = true
	}
	rep.Gap = time.Since(t0)
	handoff := "none"
	switch {
	case rep.HandoffErr != nil:
		handoff = "failed"
		n.rt.event(ctx, "module.handoff_failed", n.mod.Name,
			fmt.Sprintf("%s %s -> %s: the state was not handed over, the new binary starts fresh: %v", req.man.Name, rep.OldVersion, rep.NewVersion, rep.HandoffErr),
			map[string]any{"from": rep.OldVersion, "to": rep.NewVersion, "error": rep.HandoffErr.Error()})
	case rep.Handoff > 0:
		handoff = "restored"
	}
	n.rt.event(ctx, "module.swapped", n.mod.Name, fmt.Sprintf("%s %s -> %s in %v, state handoff: %s (%d bytes)", req.man.Name, rep.OldVersion, rep.NewVersion, rep.Gap.Round(time.Microsecond), handoff, rep.Handoff),
		map[string]any{"from": rep.OldVersion, "to": rep.NewVersion, "started": rep.Started, "handoff": handoff, "handoff_bytes": rep.Handoff})
	req.reply <- rep
}

// restore hands the old instance's snapshot to the new instance inst. If inst refuses it, or
// fails taking it, restore discards inst and returns a fresh instance instead (so that a
// half-applied snapshot cannot linger), with the reason in rep.HandoffErr; err is set only when
// that fresh instance does not start.
func (n *node) restore(ctx context.Context, inst *wasm.Instance, snap []byte, rep *SwapReport) (*wasm.Instance, error) {
	err := inst.Restore(ctx, snap)
	switch {
	case err == nil:
		rep.Handoff = len(snap)
		return inst, nil
	case errors.Is(err, wasm.ErrNoRestore):
		rep.HandoffErr = err
		return inst, nil
	}
	rep.HandoffErr = fmt.Errorf("perch_restore failed: %w", err)
	inst.Close(context.Background())
	return n.rt.engine.Instantiate(ctx, &n.spec)
}

// version is the version of the binary the node runs.
func (n *node) version() string {
	if m := n.manifest.Load(); m != nil {
		return m.Version
	}
	return n.mod.Manifest.Version
}

// Health is what the update agent watches of a module after a swap.
type Health struct {
	Up          bool   // an instance is running
	Quarantined bool   // stopped after too many faults
	Faults      uint64 // faults since the last swap (or start)
	Errors      uint64 // errno errors the module reported since the last swap (or start)
	RecordsOut  uint64 // records it emitted since start
	Swaps       uint64 // swaps since start
	Version     string // the version of the binary it runs
}

// Health returns the health of the module or model named name (for a model: Up while a model
// is loaded, Errors its failed runs and non-finite scores since the last swap, Version its
// card's). It is safe for concurrent use.
func (r *Runtime) Health(name string) (Health, error) {
	for _, n := range r.nodes {
		if n.mod.Name != name {
			continue
		}
		s := &n.stats
		return Health{Up: s.up.Load(), Quarantined: s.quarantined.Load(), Faults: s.faultsSinceSwap.Load(),
			Errors: s.errorsSinceSwap.Load(), RecordsOut: s.recordsOut.Load(), Swaps: s.swaps.Load(), Version: n.version()}, nil
	}
	for _, m := range r.models { // model_swap.go
		if m.running.Load().cfg.Name == name {
			return m.health(), nil
		}
	}
	return Health{}, fmt.Errorf("runtime: no module or model %q", name)
}
