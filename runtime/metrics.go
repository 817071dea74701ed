package runtime

import (
	"sync/atomic"
	"time"

	"github.com/perch-edge/perch/runtime/internal/wasm"
)

// CallBuckets are the upper bounds, in seconds, of the guest call latency histogram's buckets
// (the +Inf bucket is implied).
var CallBuckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// callBucketNS are CallBuckets in nanoseconds, for observe.
var callBucketNS = func() (ns [len(CallBuckets)]int64) {
	for i, s := range CallBuckets {
		ns[i] = int64(s * 1e9)
	}
	return ns
}()

// FaultReasons are the reasons faults are counted by: "init" (the module failed to
// instantiate), the guest faults of the Wasm engine, and "other".
var FaultReasons = [...]string{"init", wasm.ReasonTrap, wasm.ReasonDeadline, wasm.ReasonMemory,
	wasm.ReasonBadPointer, wasm.ReasonEmitQuota, wasm.ReasonLogQuota, wasm.ReasonBadRecord, "other"}

// nodeStats are a node's counters. They are written by the node's goroutine (records in by its
// upstream nodes) and read by Metrics at any time: atomics only, nothing allocated.
type nodeStats struct {
	recordsIn   atomic.Uint64
	recordsOut  atomic.Uint64
	restarts    atomic.Uint64
	quarantined atomic.Bool
	faults      [len(FaultReasons)]atomic.Uint64
	calls       [len(CallBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	callCount   atomic.Uint64
	callNS      atomic.Uint64
	// For Health (swap.go).
	up              atomic.Bool // an instance is running
	swaps           atomic.Uint64
	faultsSinceSwap atomic.Uint64
	errorsSinceSwap atomic.Uint64
}

// observe counts one guest call that took d.
func (s *nodeStats) observe(d time.Duration) {
	i := 0
	for i < len(callBucketNS) && int64(d) > callBucketNS[i] {
		i++
	}
	s.calls[i].Add(1)
	s.callNS.Add(uint64(max(d, 0)))
	s.callCount.Add(1)
}

// fault counts a fault for reason.
func (s *nodeStats) fault(reason string) {
	i := len(FaultReasons) - 1
	for j, r := range FaultReasons {
		if r == reason {
			i = j
			break
		}
	}
	s.faults[i].Add(1)
}

// liveness is the runtime's run state, for readiness and uptime.
type liveness struct {
	startedNS atomic.Int64 // when Run started every module and source; 0 before
}

// Metrics is a snapshot of the runtime's counters, from [Runtime.Metrics].
type Metrics struct {
	Site, Device string
	Ready        bool      // Run has started the modules and sources
	Started      time.Time // when; zero before
	Modules      []ModuleMetrics
	Sources      []SourceMetrics
	Models       []ModelMetrics // model nodes (model.go)
}

// ModuleMetrics are one module instance's counters.
type ModuleMetrics struct {
	Name        string            `json:"name"`
	Kind        string            `json:"kind"`
	RecordsIn   uint64            `json:"records_in"`  // records queued to it (by upstream modules, sources, Inject)
	RecordsOut  uint64            `json:"records_out"` // records it emitted
	Faults      map[string]uint64 `json:"faults"`      // by reason (FaultReasons), every reason present
	Restarts    uint64            `json:"restarts"`
	Quarantined bool              `json:"quarantined"`
	QueueDepth  int               `json:"queue_depth"` // batches waiting on its input queue now
	QueueCap    int               `json:"queue_cap"`
	Calls       Histogram         `json:"guest_calls"` // guest call latency
}

// Histogram is a latency histogram in seconds: Counts[i] counts the observations at most
// Bounds[i] (cumulative); Count counts them all (the +Inf bucket).
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

// SourceMetrics are one southbound source's counters.
type SourceMetrics struct {
	Name        string `json:"name"`
	Messages    uint64 `json:"messages"`     // messages converted and queued
	BadMessages uint64 `json:"bad_messages"` // messages that did not convert
}

// Metrics returns a snapshot of the runtime's counters. It is safe for concurrent use, before,
// during and after Run.
func (r *Runtime) Metrics() Metrics {
	m := Metrics{Site: r.cfg.Site, Device: r.cfg.Device}
	if ns := r.live.startedNS.Load(); ns != 0 {
		m.Ready, m.Started = true, time.Unix(0, ns)
	}
	for _, n := range r.nodes {
		s := &n.stats
		mm := ModuleMetrics{Name: n.mod.Name, Kind: n.mod.Manifest.Kind,
			RecordsIn: s.recordsIn.Load(), RecordsOut: s.recordsOut.Load(),
			Restarts: s.restarts.Load(), Quarantined: s.quarantined.Load(),
			QueueDepth: len(n.in), QueueCap: cap(n.in), Faults: map[string]uint64{}}
		for i, reason := range FaultReasons {
			mm.Faults[reason] = s.faults[i].Load()
		}
		// Count and sum first, buckets after: a call observed in between shows in a bucket
		// but not yet in the count, so the buckets are clamped to it.
		h := Histogram{Bounds: CallBuckets[:], Counts: make([]uint64, len(CallBuckets))}
		h.Count = s.callCount.Load()
		h.Sum = float64(s.callNS.Load()) / 1e9
		var cum uint64
		for i := range CallBuckets {
			cum += s.calls[i].Load()
			h.Counts[i] = min(cum, h.Count)
		}
		mm.Calls = h
		m.Modules = append(m.Modules, mm)
	}
	for _, s := range r.srcs {
		m.Sources = append(m.Sources, SourceMetrics{Name: s.cfg.Name, Messages: s.msgs.Load(), BadMessages: uint64(max(s.bad.Load(), 0))})
	}
	m.Models = r.modelMetrics()
	return m
}
