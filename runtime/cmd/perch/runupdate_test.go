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

	"github.com/perch-edge/perch/sdk/perchtest"
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
	text := fmt.Sprintf(`site: test
device: box-7
store: {path: %q}
engine: {cache_dir: %q}
devices:
  - {name: env0, backend: sim, type: bme280, bus: 1, address: 0x76}
modules:
  - name: env
    wasm: %q
    poll: 50ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: f
    wasm: %q
    inputs: [env]
    config: {factor: 1}
update:
  registry: %s
  root: %q
  group: pumps
  health_window: 500ms
`, filepath.Join(dir, "perch.db"), filepath.Join(shared, "cache"), perchtest.Built(t, "bme280"), perchtest.Built(t, "scale"),
		op.url, filepath.Join(op.tuf, "1.root.json"))
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
