// Package wasm runs Perch modules on wazero: it compiles modules through an on-disk compilation
// cache, instantiates each module in its own sandbox with its own memory limit, serves the
// perch:*/v1 host functions checked against the module's grants, and turns every way a guest can
// misbehave into a [Fault].
//
// # Overview
//
// An [Engine] is shared by all modules of a process and is safe for concurrent use. An
// [Instance] is one running module; it is used by one goroutine at a time. Every guest call runs
// under a deadline with wazero's close-on-context-done on, so a spinning guest is stopped and
// the process (its garbage collector included) stays live.
package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/sdk/abi"
)

// Engine compiles and instantiates modules. It is safe for concurrent use; Close it when done.
//
// All instances share one wazero runtime, so that a module binary is decoded and compiled once
// and then instantiated many times. What differs per instance is carried by the call's context:
// the host functions find their [Instance] there, and each instance's memory comes from an
// allocator that enforces its own limit.
type Engine struct {
	cache wazero.CompilationCache
	rt    wazero.Runtime

	mu       sync.Mutex
	compiled map[[32]byte]wazero.CompiledModule // by the binary's SHA-256
}

// NewEngine returns an engine whose compilation cache lives in cacheDir (created with mode 0700
// if missing; it holds trusted native code, so keep it root-owned). An empty cacheDir keeps the
// cache in memory only. With interpreter set, modules run on wazero's interpreter instead of
// its optimizing compiler (a fallback switch for compiler bugs).
func NewEngine(cacheDir string, interpreter bool) (*Engine, error) {
	ctx := context.Background()
	var cache wazero.CompilationCache
	if cacheDir == "" {
		cache = wazero.NewCompilationCache()
	} else {
		if err := prepareCacheDir(cacheDir); err != nil {
			return nil, err
		}
		c, err := wazero.NewCompilationCacheWithDir(cacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: compilation cache: %w", err)
		}
		cache = c
	}
	rc := wazero.NewRuntimeConfigCompiler()
	if interpreter {
		rc = wazero.NewRuntimeConfigInterpreter()
	}
	// Close-on-context-done is what makes a deadline stop a spinning guest; never turn it off.
	rc = rc.WithCompilationCache(cache).WithCloseOnContextDone(true)
	e := &Engine{cache: cache, rt: wazero.NewRuntimeWithConfig(ctx, rc), compiled: map[[32]byte]wazero.CompiledModule{}}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, e.rt); err != nil {
		e.Close(ctx)
		return nil, fmt.Errorf("wasm: wasi: %w", err)
	}
	if err := instantiateHost(ctx, e.rt); err != nil {
		e.Close(ctx)
		return nil, fmt.Errorf("wasm: host modules: %w", err)
	}
	return e, nil
}

// prepareCacheDir creates the compilation cache folder, refuses one that others could write to
// (it holds native code that runs unchecked), and removes the subfolders that older wazero
// versions left (each version writes its own, named wazero-<version>-<arch>-<os>).
func prepareCacheDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("wasm: compilation cache: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("wasm: compilation cache: %w", err)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("wasm: compilation cache %s is writable by others (mode %v): it holds native code; chmod go-w it", dir, st.Mode().Perm())
	}
	current := "wazero-" + wazeroVersion() + "-" + goruntime.GOARCH + "-" + goruntime.GOOS
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wasm: compilation cache: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "wazero-") && e.Name() != current {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// wazeroVersion returns the version of wazero linked into this binary, worked out the way
// wazero names its cache folder ("dev" where the build records no version, as in tests).
func wazeroVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if strings.Contains(d.Path, "github.com/tetratelabs/wazero") && d.Version != "" && d.Version != "(devel)" {
				return d.Version
			}
		}
	}
	return "dev"
}

// Close closes the runtime, every instance still open, and the compilation cache's in-memory
// state.
func (e *Engine) Close(ctx context.Context) error {
	return errors.Join(e.rt.Close(ctx), e.cache.Close(ctx))
}

// Compile compiles bin (from the on-disk cache when it is there) and keeps it for
// [Engine.Instantiate], so that a start does not compile twice. It also checks that the module
// has the exports of its kind ("driver" needs perch_poll; "filter", "rule" and "actuator" need
// perch_process) and that it can start within memoryPages (64 KiB pages). It is safe to call
// again with the same binary.
func (e *Engine) Compile(ctx context.Context, bin []byte, kind string, memoryPages uint32) error {
	_, err := e.compile(ctx, bin, kind, memoryPages)
	return err
}

func (e *Engine) compile(ctx context.Context, bin []byte, kind string, memoryPages uint32) (wazero.CompiledModule, error) {
	sum := sha256.Sum256(bin)
	e.mu.Lock()
	cm, ok := e.compiled[sum]
	e.mu.Unlock()
	if !ok {
		var err error
		if cm, err = e.rt.CompileModule(ctx, bin); err != nil {
			return nil, fmt.Errorf("wasm: compile: %w", err)
		}
		e.mu.Lock()
		if old, ok := e.compiled[sum]; ok {
			cm.Close(ctx)
			cm = old
		} else {
			e.compiled[sum] = cm
		}
		e.mu.Unlock()
	}
	if err := checkExports(cm, kind); err != nil {
		return nil, err
	}
	if m, ok := cm.ExportedMemories()[abi.ExportMemory]; ok && m.Min() > memoryPages {
		return nil, fmt.Errorf("wasm: the module needs %d pages of memory to start, more than its limit of %d (memory_pages)", m.Min(), memoryPages)
	}
	return cm, nil
}

func checkExports(cm wazero.CompiledModule, kind string) error {
	fns := cm.ExportedFunctions()
	want := []string{abi.ExportABIVersion, abi.ExportBuffer, abi.ExportInit}
	if kind == "driver" {
		want = append(want, abi.ExportPoll)
	} else {
		want = append(want, abi.ExportProcess)
	}
	var errs []error
	for _, name := range want {
		if _, ok := fns[name]; !ok {
			errs = append(errs, fmt.Errorf("wasm: a %s module must export %s", kind, name))
		}
	}
	if _, ok := cm.ExportedMemories()[abi.ExportMemory]; !ok {
		errs = append(errs, errors.New("wasm: the module must export its memory as \"memory\""))
	}
	return errors.Join(errs...)
}

// StateStore keeps modules' key/value state. Implementations are safe for concurrent use.
type StateStore interface {
	GetState(ctx context.Context, module, key string) ([]byte, bool, error)
	SetState(ctx context.Context, module, key string, value []byte) error
	DeleteState(ctx context.Context, module, key string) error
}

// Spec is everything needed to run one module instance.
type Spec struct {
	Name        string // instance name; the source of its records
	Kind        string // driver, filter, rule or actuator
	Binary      []byte // the .wasm
	MemoryPages uint32 // memory limit in 64 KiB pages
	Deadline    time.Duration
	EmitRecords int      // records per call
	EmitBytes   int      // bytes emitted per call
	LogBytes    int      // log bytes per call
	Emits       []string // record kinds the module may emit (its manifest's emits)
	Grants      Grants
	Config      []byte       // JSON given to perch:config/v1 get
	HAL         hal.Provider // nil: every HAL call gets ENODEV
	State       StateStore   // nil: state calls get ENOSYS
	Logger      *slog.Logger
	Now         func() int64 // clock for perch:clock/v1; nil: the wall clock in ns
}

// Instance is one running module. It is used by one goroutine at a time. After a Fault it is
// closed: make a new one.
type Instance struct {
	spec   *Spec
	mod    api.Module
	memory limitedMemory
	mem    api.Memory
	stack  []uint64
	buffer api.Function
	proc   api.Function
	poll   api.Function
	snapFn api.Function // perch_snapshot, nil if the module has none
	restFn api.Function // perch_restore, nil if the module has none

	// Per-call state, touched by host functions during a call.
	out        []byte // records emitted in this call, sources filled in
	emitted    int    // records emitted in this call
	logged     int    // log bytes in this call
	reason     string // why the host closed the guest, if it did
	emits      [abi.KindEvent + 1]bool
	reg        [1]byte // the register byte of i2c_read
	lastI2C    hal.I2C // the bus of the last I2C call, and its number
	lastI2CBus uint32
	stderr     tailBuffer
	logs       logLimit // guest log lines per second, across calls

	inferScratch inferState // perch:infer/v1 buffers (infer.go)

	// The state handoff (Snapshot): what perch:io/v1 save collected during perch_snapshot.
	snapshotting bool   // a perch_snapshot call is running: save is allowed
	snap         []byte // the bytes saved so far
	snapTooBig   bool   // a save would have grown snap past abi.MaxSnapshot
}

// Instantiate compiles (from the cache when warm) and instantiates a module, runs its
// initialisation (_initialize, perch_abi_version, perch_init) under the deadline and returns
// it ready for calls.
func (e *Engine) Instantiate(ctx context.Context, spec *Spec) (inst *Instance, err error) {
	if spec.Logger == nil {
		spec.Logger = slog.New(slog.DiscardHandler)
	}
	if spec.Now == nil {
		spec.Now = func() int64 { return time.Now().UnixNano() }
	}
	i := &Instance{spec: spec, stack: make([]uint64, 4), out: make([]byte, 0, 4096)}
	i.memory.limit = uint64(spec.MemoryPages) * 65536
	for _, k := range spec.Emits {
		for kind := abi.KindReading; kind <= abi.KindEvent; kind++ {
			if kind.String() == k {
				i.emits[kind] = true
			}
		}
	}
	i.stderr.max = 2048
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("wasm: %s: instantiate panicked: %v", spec.Name, r)
		}
		if err != nil && i.mod != nil {
			i.mod.Close(context.WithoutCancel(ctx))
		}
	}()
	cm, err := e.compile(ctx, spec.Binary, spec.Kind, spec.MemoryPages)
	if err != nil {
		return nil, fmt.Errorf("wasm: %s: %w", spec.Name, err)
	}
	starts := []string{}
	if _, ok := cm.ExportedFunctions()["_initialize"]; ok {
		starts = append(starts, "_initialize")
	}
	mc := wazero.NewModuleConfig().WithName(spec.Name).WithStartFunctions(starts...).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().WithRandSource(rand.Reader).
		WithStderr(&i.stderr).WithStdout(&i.stderr)
	// Start-up (the guest language's runtime, then perch_init) gets a longer deadline than a
	// call: it runs once, and a loaded machine must not turn a slow start into a fault.
	cctx, cancel := context.WithTimeout(context.WithValue(ctx, instanceKey{}, i), initDeadline(spec.Deadline))
	defer cancel()
	i.mod, err = e.rt.InstantiateModule(experimental.WithMemoryAllocator(cctx, &i.memory), cm, mc)
	if err != nil {
		return nil, i.fault("init", err)
	}
	i.mem = i.mod.ExportedMemory(abi.ExportMemory)
	i.buffer = i.mod.ExportedFunction(abi.ExportBuffer)
	i.proc = i.mod.ExportedFunction(abi.ExportProcess)
	i.poll = i.mod.ExportedFunction(abi.ExportPoll)
	i.snapFn = i.mod.ExportedFunction(abi.ExportSnapshot)
	i.restFn = i.mod.ExportedFunction(abi.ExportRestore)
	if err := i.mod.ExportedFunction(abi.ExportABIVersion).CallWithStack(cctx, i.stack); err != nil {
		return nil, i.fault("init", err)
	}
	if v := uint32(i.stack[0]); v != abi.Version {
		return nil, fmt.Errorf("wasm: %s: module speaks ABI %d, this runtime ABI %d", spec.Name, v, abi.Version)
	}
	i.reset()
	if err := i.mod.ExportedFunction(abi.ExportInit).CallWithStack(cctx, i.stack); err != nil {
		return nil, i.fault("init", err)
	}
	if errno := abi.Errno(uint32(i.stack[0])); errno != abi.OK {
		return nil, fmt.Errorf("wasm: %s: perch_init returned %v: %s", spec.Name, errno, i.stderr.String())
	}
	return i, nil
}

// initDeadline is the deadline of a module's start-up, given its per-call deadline.
func initDeadline(call time.Duration) time.Duration { return max(10*call, time.Second) }

type instanceKey struct{}

// callContext returns the context for one guest call: it carries the instance (for the host
// functions) and the module's deadline.
func (i *Instance) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithValue(ctx, instanceKey{}, i), i.spec.Deadline)
}

// limitedMemory backs one instance's linear memory and refuses to grow it past its limit
// (memory.grow then returns -1 to the guest).
type limitedMemory struct {
	buf     []byte
	limit   uint64 // bytes
	refused bool   // a growth was refused: the guest ran out of memory
}

func (m *limitedMemory) Allocate(capacity, max uint64) experimental.LinearMemory {
	m.buf = make([]byte, 0, min(capacity, m.limit))
	return m
}

func (m *limitedMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused = true
		return nil
	}
	if size > uint64(cap(m.buf)) {
		nb := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.limit))
		copy(nb, m.buf)
		m.buf = nb
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *limitedMemory) Free() { m.buf = nil }

// Name returns the instance name.
func (i *Instance) Name() string { return i.spec.Name }

// Close closes the instance. It is safe to call more than once.
func (i *Instance) Close(ctx context.Context) error {
	return i.mod.Close(ctx)
}

// MemoryBytes returns the guest's current linear memory size in bytes.
func (i *Instance) MemoryBytes() uint32 { return i.mem.Size() }

func (i *Instance) reset() {
	i.out = i.out[:0]
	i.emitted, i.logged, i.reason = 0, 0, ""
}

// Process hands a batch of encoded records to the guest's perch_process and returns the records
// it emitted, with sources filled in. The result is valid until the next call. A non-nil error
// is either a *Fault (the instance is closed; make a new one) or an *ErrnoError (the guest
// reported an error; the instance is fine and the records it emitted are returned).
func (i *Instance) Process(ctx context.Context, in []byte) (out []byte, err error) {
	defer i.guard(&err)
	cctx, cancel := i.callContext(ctx)
	defer cancel()
	i.reset()
	if err := i.writeIn(ctx, cctx, "a batch", in); err != nil {
		return nil, err
	}
	if err := i.proc.CallWithStack(cctx, i.stack); err != nil {
		return nil, i.fault("perch_process", err)
	}
	return i.out, i.errno("perch_process")
}

// writeIn writes data (what, for messages) into the buffer the guest's perch_buffer hands out
// and leaves its (ptr, len) in i.stack[0:2] for the export that takes it. A buffer outside
// memory closes the guest (bad_pointer).
func (i *Instance) writeIn(ctx, cctx context.Context, what string, data []byte) error {
	i.stack[0] = uint64(len(data))
	if err := i.buffer.CallWithStack(cctx, i.stack); err != nil {
		return i.fault("perch_buffer", err)
	}
	ptr := uint32(i.stack[0])
	if ptr == 0 && len(data) > 0 || !i.mem.Write(ptr, data) {
		return i.closeWith(ctx, "perch_buffer", abi.ExitBadPointer,
			fmt.Sprintf("perch_buffer(%d) for %s returned %#x, outside memory of %d bytes", len(data), what, ptr, i.mem.Size()))
	}
	i.stack[0], i.stack[1] = uint64(ptr), uint64(len(data))
	return nil
}

// ErrNoRestore is returned (wrapped) by [Instance.Restore] for a module that does not export
// perch_restore: it cannot take a snapshot and starts fresh.
var ErrNoRestore = errors.New("wasm: the module does not export perch_restore")

// ErrSnapshotTooBig is returned (wrapped) by [Instance.Snapshot] when the module tried to save
// more than [abi.MaxSnapshot] bytes. Nothing is handed over.
var ErrSnapshotTooBig = errors.New("wasm: snapshot too big")

// HasSnapshot reports whether the module exports perch_snapshot.
func (i *Instance) HasSnapshot() bool { return i.snapFn != nil }

// HasRestore reports whether the module exports perch_restore.
func (i *Instance) HasRestore() bool { return i.restFn != nil }

// Snapshot calls the guest's perch_snapshot, under the module's deadline, and returns the bytes
// it handed over with perch:io/v1 save (a new slice the caller owns, at most [abi.MaxSnapshot]
// bytes). It is the old instance's half of a hot swap's state handoff: call it between two
// calls, then close the instance. A module without perch_snapshot, or one that saved nothing,
// gives nil and no error. What the guest emits during the call is dropped.
//
// A non-nil error means nothing is handed over: a *Fault (the guest trapped, overran its
// deadline or passed a bad pointer to save; the instance is closed), an *ErrnoError (the guest
// declined; the instance is fine), or an error wrapping [ErrSnapshotTooBig].
func (i *Instance) Snapshot(ctx context.Context) (snap []byte, err error) {
	if i.snapFn == nil {
		return nil, nil
	}
	defer i.guard(&err)
	cctx, cancel := i.callContext(ctx)
	defer cancel()
	i.reset()
	i.snap, i.snapTooBig, i.snapshotting = nil, false, true
	defer func() { i.snap, i.snapTooBig, i.snapshotting = nil, false, false }()
	if err := i.snapFn.CallWithStack(cctx, i.stack); err != nil {
		return nil, i.fault(abi.ExportSnapshot, err)
	}
	i.reset()
	if i.snapTooBig {
		return nil, fmt.Errorf("module %s: %s: %w: it saved more than %d bytes", i.spec.Name, abi.ExportSnapshot, ErrSnapshotTooBig, abi.MaxSnapshot)
	}
	if err := i.errno(abi.ExportSnapshot); err != nil {
		return nil, err
	}
	return i.snap, nil
}

// Restore hands a snapshot taken by [Instance.Snapshot] of the module's previous binary to this
// instance: it writes snap into the buffer perch_buffer hands out and calls perch_restore(ptr,
// len) under the module's deadline. It is the new instance's half of a hot swap's state
// handoff: call it after Instantiate and before the first call. What the guest emits during the
// call is dropped.
//
// Errors: one wrapping [ErrNoRestore] (the module does not export perch_restore; nothing was
// called), an *ErrnoError (the guest refused the snapshot, for example one of a format it does
// not know) or a *Fault (the instance is closed). After any error other than ErrNoRestore the
// caller should discard the instance and start a fresh one, so that a half-applied snapshot
// cannot linger.
func (i *Instance) Restore(ctx context.Context, snap []byte) (err error) {
	if i.restFn == nil {
		return fmt.Errorf("module %s: %w", i.spec.Name, ErrNoRestore)
	}
	defer i.guard(&err)
	cctx, cancel := i.callContext(ctx)
	defer cancel()
	i.reset()
	if err := i.writeIn(ctx, cctx, "a snapshot for perch_restore", snap); err != nil {
		return err
	}
	if err := i.restFn.CallWithStack(cctx, i.stack); err != nil {
		return i.fault(abi.ExportRestore, err)
	}
	err = i.errno(abi.ExportRestore)
	i.reset()
	return err
}

// Poll calls the driver's perch_poll for up to max records and returns what it emitted, valid
// until the next call. Errors are as for [Instance.Process].
func (i *Instance) Poll(ctx context.Context, max int) (out []byte, err error) {
	defer i.guard(&err)
	cctx, cancel := i.callContext(ctx)
	defer cancel()
	i.reset()
	i.stack[0] = uint64(max)
	if err := i.poll.CallWithStack(cctx, i.stack); err != nil {
		return nil, i.fault("perch_poll", err)
	}
	return i.out, i.errno("perch_poll")
}

func (i *Instance) errno(fn string) error {
	if e := abi.Errno(uint32(i.stack[0])); e != abi.OK {
		return &ErrnoError{Module: i.spec.Name, Func: fn, Errno: e, Detail: i.stderr.Take()}
	}
	return nil
}

// guard turns a panic inside wazero (odd modules have caused some) into a fault.
func (i *Instance) guard(err *error) {
	if r := recover(); r != nil {
		i.mod.Close(context.Background())
		*err = &Fault{Module: i.spec.Name, Reason: ReasonTrap, Func: "call", Detail: fmt.Sprintf("engine panic: %v", r)}
	}
}

// closeWith closes the guest from the host side with one of abi's Exit codes.
func (i *Instance) closeWith(ctx context.Context, fn string, code uint32, detail string) error {
	i.reason = detail
	_ = i.mod.CloseWithExitCode(ctx, code)
	return i.fault(fn, sys.NewExitError(code))
}

// ErrnoError is a guest export that returned a non-zero errno: the guest reported an error.
type ErrnoError struct {
	Module, Func string
	Errno        abi.Errno
	Detail       string // what the guest wrote to stderr, if anything
}

func (e *ErrnoError) Error() string {
	s := fmt.Sprintf("module %s: %s returned %v", e.Module, e.Func, e.Errno)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Fault reasons.
const (
	ReasonTrap       = "trap"        // the guest trapped or exited (panic, unreachable, bad access)
	ReasonDeadline   = "deadline"    // a call overran its deadline and was stopped
	ReasonMemory     = "memory"      // the guest ran out of its memory limit
	ReasonBadPointer = "bad_pointer" // a pointer and length outside the guest's memory
	ReasonEmitQuota  = "emit_quota"  // emitted more than its quota in one call
	ReasonLogQuota   = "log_quota"   // logged more than its quota in one call
	ReasonBadRecord  = "bad_record"  // emitted records that do not decode or are not declared
	ReasonCanceled   = "canceled"    // the caller's context was canceled (shutdown): not the guest's fault
)

// Fault is a guest that misbehaved and was closed. Reason is one of the Reason constants.
type Fault struct {
	Module string
	Func   string // the export being called
	Reason string
	Detail string // the host's explanation or the guest's last stderr output
	Err    error  // the underlying engine error
}

func (f *Fault) Error() string {
	s := fmt.Sprintf("module %s: %s: %s", f.Module, f.Func, f.Reason)
	if f.Detail != "" {
		s += ": " + f.Detail
	}
	return s
}

func (f *Fault) Unwrap() error { return f.Err }

func (i *Instance) fault(fn string, err error) error {
	f := &Fault{Module: i.spec.Name, Func: fn, Reason: ReasonTrap, Err: err, Detail: i.reason}
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			f.Reason = ReasonDeadline
			f.Detail = fmt.Sprintf("call overran its deadline of %v", i.spec.Deadline)
			if fn == "init" {
				f.Detail = fmt.Sprintf("start-up overran its deadline of %v", initDeadline(i.spec.Deadline))
			}
		case sys.ExitCodeContextCanceled:
			f.Reason = ReasonCanceled
		case abi.ExitBadPointer:
			f.Reason = ReasonBadPointer
		case abi.ExitEmitQuota:
			f.Reason = ReasonEmitQuota
		case abi.ExitLogQuota:
			f.Reason = ReasonLogQuota
		case abi.ExitBadRecord:
			f.Reason = ReasonBadRecord
		}
	}
	if f.Reason == ReasonTrap {
		if f.Detail == "" {
			f.Detail = err.Error()
		}
		if s := i.stderr.Take(); s != "" {
			f.Detail += ": " + s
		}
		// A guest that was refused memory and then trapped or exited ran out of memory.
		if i.memory.refused {
			f.Reason = ReasonMemory
			f.Detail = fmt.Sprintf("memory limit of %d pages reached: %s", i.spec.MemoryPages, f.Detail)
		}
	}
	if i.mod != nil {
		_ = i.mod.Close(context.Background())
	}
	return f
}

// tailBuffer keeps the last max bytes written to it: the guest's stderr, for fault reports.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// Take returns what was written, trimmed, and empties the buffer.
func (t *tailBuffer) Take() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.buf))
	t.buf = t.buf[:0]
	return s
}

func (t *tailBuffer) String() string { return t.Take() }
