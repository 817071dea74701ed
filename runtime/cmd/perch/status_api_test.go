package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/api"
)

// TestIntegrationStatusAPI: perch status --api asks a running instance (the demo, with its
// token) and shows its modules, its model and that it runs; without the token it is refused.
func TestIntegrationStatusAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs the demo")
	}
	const token = "s3cret"
	cfg := demoConfig(t, t.TempDir(), token)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, stderr, err := call(ctx, "run", "--config", cfg, "--quiet", "--api-listen", addr)
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, stderr)
		}
		done <- err
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + addr
	var out string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		out, _, err = call(context.Background(), "status", "--api", base, "--token", token)
		if err == nil && strings.Contains(out, "running") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("perch status --api: %v\n%s", err, out)
		}
	}
	for _, want := range []string{"perch demo/sim-01: running", "env-window", "env-hot", "env-anomaly"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	js, _, err := call(context.Background(), "status", "--api", base, "--token", token, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var d api.StatusDoc
	if err := json.Unmarshal([]byte(js), &d); err != nil || !d.Ready || len(d.Modules) != 3 || len(d.Models) != 1 || !d.Models[0].Available {
		t.Errorf("status --json: %+v, %v", d, err)
	}
	if _, _, err := call(context.Background(), "status", "--api", base); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without the token: %v", err)
	}
}
