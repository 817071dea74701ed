package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/wasm"
)

// ModuleOptions describe one standalone module instance, for tests and tools (sdk/perchtest).
// Zero limits take the config package's defaults.
type ModuleOptions struct {
	Name     string // instance name; default the manifest's name
	Binary   []byte // the .wasm
	Manifest *config.Manifest
	Grants   config.Grants
	Config   []byte // module config as JSON; nil: {}
	Limits   config.Limits
	// MemoryPages is the memory limit in 64 KiB pages; Deadline bounds every call.
	MemoryPages uint32
	Deadline    time.Duration
	HAL         hal.Provider    // nil: HAL calls get ENODEV
	State       wasm.StateStore // nil: state calls get ENOSYS
	Logger      *slog.Logger
	Now         func() int64 // clock in ns; nil: the wall clock
	CacheDir    string       // compilation cache; empty: in memory
}

// Module is one running module outside a pipeline. It is used by one goroutine at a time.
type Module struct {
	engine *wasm.Engine
	inst   *wasm.Instance
}

// LoadModule checks the grants against the manifest, compiles and instantiates the module and
// runs its init.
func LoadModule(ctx context.Context, o ModuleOptions) (*Module, error) {
	if o.Manifest == nil {
		return nil, fmt.Errorf("runtime: LoadModule: no manifest")
	}
	m := config.Module{
		Name: o.Name, Grants: o.Grants, Limits: o.Limits, MemoryPages: o.MemoryPages,
		Deadline: config.Duration(o.Deadline), Manifest: *o.Manifest, ConfigJSON: o.Config,
	}
	if m.Name == "" {
		m.Name = o.Manifest.Name
	}
	if ge := config.CheckGrants(&o.Grants, &o.Manifest.Needs); len(ge) > 0 {
		return nil, fmt.Errorf("runtime: grants%s: %s", ge[0].Field, ge[0].Msg)
	}
	if m.ConfigJSON == nil {
		m.ConfigJSON = []byte("{}")
	}
	if m.MemoryPages == 0 {
		m.MemoryPages = config.DefaultMemoryPages
	}
	if m.Deadline == 0 {
		m.Deadline = config.Duration(config.DefaultDeadline)
	}
	if m.Limits.EmitRecords == 0 {
		m.Limits.EmitRecords = config.DefaultEmitRecords
	}
	if m.Limits.EmitBytes == 0 {
		m.Limits.EmitBytes = config.DefaultEmitBytes
	}
	if m.Limits.LogBytes == 0 {
		m.Limits.LogBytes = config.DefaultLogBytes
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e, err := wasm.NewEngine(o.CacheDir, false)
	if err != nil {
		return nil, err
	}
	spec := specOf(&m, o.Binary, o.HAL, o.State, log)
	spec.Now = o.Now
	inst, err := e.Instantiate(ctx, &spec)
	if err != nil {
		e.Close(ctx)
		return nil, err
	}
	return &Module{engine: e, inst: inst}, nil
}

// Process hands a batch of encoded records to the module and returns what it emitted, valid
// until the next call. See the Fault and ErrnoError types for the errors.
func (m *Module) Process(ctx context.Context, in []byte) ([]byte, error) {
	return m.inst.Process(ctx, in)
}

// Poll asks a driver for up to max records and returns what it emitted, valid until the next
// call.
func (m *Module) Poll(ctx context.Context, max int) ([]byte, error) {
	return m.inst.Poll(ctx, max)
}

// Snapshot calls the module's perch_snapshot and returns the state it handed over (nil when it
// has no perch_snapshot or saved nothing): the old binary's half of a hot swap's state handoff
// (sdk/ABI.md, State handoff). Errors are as for [Module.Process], or wrap
// [ErrSnapshotTooBig].
func (m *Module) Snapshot(ctx context.Context) ([]byte, error) {
	return m.inst.Snapshot(ctx)
}

// Restore hands the module a snapshot through perch_buffer and perch_restore: the new binary's
// half of the handoff. Errors: one wrapping [ErrNoRestore] (the module has no perch_restore),
// an [ErrnoError] (it refused the snapshot) or a [Fault]. After an error other than
// ErrNoRestore, a pipeline discards the instance and starts a fresh one.
func (m *Module) Restore(ctx context.Context, snap []byte) error {
	return m.inst.Restore(ctx, snap)
}

// MemoryBytes returns the size of the module's linear memory.
func (m *Module) MemoryBytes() uint32 { return m.inst.MemoryBytes() }

// Close closes the module.
func (m *Module) Close(ctx context.Context) error {
	err := m.inst.Close(ctx)
	m.engine.Close(ctx)
	return err
}

// Fault is a module that misbehaved and was closed; see [Fault.Reason].
type Fault = wasm.Fault

// ErrnoError is a module export that returned a non-zero errno.
type ErrnoError = wasm.ErrnoError

// Fault reasons, as recorded in module.fault events.
const (
	ReasonTrap       = wasm.ReasonTrap
	ReasonDeadline   = wasm.ReasonDeadline
	ReasonMemory     = wasm.ReasonMemory
	ReasonBadPointer = wasm.ReasonBadPointer
	ReasonEmitQuota  = wasm.ReasonEmitQuota
	ReasonLogQuota   = wasm.ReasonLogQuota
	ReasonBadRecord  = wasm.ReasonBadRecord
)

// ErrNoRestore is wrapped by [Module.Restore] for a module without perch_restore.
var ErrNoRestore = wasm.ErrNoRestore

// ErrSnapshotTooBig is wrapped by [Module.Snapshot] for a module that saved more than
// abi.MaxSnapshot bytes.
var ErrSnapshotTooBig = wasm.ErrSnapshotTooBig

// StateStore keeps modules' key/value state.
type StateStore = wasm.StateStore

// Validate checks what [config.Load] cannot: that every module binary compiles and has the
// exports of its kind. It uses an in-memory compilation cache and runs nothing.
func Validate(ctx context.Context, cfg *config.Config) error {
	e, err := wasm.NewEngine("", false)
	if err != nil {
		return err
	}
	defer e.Close(ctx)
	var errs []error
	for _, m := range cfg.Modules {
		bin, err := os.ReadFile(m.Wasm)
		if err == nil {
			err = e.Compile(ctx, bin, m.Manifest.Kind, m.MemoryPages)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: module %s (%s): %w", cfg.File, m.Name, m.Wasm, err))
		}
	}
	return errors.Join(errs...)
}
