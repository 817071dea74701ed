package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/registry/artifact"
	perchupdate "github.com/perch-edge/perch/runtime/update"
)

// perch push runtime and firmware need --hardware; perch promote --runtime and --firmware take
// only targets of that kind, and the deployment it signs names them.
func TestIntegrationPushPromoteSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry and TUF keys")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	op := startOperatorRegistry(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "perch")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho perch 0.2.0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "fw.img")
	if err := os.WriteFile(img, []byte("firmware image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := call(ctx, append([]string{"push", "runtime", bin, "--target", "runtime/perch", "--version", "0.2.0"}, op.flags()...)...); err == nil ||
		!strings.Contains(err.Error(), "runtime needs --hardware") {
		t.Errorf("a runtime without --hardware: %v", err)
	}
	stdout, stderr, err := call(ctx, append([]string{"push", "runtime", bin, "--target", "runtime/perch", "--version", "0.2.0", "--hardware", "arm64"}, op.flags()...)...)
	if err != nil || !strings.Contains(stdout, "runtime/perch: runtime 0.2.0 release 1 signed and published") || !strings.Contains(stdout, "hardware arm64") {
		t.Fatalf("push runtime: %v\n%s\n%s", err, stdout, stderr)
	}
	if _, stderr, err := call(ctx, append([]string{"push", "firmware", img, "--target", "firmware/pi4", "--version", "7", "--hardware", "pi4"}, op.flags()...)...); err != nil {
		t.Fatalf("push firmware: %v\n%s", err, stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--runtime", "firmware/pi4"}, "--runtime firmware/pi4: the target is a firmware, not a runtime"},
		{[]string{"--firmware", "runtime/perch"}, "--firmware runtime/perch: the target is a runtime, not a firmware"},
		{[]string{"--runtime", "runtime/nothere"}, "push it first"},
		{[]string{"--runtime", "Bad Name"}, "runtime: want a target name"},
	} {
		args := append([]string{"promote", "--deployment", "pumps-1", "--group", "pumps", "--stage", "100"}, tc.args...)
		if _, _, err := call(ctx, append(args, op.flags()...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("promote %q: %v, want %q", tc.args, err, tc.want)
		}
	}
	stdout, stderr, err = call(ctx, append([]string{"promote", "--deployment", "pumps-1", "--group", "pumps", "--stage", "100",
		"--runtime", "runtime/perch", "--firmware", "firmware/pi4"}, op.flags()...)...)
	if err != nil || !strings.Contains(stdout, "signed as release 1") {
		t.Fatalf("promote: %v\n%s\n%s", err, stdout, stderr)
	}
	// The signed deployment names both, as the agent will read it.
	c := &artifact.Client{PlainHTTP: true}
	host := strings.TrimPrefix(op.url, "http://")
	got, err := c.Pull(ctx, host+"/deployments/pumps:r1", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(got.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	d, err := perchupdate.ParseDeployment(data)
	if err != nil || d.Runtime != "runtime/perch" || d.Firmware != "firmware/pi4" || len(d.Modules) != 0 {
		t.Errorf("deployment %+v, %v:\n%s", d, err, data)
	}
	got, err = c.Pull(ctx, host+"/runtime/perch:r1", t.TempDir())
	if err != nil || got.Kind != artifact.Runtime {
		t.Errorf("pull the runtime: %+v, %v", got, err)
	}
}
