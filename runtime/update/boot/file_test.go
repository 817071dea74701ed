package boot_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/update/boot/faultfs"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newFileLoader returns a loader on a fresh faultfs, initialised with A committed.
func newFileLoader(t testing.TB) (*faultfs.FS, *boot.FileLoader) {
	t.Helper()
	fsys := faultfs.New()
	must(t, boot.MkdirAll(fsys, "/boot/env", 0o755))
	l := boot.NewFileLoader(fsys, "/boot/env")
	must(t, l.Init(context.Background(), boot.SlotA))
	return fsys, l
}

// TestFileLoaderStateMachine walks the state machine of the package doc step by step.
func TestFileLoaderStateMachine(t *testing.T) {
	ctx := context.Background()
	type step struct {
		do   string // boot, try:<slot>:<tries>, good
		want boot.Status
		err  string
	}
	st := func(booted, fallback, trying boot.Slot, left int, rolled boot.Slot) boot.Status {
		return boot.Status{Booted: booted, Fallback: fallback, Trying: trying, TriesLeft: left, RolledBack: rolled}
	}
	A, B, none := boot.SlotA, boot.SlotB, boot.NoSlot
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"commit", []step{
			{do: "boot", want: st(A, A, none, 0, none)},
			{do: "try:B:2", want: st(A, A, B, 2, none)},
			{do: "boot", want: st(B, A, B, 1, none)},
			{do: "good", want: st(B, B, none, 0, none)},
			{do: "boot", want: st(B, B, none, 0, none)},
		}},
		{"rollback after the counter runs out", []step{
			{do: "try:B:2", want: st(A, A, B, 2, none)},
			{do: "boot", want: st(B, A, B, 1, none)},
			{do: "boot", want: st(B, A, B, 0, none)},
			{do: "boot", want: st(A, A, none, 0, B)},
			{do: "boot", want: st(A, A, none, 0, B)},
			{do: "good", want: st(A, A, none, 0, none)},
		}},
		{"no second trial while one runs", []step{
			{do: "try:B:1", want: st(A, A, B, 1, none)},
			{do: "boot", want: st(B, A, B, 0, none)},
			{do: "try:A:1", err: "a trial is running"},
		}},
		{"MarkGood cancels a pending trial", []step{
			{do: "try:B:3", want: st(A, A, B, 3, none)},
			{do: "good", want: st(A, A, none, 0, none)},
			{do: "boot", want: st(A, A, none, 0, none)},
		}},
		{"bad arguments", []step{
			{do: "try:A:1", err: "slot A is the running slot"},
			{do: "try:B:0", err: "tries 0 out of range"},
			{do: fmt.Sprintf("try:B:%d", boot.MaxTries+1), err: "out of range"},
			{do: "try:C:1", err: `bad slot "C"`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, l := newFileLoader(t)
			for i, s := range tc.steps {
				var err error
				switch {
				case s.do == "boot":
					var slot boot.Slot
					slot, err = l.Boot(ctx)
					if err == nil && slot != s.want.Booted {
						t.Fatalf("step %d: Boot = %s, want %s", i, slot, s.want.Booted)
					}
				case s.do == "good":
					err = l.MarkGood(ctx)
				default:
					var slot string
					var tries int
					_, perr := fmt.Sscanf(strings.ReplaceAll(s.do, ":", " "), "try %s %d", &slot, &tries)
					must(t, perr)
					err = l.TryNext(ctx, boot.Slot(slot), tries)
				}
				if s.err != "" {
					if err == nil || !strings.Contains(err.Error(), s.err) {
						t.Fatalf("step %d (%s): err %v, want %q", i, s.do, err, s.err)
					}
					continue
				}
				must(t, err)
				got, err := l.Status(ctx)
				must(t, err)
				if got != s.want {
					t.Fatalf("step %d (%s): status %+v, want %+v", i, s.do, got, s.want)
				}
			}
		})
	}
}

// TestFileLoaderPowerCut cuts the power at every operation of a sequence of environment
// writes, with random tears: afterwards Boot always works and the environment is the one
// from before or after the interrupted write, never anything else.
func TestFileLoaderPowerCut(t *testing.T) {
	ctx := context.Background()
	// Each action is one environment write; states[i] is the status after action i.
	actions := []func(l *boot.FileLoader) error{
		func(l *boot.FileLoader) error { return l.TryNext(ctx, boot.SlotB, 2) },
		func(l *boot.FileLoader) error { _, err := l.Boot(ctx); return err },
		func(l *boot.FileLoader) error { return l.MarkGood(ctx) },
		func(l *boot.FileLoader) error { return l.TryNext(ctx, boot.SlotA, 1) },
		func(l *boot.FileLoader) error { _, err := l.Boot(ctx); return err },
		func(l *boot.FileLoader) error { _, err := l.Boot(ctx); return err },
	}
	var states []boot.Status
	fsys, l := newFileLoader(t)
	start := fsys.Ops()
	opsAfter := []int{}
	for _, a := range actions {
		st, err := l.Status(ctx)
		must(t, err)
		states = append(states, st)
		must(t, a(l))
		opsAfter = append(opsAfter, fsys.Ops()-start)
	}
	final, err := l.Status(ctx)
	must(t, err)
	states = append(states, final)
	total := fsys.Ops() - start
	rounds := 50
	if testing.Short() {
		rounds = 5
	}
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 3))
		for n := 1; n <= total; n++ {
			fsys, l := newFileLoader(t)
			fsys.CutAfter(n)
			var i int
			for i = range actions {
				if err := actions[i](l); err != nil {
					if !errors.Is(err, faultfs.ErrPowerCut) {
						t.Fatal(err)
					}
					break
				}
			}
			fsys.Reboot(rng)
			got, err := l.Status(ctx)
			if err != nil {
				t.Fatalf("round %d, cut at op %d: environment lost: %v", round, n, err)
			}
			if got != states[i] && got != states[i+1] {
				t.Fatalf("round %d, cut at op %d (in action %d): status %+v, want %+v or %+v", round, n, i, got, states[i], states[i+1])
			}
			if _, err := l.Boot(ctx); err != nil {
				t.Fatalf("round %d, cut at op %d: Boot: %v", round, n, err)
			}
		}
	}
	if opsAfter[0] < 4 {
		t.Fatalf("an environment write made %d operations, want write, sync and the directory sync", opsAfter[0])
	}
}

// TestFileLoaderInitPowerCut: a torn first write is redone by Init, never reported as damage.
func TestFileLoaderInitPowerCut(t *testing.T) {
	ctx := context.Background()
	for n := 1; n <= 4; n++ {
		for round := range 20 {
			fsys := faultfs.New()
			must(t, boot.MkdirAll(fsys, "/env", 0o755))
			l := boot.NewFileLoader(fsys, "/env")
			fsys.CutAfter(n)
			if err := l.Init(ctx, boot.SlotB); !errors.Is(err, faultfs.ErrPowerCut) {
				t.Fatalf("cut at %d: Init = %v", n, err)
			}
			fsys.Reboot(rand.New(rand.NewPCG(uint64(round), uint64(n))))
			if _, err := l.Status(ctx); err != nil && !errors.Is(err, boot.ErrNoEnv) {
				t.Fatalf("cut at %d: Status after a torn Init = %v, want ErrNoEnv or a state", n, err)
			}
			must(t, l.Init(ctx, boot.SlotB))
			st, err := l.Status(ctx)
			must(t, err)
			if st.Booted != boot.SlotB || st.Fallback != boot.SlotB {
				t.Fatalf("cut at %d: after Init: %+v", n, st)
			}
		}
	}
}

// TestFileLoaderOnDisk runs the loader on the real file system and damages the copies.
func TestFileLoaderOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := boot.NewFileLoader(boot.OSFS{}, dir)
	if _, err := l.Status(ctx); !errors.Is(err, boot.ErrNoEnv) {
		t.Fatalf("Status before Init = %v, want ErrNoEnv", err)
	}
	must(t, l.Init(ctx, boot.SlotA))
	must(t, l.TryNext(ctx, boot.SlotB, 3)) // goes to copy 1
	c0 := filepath.Join(dir, boot.EnvFile0)
	c1 := filepath.Join(dir, boot.EnvFile1)
	data, err := os.ReadFile(c1)
	must(t, err)
	if !strings.Contains(string(data), "try=B\n") || !strings.Contains(string(data), "seq=2\n") {
		t.Fatalf("copy 1 after TryNext:\n%s", data)
	}

	// A flipped byte in the newest copy: the older copy (no trial) is used.
	bad := []byte(strings.Replace(string(data), "tries=3", "tries=4", 1))
	must(t, os.WriteFile(c1, bad, 0o644))
	st, err := l.Status(ctx)
	must(t, err)
	if st.Trying != boot.NoSlot {
		t.Fatalf("with copy 1 corrupt: %+v, want the state of copy 0", st)
	}
	// The next write repairs by overwriting the bad copy.
	must(t, l.TryNext(ctx, boot.SlotB, 1))
	st, err = l.Status(ctx)
	must(t, err)
	if st.Trying != boot.SlotB || st.TriesLeft != 1 {
		t.Fatalf("after the repairing write: %+v", st)
	}
	// Both copies bad: a clear error naming both files, and Init refuses to paper over it.
	must(t, os.WriteFile(c0, []byte("garbage\n"), 0o644))
	must(t, os.WriteFile(c1, nil, 0o644))
	_, err = l.Status(ctx)
	if !errors.Is(err, boot.ErrEnvCorrupt) || !strings.Contains(err.Error(), c0) || !strings.Contains(err.Error(), c1) {
		t.Fatalf("both copies bad: %v", err)
	}
	if err := l.Init(ctx, boot.SlotA); !errors.Is(err, boot.ErrEnvCorrupt) {
		t.Fatalf("Init over a corrupt env = %v, want ErrEnvCorrupt", err)
	}
}
