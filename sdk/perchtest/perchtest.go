// Package perchtest runs a Perch module inside plain `go test`: it loads the module's .wasm into
// the real runtime engine (wazero, the same host functions, grants and limits as in a
// pipeline), feeds it records, and decodes what it emits.
//
// # Usage
//
//	func TestWindow(t *testing.T) {
//		m := perchtest.Load(t, perchtest.Options{
//			Wasm:   perchtest.Build(t, "./wasm"), // or a path built by make modules
//			Config: map[string]any{"window": "10s"},
//		})
//		out := m.Process(t, perchtest.Reading(0, "env", "environment", "temperature_c", 21.5))
//		...
//	}
//
// A Module is used by one goroutine at a time.
//
// # Module tests
//
// For the first-party modules' tests (harness.go): [Logs] collects a module's log
// ([LoadLogged]), [Clock] is one settable clock for a simulated device and the module, [Errno]
// reads a call's errno; and a differential harness holds a C module to the Go package that is its
// reference logic: [Diff] feeds both the same batches and compares the records ([SameRecords],
// floating-point values within a relative tolerance) and the failures, [GoConfig] decodes a
// config as the Go SDK did, and [SameInit] compares how both take a config.
//
// # Hot swap state handoff
//
// [Module.Snapshot] and [Module.Restore] call a module's perch_snapshot and perch_restore;
// [Module.Handoff] hands a module's state to a fresh instance as a pipeline's hot swap does, and
// [Diff.Swap] does so to the C module of a pair while its reference runs on, so that a test shows
// the module carries on exactly as without the swap.
package perchtest

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

// Options describe the module under test.
type Options struct {
	// Wasm is the path of the module binary. Its manifest is the file beside it
	// (NAME.manifest.yaml) unless Manifest is set.
	Wasm     string
	Manifest string // path of the manifest; default beside Wasm, else manifest.yaml in the package
	Config   any    // the module's config section; marshalled to JSON unless a RawConfig
	Grants   config.Grants
	HAL      hal.Provider       // devices the module can reach (through its grants); e.g. hal/sim
	State    runtime.StateStore // nil: an in-memory store (used only if state is granted)
	Limits   config.Limits
	Deadline time.Duration // per call; zero: DefaultDeadline
	// MemoryPages is the memory limit in 64 KiB pages (default as in a pipeline).
	MemoryPages uint32
	Now         func() int64 // the module's clock in ns; nil: the wall clock
	Logger      *slog.Logger // where the module logs; nil: as in runtime.ModuleOptions
}

// DefaultDeadline is the deadline of every call when Options.Deadline is zero: longer than a
// pipeline's default (100 ms), so that a test on a busy machine does not fail on a descheduled
// call. Tests of deadlines set their own.
const DefaultDeadline = 2 * time.Second

// Module is a loaded module under test.
type Module struct {
	m      *runtime.Module
	closed bool
}

// Load loads the module, failing the test on any error. It is closed when the test ends.
func Load(t testing.TB, o Options) *Module {
	t.Helper()
	m, err := Open(o)
	if err != nil {
		t.Fatalf("perchtest: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Open loads the module and returns errors instead of failing a test (to test load failures).
func Open(o Options) (*Module, error) {
	bin, err := os.ReadFile(o.Wasm)
	if err != nil {
		return nil, err
	}
	mpath := o.Manifest
	if mpath == "" {
		mpath = config.ManifestPath(o.Wasm)
	}
	mf, err := config.LoadManifest(mpath)
	if err != nil {
		return nil, err
	}
	cfg := []byte("{}")
	if raw, ok := o.Config.(RawConfig); ok {
		cfg = []byte(raw)
	} else if o.Config != nil {
		if cfg, err = json.Marshal(o.Config); err != nil {
			return nil, err
		}
	}
	st := o.State
	if st == nil {
		st = &MemState{}
	}
	m, err := runtime.LoadModule(context.Background(), runtime.ModuleOptions{
		CacheDir: filepath.Join(os.TempDir(), "perchtest-cache"), Binary: bin, Manifest: mf, Grants: o.Grants, Config: cfg, Limits: o.Limits,
		MemoryPages: o.MemoryPages, Deadline: cmp.Or(o.Deadline, DefaultDeadline), HAL: o.HAL, State: st, Now: o.Now, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Module{m: m}, nil
}

// Close closes the module. It is safe to call more than once.
func (m *Module) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	return m.m.Close(context.Background())
}

// Process feeds the records to the module in one batch and returns what it emitted. Errors
// (faults, errnos) fail the test; use [Module.TryProcess] to test them.
func (m *Module) Process(t testing.TB, in ...[]byte) []Record {
	t.Helper()
	out, err := m.TryProcess(in...)
	if err != nil {
		t.Fatalf("perchtest: process: %v", err)
	}
	return out
}

// TryProcess is Process returning the error: a *runtime.Fault or a *runtime.ErrnoError.
func (m *Module) TryProcess(in ...[]byte) ([]Record, error) {
	var batch []byte
	for _, r := range in {
		batch = append(batch, r...)
	}
	out, err := m.m.Process(context.Background(), batch)
	return Decode(out), err
}

// Poll asks a driver for up to max records.
func (m *Module) Poll(t testing.TB, max int) []Record {
	t.Helper()
	out, err := m.TryPoll(max)
	if err != nil {
		t.Fatalf("perchtest: poll: %v", err)
	}
	return out
}

// TryPoll is Poll returning the error.
func (m *Module) TryPoll(max int) ([]Record, error) {
	out, err := m.m.Poll(context.Background(), max)
	return Decode(out), err
}

// Record is a decoded record, for assertions.
type Record struct {
	Kind   abi.Kind
	TimeNS int64
	Source string
	Series string
	Fields map[string]float64
	Tags   map[string]string
}

// Decode decodes a batch into Records; it panics on a batch that does not decode (the runtime
// has validated what modules emit).
func Decode(batch []byte) []Record {
	var out []Record
	it := abi.Iter{Buf: batch}
	for it.Next() {
		r := &it.Rec
		rec := Record{Kind: r.Kind, TimeNS: r.TimeNS, Source: string(r.Source), Series: string(r.Series),
			Fields: map[string]float64{}, Tags: map[string]string{}}
		r.Fields(func(name []byte, v float64) { rec.Fields[string(name)] = v })
		r.Tags(func(k, v []byte) { rec.Tags[string(k)] = string(v) })
		out = append(out, rec)
	}
	if err := it.Err(); err != nil {
		panic(err)
	}
	return out
}

// Reading encodes one reading with alternating field names and values:
//
//	perchtest.Reading(t, "env", "environment", "temperature_c", 21.5, "humidity_pct", 40.0)
func Reading(timeNS int64, source, series string, fieldsAndValues ...any) []byte {
	return Encode(abi.KindReading, timeNS, source, series, fieldsAndValues...)
}

// Encode encodes one record of any kind; fieldsAndValues alternate a string name and a float64
// value (string values become tags).
func Encode(kind abi.Kind, timeNS int64, source, series string, fieldsAndValues ...any) []byte {
	var fields []abi.Field
	var tags []abi.Tag
	for i := 0; i+1 < len(fieldsAndValues); i += 2 {
		name, _ := fieldsAndValues[i].(string)
		switch v := fieldsAndValues[i+1].(type) {
		case float64:
			fields = append(fields, abi.Field{Name: name, Value: v})
		case int:
			fields = append(fields, abi.Field{Name: name, Value: float64(v)})
		case string:
			tags = append(tags, abi.Tag{Key: name, Value: v})
		}
	}
	return abi.Append(nil, kind, timeNS, source, series, fields, tags)
}

// MemState is an in-memory StateStore. It is safe for concurrent use.
type MemState struct {
	mu sync.Mutex
	m  map[string][]byte
}

// GetState implements runtime.StateStore.
func (s *MemState) GetState(_ context.Context, module, key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[module+"\x00"+key]
	return v, ok, nil
}

// SetState implements runtime.StateStore.
func (s *MemState) SetState(_ context.Context, module, key string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[module+"\x00"+key] = append([]byte(nil), v...)
	return nil
}

// DeleteState implements runtime.StateStore.
func (s *MemState) DeleteState(_ context.Context, module, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, module+"\x00"+key)
	return nil
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Build compiles the Go guest package at pkg (a folder with a wasip1 main, relative to the test's
// folder) with the standard toolchain (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared) and returns
// the path of the .wasm, with the package's manifest.yaml (the folder above a "wasm" folder, or
// the folder itself) copied beside it. Builds are cached for the test binary's lifetime.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	abs, err := filepath.Abs(pkg)
	if err != nil {
		t.Fatal(err)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[abs]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "perchtest-")
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(abs)
	if name == "wasm" {
		name = filepath.Base(filepath.Dir(abs))
	}
	out := filepath.Join(dir, name+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, ".")
	cmd.Dir = abs
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("perchtest: building %s: %v\n%s", pkg, err, b)
	}
	for _, m := range []string{filepath.Join(abs, "manifest.yaml"), filepath.Join(filepath.Dir(abs), "manifest.yaml")} {
		if b, err := os.ReadFile(m); err == nil {
			if err := os.WriteFile(config.ManifestPath(out), b, 0o644); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	built[abs] = out
	return out
}

// Built returns the path of a module built by `make modules` (build/modules/NAME.wasm at the
// repository root, found by walking up from the test's folder), failing the test with a hint
// when it is missing.
func Built(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "build", "modules", name+".wasm")
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("perchtest: %s is missing: run `make modules` first", p)
			}
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir || strings.HasSuffix(dir, string(filepath.Separator)) {
			t.Fatalf("perchtest: no go.mod above the test's folder")
		}
		dir = parent
	}
}

// Raw returns the underlying runtime module, for benchmarks that drive it without decoding.
func (m *Module) Raw() *runtime.Module { return m.m }
