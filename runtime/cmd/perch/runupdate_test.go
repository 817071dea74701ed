package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIntegrationRunUpdates: `perch run` with an update section polls the registry at start,
// takes the deployment the operator promoted with the CLI, swaps the module in, commits it
// after its health window, and `perch status` shows it; the next start runs the committed
// module (its version in the module.started event).
func TestIntegrationRunUpdates(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, TUF keys, a runtime, Wasm modules")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	op := startOperatorRegistry(t)
	wasm := moduleFiles(t, "scale", "0.7.0")
	if _, stderr, err := call(ctx, append([]string{"push", "module", wasm, "--target", "modules/f"}, op.flags()...)...); err != nil {
		t.Fatalf("push: %v\n%s", err, stderr)
	}
	if _, stderr, err := call(ctx, append([]string{"promote", "--deployment", "pumps-1", "--group", "pumps", "--stage", "100",
		"--module", "f=modules/f"}, op.flags()...)...); err != nil {
		t.Fatalf("promote: %v\n%s", err, stderr)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "perch.yaml")
	text := updatingBoxConfig(t, dir) + fmt.Sprintf(`update:
  registry: %s
  root: %q
  group: pumps
  health_window: 500ms
`, op.url, filepath.Join(op.tuf, "1.root.json"))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	runFor := func(d string) {
		t.Helper()
		if _, stderr, err := call(ctx, "run", "--config", cfg, "--quiet", "--for", d, "--api-listen", freeAddr(t)); err != nil {
			t.Fatalf("run: %v\n%s", err, stderr)
		}
	}
	runFor("4s")
	stdout, _, err := call(ctx, "status", "--db", filepath.Join(dir, "perch.db"), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatal(err)
	}
	var committed bool
	for _, u := range st.Updates {
		if u.Target == "modules/f" && u.Step == "committed" && u.Version == "0.7.0" {
			committed = true
		}
	}
	if !committed {
		t.Fatalf("status updates: %+v", st.Updates)
	}
	// A restart runs the committed module.
	runFor("1s")
	out, _, err := call(ctx, "db", "--db", filepath.Join(dir, "perch.db"), "events")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "started scale 0.7.0"); n != 1 {
		t.Errorf("'started scale 0.7.0' %d times in the events, want 1 (the restart):\n%s", n, out)
	}
}
