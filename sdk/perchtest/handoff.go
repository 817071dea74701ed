package perchtest

// Driving the hot swap state handoff (perch_snapshot, perch_restore; sdk/ABI.md, State handoff)
// from module tests: a module's state taken from one instance and handed to a fresh one, as a
// pipeline's swap does, so that a test can check that the module carries on exactly.

import (
	"context"
	"testing"
)

// Snapshot calls the module's perch_snapshot and returns what it handed over (nil when it has
// no perch_snapshot or saved nothing). Errors fail the test; use [Module.TrySnapshot] to test
// them.
func (m *Module) Snapshot(t testing.TB) []byte {
	t.Helper()
	snap, err := m.TrySnapshot()
	if err != nil {
		t.Fatalf("perchtest: snapshot: %v", err)
	}
	return snap
}

// TrySnapshot is Snapshot returning the error: a *runtime.Fault, a *runtime.ErrnoError, or one
// wrapping runtime.ErrSnapshotTooBig.
func (m *Module) TrySnapshot() ([]byte, error) { return m.m.Snapshot(context.Background()) }

// Restore hands the module a snapshot (perch_restore), failing the test on an error; use
// [Module.TryRestore] to test refusals.
func (m *Module) Restore(t testing.TB, snap []byte) {
	t.Helper()
	if err := m.TryRestore(snap); err != nil {
		t.Fatalf("perchtest: restore: %v", err)
	}
}

// TryRestore is Restore returning the error: one wrapping runtime.ErrNoRestore, a
// *runtime.ErrnoError (the module refused the snapshot) or a *runtime.Fault.
func (m *Module) TryRestore(snap []byte) error { return m.m.Restore(context.Background(), snap) }

// Handoff does what a pipeline's hot swap does to the module's state: it loads a fresh module
// from o (typically the same Options, or a newer binary's), snapshots m, restores the snapshot
// into the fresh module and closes m. It returns the fresh module (closed when the test ends)
// and the snapshot's size in bytes. Errors fail the test.
func (m *Module) Handoff(t testing.TB, o Options) (*Module, int) {
	t.Helper()
	next := Load(t, o)
	snap := m.Snapshot(t)
	if len(snap) > 0 {
		next.Restore(t, snap)
	}
	m.Close()
	return next, len(snap)
}

// Swap hot-swaps the C module of the pair as a pipeline does: it takes its snapshot
// (perch_snapshot), loads a fresh instance of the same built module with the same config,
// restores the snapshot into it (perch_restore) and uses it from then on. The reference runs on
// untouched, so that what the module emits after the swap is held to what it would have emitted
// without one. Swap returns the snapshot's size in bytes; any failure fails t.
func (d *Diff) Swap(t testing.TB) int {
	t.Helper()
	snap, err := d.C.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("swap: snapshot: %v\nlog:\n%s", err, d.Logs)
	}
	next, l := MustLoadBuilt(t, d.Source, d.cfg)
	if err := next.Restore(context.Background(), snap); err != nil {
		t.Fatalf("swap: restore of %d bytes: %v\nlog:\n%s", len(snap), err, l)
	}
	d.C, d.Logs = next, l // the old instance is closed when the test ends
	return len(snap)
}
