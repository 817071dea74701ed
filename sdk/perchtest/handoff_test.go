package perchtest

import (
	"errors"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/sdk/abi"
)

// count feeds the counter guest n readings and returns the count it reports.
func count(t *testing.T, m *Module, n int) float64 {
	t.Helper()
	var in [][]byte
	for i := range n {
		in = append(in, Reading(int64(i+1), "env", "environment", "t", 1.0))
	}
	out := m.Process(t, in...)
	if len(out) != 1 {
		t.Fatalf("%d records out, want the count", len(out))
	}
	return out[0].Fields["n"]
}

// TestIntegrationHandoffGoGuest drives the state handoff of a module written with the Go SDK
// (testdata/counter, built from source) through the real engine: Handoff carries the count over;
// a module of another snapshot format refuses it with EINVAL and says why in its log.
func TestIntegrationHandoffGoGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go guest")
	}
	wasm := Build(t, "testdata/counter")
	m := Load(t, Options{Wasm: wasm})
	count(t, m, 3)
	if got := count(t, m, 4); got != 7 {
		t.Fatalf("count %v, want 7", got)
	}
	next, size := m.Handoff(t, Options{Wasm: wasm})
	if size != 12 {
		t.Errorf("handed over %d bytes, want 12", size)
	}
	if got := count(t, next, 1); got != 8 {
		t.Fatalf("count after the handoff %v, want 7+1", got)
	}

	snap := next.Snapshot(t)
	other, logs, err := LoadLogged(t, Options{Wasm: wasm, Config: map[string]any{"format": "CNT2"}})
	if err != nil {
		t.Fatal(err)
	}
	err = other.Restore(t.Context(), snap)
	var ee *runtime.ErrnoError
	if !errors.As(err, &ee) || ee.Errno != abi.EINVAL {
		t.Fatalf("restore of another format: %v, want EINVAL", err)
	}
	if !strings.Contains(logs.String(), "WARN perch_restore: refused: not a CNT2 snapshot (12 bytes)") {
		t.Errorf("log %q", logs)
	}
}
