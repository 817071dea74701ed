package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

var (
	handoffN    int // instances started, for unique names
	handoffOnce sync.Once
	handoffBin  []byte
	handoffErr  error
)

// buildHandoffGuest compiles the test guest testdata/handoff/handoff.c (C, against
// sdk/c/perch.h) with the flags `make modules` uses, once per test binary.
func buildHandoffGuest(t testing.TB) []byte {
	t.Helper()
	handoffOnce.Do(func() {
		clang, err := exec.LookPath("clang")
		if err != nil {
			handoffErr = err
			return
		}
		dir, err := os.MkdirTemp("", "handoff-")
		if err != nil {
			handoffErr = err
			return
		}
		out := filepath.Join(dir, "handoff.wasm")
		cmd := exec.Command(clang, "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-mbulk-memory", "-std=c11",
			"-Wall", "-Wextra", "-Werror", "-I../../../sdk/c", "-Wl,--strip-all", "-o", out, "testdata/handoff/handoff.c")
		if b, err := cmd.CombinedOutput(); err != nil {
			handoffErr = errors.New(err.Error() + "\n" + string(b))
			return
		}
		handoffBin, handoffErr = os.ReadFile(out)
	})
	if handoffErr != nil {
		t.Fatalf("building the handoff guest (clang is needed: run `make deps`): %v", handoffErr)
	}
	return handoffBin
}

// handoffInstance starts the handoff guest with the config cfg (JSON) under a deadline.
func handoffInstance(t testing.TB, e *Engine, cfg string, deadline time.Duration) *Instance {
	t.Helper()
	handoffN++
	name := "h"
	if handoffN > 1 {
		name = fmt.Sprintf("h%d", handoffN)
	}
	spec := &Spec{Name: name, Kind: "filter", Binary: buildHandoffGuest(t), MemoryPages: 64, Deadline: deadline,
		EmitRecords: 4096, EmitBytes: 1 << 20, LogBytes: 16 << 10, Emits: []string{"reading"}, Config: []byte(cfg)}
	inst, err := e.Instantiate(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	return inst
}

// feed hands the instance n readings and returns the count it reports (report mode) or -1.
func feed(t testing.TB, i *Instance, n int) float64 {
	t.Helper()
	var b []byte
	for k := range n {
		b = abi.Append(b, abi.KindReading, int64(k+1), "env", "environment", []abi.Field{{Name: "v", Value: float64(k)}}, nil)
	}
	out, err := i.Process(context.Background(), b)
	if err != nil {
		t.Fatalf("process: %v", err)
	}
	it := abi.Iter{Buf: out}
	if it.Next() {
		if v, ok := it.Rec.Field("n"); ok {
			return v
		}
	}
	return -1
}

func newTestEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine("", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// TestHandoff: a snapshot taken from one instance and restored into a fresh one carries the
// state over, whether saved in one piece or in several.
func TestHandoff(t *testing.T) {
	e := newTestEngine(t)
	for _, mode := range []string{"ok", "chunks"} {
		old := handoffInstance(t, e, `{"report": true, "snapshot": "`+mode+`"}`, 2*time.Second)
		feed(t, old, 5)
		if got := feed(t, old, 3); got != 8 {
			t.Fatalf("%s: count %v before the swap, want 8", mode, got)
		}
		snap, err := old.Snapshot(context.Background())
		if err != nil {
			t.Fatalf("%s: snapshot: %v", mode, err)
		}
		if len(snap) != 12 || string(snap[:4]) != "HOF1" || binary.LittleEndian.Uint64(snap[4:]) != 8 {
			t.Fatalf("%s: snapshot %q", mode, snap)
		}
		// The old instance still works after a snapshot (a swap that is then refused goes on).
		if got := feed(t, old, 1); got != 9 {
			t.Fatalf("%s: count %v after the snapshot, want 9", mode, got)
		}
		fresh := handoffInstance(t, e, `{"report": true}`, 2*time.Second)
		if !fresh.HasRestore() || !fresh.HasSnapshot() {
			t.Fatal("the guest's exports are not seen")
		}
		if err := fresh.Restore(context.Background(), snap); err != nil {
			t.Fatalf("%s: restore: %v", mode, err)
		}
		if got := feed(t, fresh, 2); got != 10 {
			t.Fatalf("%s: count %v after the restore, want 8+2", mode, got)
		}
	}
}

// TestHandoffNothingSaved: a module that saves nothing hands nothing over, without an error.
func TestHandoffNothingSaved(t *testing.T) {
	e := newTestEngine(t)
	i := handoffInstance(t, e, `{"snapshot": "none"}`, 2*time.Second)
	snap, err := i.Snapshot(context.Background())
	if err != nil || snap != nil {
		t.Fatalf("snapshot %q, %v; want nothing", snap, err)
	}
}

// TestHandoffFailures: every way a snapshot or a restore can go wrong is an error that names
// the module and the call, and never hangs or panics.
func TestHandoffFailures(t *testing.T) {
	e := newTestEngine(t)
	good := func() []byte {
		i := handoffInstance(t, e, `{}`, 2*time.Second)
		feed(t, i, 3)
		s, err := i.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	for _, tc := range []struct {
		name, cfg string
		restore   []byte // nil: test the snapshot
		reason    string // a Fault's reason, or "" for another error
		errno     abi.Errno
		is        error
		want      string // in the error
	}{
		{"snapshot errno", `{"snapshot": "errno"}`, nil, "", abi.EIO, nil, "perch_snapshot returned perch: EIO"},
		{"snapshot trap", `{"snapshot": "trap"}`, nil, ReasonTrap, 0, nil, "perch_snapshot: trap"},
		{"snapshot hang", `{"snapshot": "hang"}`, nil, ReasonDeadline, 0, nil, "perch_snapshot: deadline"},
		{"snapshot bad pointer", `{"snapshot": "bad_pointer"}`, nil, ReasonBadPointer, 0, nil,
			"perch_snapshot: bad_pointer: save: [0xfffffff0, +64) is outside memory"},
		{"snapshot too big", `{"snapshot": "too_big"}`, nil, "", 0, ErrSnapshotTooBig,
			"perch_snapshot: wasm: snapshot too big: it saved more than 1048576 bytes"},
		{"restore refuses", `{"restore": "refuse"}`, good, "", abi.EINVAL, nil, "perch_restore returned perch: EINVAL"},
		{"restore of another format", `{"magic": "XXXX"}`, good, "", abi.EINVAL, nil, "perch_restore returned perch: EINVAL"},
		{"restore of garbage", `{}`, []byte("garbage"), "", abi.EINVAL, nil, "perch_restore returned perch: EINVAL"},
		{"restore trap", `{"restore": "trap"}`, good, ReasonTrap, 0, nil, "perch_restore: trap"},
		{"restore hang", `{"restore": "hang"}`, good, ReasonDeadline, 0, nil, "perch_restore: deadline"},
		{"restore bad pointer", `{"restore": "bad_pointer"}`, good, ReasonBadPointer, 0, nil,
			"perch_restore: bad_pointer: emit: [0xfffffff0, +64) is outside memory"},
		{"restore into a buffer outside memory", `{"bad_buffer": true}`, good, ReasonBadPointer, 0, nil,
			"perch_buffer: bad_pointer: perch_buffer(12) for a snapshot for perch_restore returned 0xfffffff0, outside memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deadline := 2 * time.Second // generous: a loaded machine must not turn a call into a fault
			if tc.reason == ReasonDeadline {
				deadline = 300 * time.Millisecond
			}
			i := handoffInstance(t, e, tc.cfg, deadline)
			var err error
			var snap []byte
			if tc.restore == nil {
				snap, err = i.Snapshot(context.Background())
				if snap != nil {
					t.Errorf("a failed snapshot handed over %d bytes", len(snap))
				}
			} else {
				err = i.Restore(context.Background(), tc.restore)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "module "+i.Name()+": "+tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			var f *Fault
			var ee *ErrnoError
			switch {
			case tc.reason != "":
				if !errors.As(err, &f) || f.Reason != tc.reason {
					t.Errorf("error %v, want a fault %s", err, tc.reason)
				}
			case tc.errno != 0:
				if !errors.As(err, &ee) || ee.Errno != tc.errno {
					t.Errorf("error %v, want errno %v", err, tc.errno)
				}
			case tc.is != nil:
				if !errors.Is(err, tc.is) {
					t.Errorf("error %v, want %v", err, tc.is)
				}
			}
		})
	}
}

// TestHandoffSaveOutsideSnapshot: perch:io/v1 save is EPERM outside perch_snapshot, and a
// module without perch_restore is told so.
func TestHandoffSaveOutsideSnapshot(t *testing.T) {
	e := newTestEngine(t)
	i := handoffInstance(t, e, `{"save_in_process": true}`, 2*time.Second)
	_, err := i.Process(context.Background(), nil)
	var ee *ErrnoError
	if !errors.As(err, &ee) || ee.Errno != abi.EPERM {
		t.Fatalf("save during perch_process: %v, want EPERM", err)
	}
	none := &Instance{spec: &Spec{Name: "plain"}}
	if err := none.Restore(context.Background(), []byte("x")); !errors.Is(err, ErrNoRestore) || !strings.Contains(err.Error(), "module plain") {
		t.Fatalf("restore without perch_restore: %v", err)
	}
	if snap, err := none.Snapshot(context.Background()); snap != nil || err != nil {
		t.Fatalf("snapshot without perch_snapshot: %q, %v", snap, err)
	}
}
