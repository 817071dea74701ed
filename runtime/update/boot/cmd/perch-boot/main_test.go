package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/update/boot"
)

// TestRunPicksSlot: perch-boot execs the committed slot, then a trial for its boots, then
// falls back; the exec'd path and arguments are the slot's binary and the ones after "--".
func TestRunPicksSlot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var got []string
	fake := func(argv0 string, argv, env []string) error {
		if argv[0] != argv0 || !strings.Contains(strings.Join(env, "\n"), "PERCH_SLOT=") {
			t.Fatalf("exec %s %v", argv0, argv)
		}
		got = append(got, strings.TrimPrefix(argv0, dir+"/")+" "+strings.Join(argv[1:], " "))
		return nil
	}
	args := []string{"-dir", dir, "--", "run", "-v"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(run(ctx, args, os.Stderr, fake)) // first start: Init(A)
	l := boot.NewFileLoader(boot.OSFS{}, dir)
	must(l.TryNext(ctx, boot.SlotB, 2))
	for range 4 {
		must(run(ctx, args, os.Stderr, fake))
	}
	want := []string{"A/perch run -v", "B/perch run -v", "B/perch run -v", "A/perch run -v", "A/perch run -v"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("exec'd %q, want %q", got, want)
	}
	st, err := l.Status(ctx)
	must(err)
	if st.RolledBack != boot.SlotB {
		t.Fatalf("status after the fallback: %+v", st)
	}
	var stderr bytes.Buffer
	if err := run(ctx, []string{"-bogus"}, &stderr, fake); err == nil {
		t.Fatal("a bad flag was accepted")
	}
}

// TestIntegrationPerchBoot builds perch-boot and runs it for real: it execs a slot's
// "perch" (a shell script) that reports its slot, and commits it the way perch would.
func TestIntegrationPerchBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "perch-boot")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	slots := filepath.Join(dir, "slots")
	for _, s := range []string{"A", "B"} {
		if err := os.MkdirAll(filepath.Join(slots, s), 0o755); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\necho \"version " + s + " slot=$PERCH_SLOT args=$*\"\n"
		if err := os.WriteFile(filepath.Join(slots, s, "perch"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	start := func() string {
		out, err := exec.Command(bin, "-dir", slots, "--", "run").CombinedOutput()
		if err != nil {
			t.Fatalf("perch-boot: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := start(); got != "version A slot=A args=run" {
		t.Fatalf("first start: %q", got)
	}
	l := boot.NewFileLoader(boot.OSFS{}, slots)
	ctx := context.Background()
	if err := l.TryNext(ctx, boot.SlotB, 1); err != nil {
		t.Fatal(err)
	}
	if got := start(); got != "version B slot=B args=run" {
		t.Fatalf("trial start: %q", got)
	}
	if err := l.MarkGood(ctx); err != nil {
		t.Fatal(err)
	}
	if got := start(); got != "version B slot=B args=run" {
		t.Fatalf("after commit: %q", got)
	}
}
