package boot_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/update/boot"
)

// fakePi plays the Raspberry Pi firmware: at power-on it reads autoboot.txt, takes the
// [tryboot] section if the one-shot flag is set, and fills in the device tree.
type fakePi struct {
	t        *testing.T
	autoboot string
	dt       string
	loader   *boot.RPiTryboot
}

func newFakePi(t *testing.T) *fakePi {
	dir := t.TempDir()
	p := &fakePi{t: t, autoboot: filepath.Join(dir, "firmware", "autoboot.txt"), dt: filepath.Join(dir, "dt")}
	must(t, os.MkdirAll(filepath.Dir(p.autoboot), 0o755))
	must(t, os.MkdirAll(p.dt, 0o755))
	must(t, os.WriteFile(p.autoboot, []byte("[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"), 0o644))
	p.loader = &boot.RPiTryboot{Autoboot: p.autoboot, DeviceTree: p.dt}
	p.powerOn(false)
	return p
}

var sectionPart = regexp.MustCompile(`(?s)\[all\].*?boot_partition=(\d+).*\[tryboot\].*?boot_partition=(\d+)`)

func (p *fakePi) powerOn(tryboot bool) boot.Slot {
	data, err := os.ReadFile(p.autoboot)
	must(p.t, err)
	m := sectionPart.FindStringSubmatch(string(data))
	if m == nil {
		p.t.Fatalf("firmware cannot read autoboot.txt:\n%s", data)
	}
	part, _ := strconv.Atoi(m[1])
	flag := uint32(0)
	if tryboot {
		part, _ = strconv.Atoi(m[2])
		flag = 1
	}
	put := func(name string, v uint32) {
		must(p.t, os.WriteFile(filepath.Join(p.dt, name), binary.BigEndian.AppendUint32(nil, v), 0o644))
	}
	put("partition", uint32(part))
	put("tryboot", flag)
	return map[int]boot.Slot{2: boot.SlotA, 3: boot.SlotB}[part]
}

func TestRPiTrybootCommitAndRollback(t *testing.T) {
	ctx := context.Background()
	p := newFakePi(t)
	l := p.loader
	want := func(step string, w boot.Status) {
		t.Helper()
		got, err := l.Status(ctx)
		must(t, err)
		if got != w {
			t.Fatalf("%s: status %+v, want %+v", step, got, w)
		}
	}
	A, B := boot.SlotA, boot.SlotB
	// The shipped autoboot.txt has [tryboot] at 3, but no trial was asked for: MarkGood
	// makes the state clean.
	must(t, l.MarkGood(ctx))
	want("fresh", boot.Status{Booted: A, Fallback: A})

	must(t, l.TryNext(ctx, B, 3))
	want("pending", boot.Status{Booted: A, Fallback: A, Trying: B, TriesLeft: 1})
	if got := p.powerOn(false); got != A {
		t.Fatalf("a plain reboot took %s: only reboot \"0 tryboot\" may", got)
	}
	if got := p.powerOn(true); got != B {
		t.Fatalf("tryboot reboot took %s", got)
	}
	want("trial", boot.Status{Booted: B, Fallback: A, Trying: B})
	if err := l.TryNext(ctx, A, 1); !errors.Is(err, boot.ErrTrialRunning) {
		t.Fatalf("TryNext during a trial: %v", err)
	}
	// The trial crashes: the watchdog reboot is a plain one, back to A.
	if got := p.powerOn(false); got != A {
		t.Fatalf("reboot after a failed trial took %s", got)
	}
	// Try again and commit.
	p.powerOn(true)
	must(t, l.MarkGood(ctx))
	want("committed", boot.Status{Booted: B, Fallback: B})
	if got := p.powerOn(false); got != B {
		t.Fatalf("plain reboot after commit took %s", got)
	}
	data, err := os.ReadFile(p.autoboot)
	must(t, err)
	if !strings.Contains(string(data), "tryboot_a_b=1") || len(data) > 512 {
		t.Fatalf("autoboot.txt:\n%s", data)
	}
}

func TestRPiTrybootErrors(t *testing.T) {
	ctx := context.Background()
	p := newFakePi(t)
	must(t, os.WriteFile(filepath.Join(p.dt, "partition"), []byte{0, 0, 0, 7}, 0o644))
	if _, err := p.loader.Status(ctx); err == nil || !strings.Contains(err.Error(), "partition 7 is neither slot A (2) nor slot B (3)") {
		t.Fatalf("unknown partition: %v", err)
	}
	p.powerOn(false)
	must(t, os.WriteFile(p.autoboot, []byte("[all]\nboot_partition=two\n"), 0o644))
	if _, err := p.loader.Status(ctx); err == nil || !strings.Contains(err.Error(), `autoboot.txt:2: boot_partition "two" is not a number`) {
		t.Fatalf("bad autoboot.txt: %v", err)
	}
}
