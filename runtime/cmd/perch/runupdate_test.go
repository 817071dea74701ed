package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
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
//
// With tls, the box reaches the registry through an HTTPS front with a certificate of a CA of
// the test's own, which update.tls.ca_file names; without that CA the poll fails.
func TestIntegrationRunUpdates(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, TUF keys, a runtime, Wasm modules")
	}
	t.Run("http", func(t *testing.T) { testRunUpdates(t, false) })
	t.Run("https", func(t *testing.T) { testRunUpdates(t, true) })
}

func testRunUpdates(t *testing.T, https bool) {
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
	registry, tlsSection := op.url, ""
	if https {
		backend, err := url.Parse(op.url)
		if err != nil {
			t.Fatal(err)
		}
		front := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(backend))
		t.Cleanup(front.Close)
		ca := filepath.Join(dir, "registry-ca.pem")
		if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		registry, tlsSection = front.URL, "  tls: {ca_file: registry-ca.pem}\n"
	}
	writeConfig := func(tls string) {
		t.Helper()
		text := updatingBoxConfig(t, dir) + fmt.Sprintf(`update:
  registry: %s
  root: %q
  group: pumps
  health_window: 500ms
`, registry, filepath.Join(op.tuf, "1.root.json")) + tls
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runFor := func(d string) {
		t.Helper()
		if _, stderr, err := call(ctx, "run", "--config", cfg, "--quiet", "--for", d, "--api-listen", freeAddr(t)); err != nil {
			t.Fatalf("run: %v\n%s", err, stderr)
		}
	}
	if https {
		// Without the registry's CA the box trusts nothing it serves: the poll fails.
		writeConfig("")
		runFor("2s")
		out, _, err := call(ctx, "db", "--db", filepath.Join(dir, "perch.db"), "events")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "update.poll_failed") || !strings.Contains(out, "certificate") {
			t.Fatalf("without update.tls: no failed poll naming the certificate in the events:\n%s", out)
		}
	}
	writeConfig(tlsSection)
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
