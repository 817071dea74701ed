package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/update/boot"
)

// TestIntegrationRunSelfUpdate runs the perch binary's self-update as a box does: perch-boot
// (built from source) execs the slot's perch, started again by a loop that plays systemd's
// Restart=always. Slot A holds perch built as 0.9.1; the operator pushes perch built as 0.9.2
// as a runtime target and promotes it; 0.9.1 stages it in slot B and exits with ExitRestart;
// perch-boot boots B on trial; 0.9.2 watches its health window and commits.
func TestIntegrationRunSelfUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: builds perch twice and perch-boot, a registry, processes")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := t.TempDir()
	build := func(out, pkg, version string) string {
		t.Helper()
		path := filepath.Join(bin, out)
		args := []string{"build", "-o", path}
		if version != "" {
			args = append(args, "-ldflags", "-X main.Version="+version)
		}
		t0 := time.Now()
		if b, err := exec.CommandContext(ctx, "go", append(args, pkg)...).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", out, err, b)
		}
		t.Logf("built %s in %v", out, time.Since(t0).Round(time.Millisecond))
		return path
	}
	old := build("perch-0.9.1", ".", "0.9.1")
	next := build("perch-0.9.2", ".", "0.9.2")
	perchBoot := build("perch-boot", "../../update/boot/cmd/perch-boot", "")

	slots := t.TempDir()
	data, err := os.ReadFile(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(slots, "A"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(slots, "A", "perch"), data, 0o755); err != nil {
		t.Fatal(err)
	}

	op := startOperatorRegistry(t)
	if _, stderr, err := call(ctx, append([]string{"push", "runtime", next, "--target", "runtime/perch", "--version", "0.9.2",
		"--hardware", goruntime.GOARCH}, op.flags()...)...); err != nil {
		t.Fatalf("push: %v\n%s", err, stderr)
	}
	if _, stderr, err := call(ctx, append([]string{"promote", "--deployment", "perch-0.9.2", "--group", "pumps", "--stage", "100",
		"--runtime", "runtime/perch"}, op.flags()...)...); err != nil {
		t.Fatalf("promote: %v\n%s", err, stderr)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "perch.yaml")
	text := updatingBoxConfig(t, dir) + fmt.Sprintf(`update:
  registry: %s
  root: %q
  group: pumps
  health_window: 500ms
  runtime: {slots: %q}
`, op.url, filepath.Join(op.tuf, "1.root.json"), slots)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	type start struct {
		code   int
		stdout string
	}
	// systemd: start perch-boot again whenever it exits, until a perch has run to its end.
	runUntilClean := func() []start {
		var starts []start
		for len(starts) < 8 {
			cmd := exec.CommandContext(ctx, perchBoot, "-dir", slots, "--", "run", "--config", cfg, "--quiet", "--for", "6s",
				"--api-listen", freeAddr(t))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			t0 := time.Now()
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			t.Logf("start %d: exit %d after %v:\n%s\n%s", len(starts)+1, code, time.Since(t0).Round(time.Millisecond),
				strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
			starts = append(starts, start{code, stdout.String()})
			if code == 0 {
				break
			}
		}
		return starts
	}
	starts := runUntilClean()
	if len(starts) != 2 {
		t.Fatalf("%d starts, want 2 (0.9.1 stages and restarts, 0.9.2 commits and runs)", len(starts))
	}
	if s := starts[0]; s.code != ExitRestart || !strings.Contains(s.stdout, "perch 0.9.1: running") ||
		!strings.Contains(s.stdout, "runtime 0.9.2 staged in slot B") {
		t.Errorf("first start: exit %d\n%s", s.code, s.stdout)
	}
	if s := starts[1]; !strings.Contains(s.stdout, "perch 0.9.2: running") {
		t.Errorf("second start: exit %d\n%s", s.code, s.stdout)
	}
	st, err := boot.NewFileLoader(boot.OSFS{}, slots).Status(ctx)
	if err != nil || st.Fallback != boot.SlotB || st.Trial() || st.Trying != boot.NoSlot {
		t.Errorf("boot environment: %+v, %v", st, err)
	}
	stdout, _, err := call(ctx, "status", "--db", filepath.Join(dir, "perch.db"), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var status Status
	if err := json.Unmarshal([]byte(stdout), &status); err != nil {
		t.Fatal(err)
	}
	var committed bool
	for _, u := range status.Updates {
		if u.Target == "runtime/perch" && u.Step == "committed" && u.Version == "0.9.2" {
			committed = true
		}
	}
	if !committed {
		t.Errorf("status updates: %+v", status.Updates)
	}
	if status.Versions.Runtime != "0.9.2" {
		t.Errorf("status runtime version %q", status.Versions.Runtime)
	}

	// A release that dies at once (here a script) spends its three trial starts; perch-boot
	// falls back to 0.9.2, which journals the rollback and does not try it again.
	bad := filepath.Join(bin, "perch-0.9.3")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho perch 0.9.3 crashes at start >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := call(ctx, append([]string{"push", "runtime", bad, "--target", "runtime/perch", "--version", "0.9.3",
		"--hardware", goruntime.GOARCH}, op.flags()...)...); err != nil {
		t.Fatalf("push: %v\n%s", err, stderr)
	}
	if _, stderr, err := call(ctx, append([]string{"promote", "--deployment", "perch-0.9.3", "--group", "pumps", "--stage", "100",
		"--runtime", "runtime/perch"}, op.flags()...)...); err != nil {
		t.Fatalf("promote: %v\n%s", err, stderr)
	}
	starts = runUntilClean()
	var codes []int
	for _, s := range starts {
		codes = append(codes, s.code)
	}
	if fmt.Sprint(codes) != fmt.Sprint([]int{ExitRestart, 3, 3, 3, 0}) || !strings.Contains(starts[len(starts)-1].stdout, "perch 0.9.2: running") {
		t.Fatalf("exit codes %v, want stage, three crashes, then 0.9.2 to the end", codes)
	}
	st, err = boot.NewFileLoader(boot.OSFS{}, slots).Status(ctx)
	if err != nil || st.Fallback != boot.SlotB || st.Booted != boot.SlotB || st.Trial() {
		t.Errorf("boot environment after the rollback: %+v, %v", st, err)
	}
	out, _, err := call(ctx, "db", "--db", filepath.Join(dir, "perch.db"), "events")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "slot A's boots ran out before it was committed"); n != 1 {
		t.Errorf("the rollback is in the events %d times, want 1:\n%s", n, out)
	}
}
