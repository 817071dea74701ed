package boot_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/update/boot"
)

// fakeUBoot is a box with U-Boot: the environment is a file the fake fw_* scripts edit, and
// powerOn plays U-Boot's boot: bootcount, bootlimit, altbootcmd and the kernel command line.
type fakeUBoot struct {
	t       *testing.T
	env     string // environment file
	cmdline string // kernel command line file
	loader  *boot.UBoot
}

func newFakeUBoot(t *testing.T) *fakeUBoot {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	f := &fakeUBoot{t: t, env: filepath.Join(dir, "uboot.env"), cmdline: filepath.Join(dir, "cmdline")}
	initial := "bootcmd=run loadkernel_${perch_slot}; bootz\n" +
		"perch_slot=A\nperch_default=A\nupgrade_available=0\nbootcount=0\nbootlimit=3\n" +
		"altbootcmd=" + boot.UBootAltBootCmd + "\n"
	must(t, os.WriteFile(f.env, []byte(initial), 0o644))
	t.Setenv("FAKE_UBOOT_ENV", f.env)
	abs, err := filepath.Abs("testdata")
	must(t, err)
	f.loader = &boot.UBoot{PrintEnv: filepath.Join(abs, "fw_printenv"), SetEnv: filepath.Join(abs, "fw_setenv"), Cmdline: f.cmdline}
	f.powerOn()
	return f
}

func (f *fakeUBoot) vars() map[string]string {
	data, err := os.ReadFile(f.env)
	must(f.t, err)
	m := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (f *fakeUBoot) save(m map[string]string) {
	var b strings.Builder
	for k, v := range m {
		b.WriteString(k + "=" + v + "\n")
	}
	must(f.t, os.WriteFile(f.env, []byte(b.String()), 0o644))
}

var ubootVar = regexp.MustCompile(`\$\{(\w+)\}`)

// powerOn does what U-Boot does with CONFIG_BOOTCOUNT_LIMIT and CONFIG_BOOTCOUNT_ENV, and
// interprets altbootcmd's setenv/saveenv/run commands, then "boots" perch_slot.
func (f *fakeUBoot) powerOn() boot.Slot {
	m := f.vars()
	if m["upgrade_available"] == "1" {
		n, _ := strconv.Atoi(m["bootcount"])
		m["bootcount"] = strconv.Itoa(n + 1)
		limit, _ := strconv.Atoi(m["bootlimit"])
		if n+1 > limit {
			for cmd := range strings.SplitSeq(m["altbootcmd"], ";") {
				fields := strings.Fields(ubootVar.ReplaceAllStringFunc(cmd, func(s string) string {
					return m[ubootVar.FindStringSubmatch(s)[1]]
				}))
				switch {
				case len(fields) == 3 && fields[0] == "setenv":
					m[fields[1]] = fields[2]
				case len(fields) == 1 && fields[0] == "saveenv":
				case len(fields) == 2 && fields[0] == "run" && fields[1] == "bootcmd":
				default:
					f.t.Fatalf("altbootcmd: unexpected command %q", cmd)
				}
			}
		}
	}
	f.save(m)
	slot := boot.Slot(m["perch_slot"])
	must(f.t, os.WriteFile(f.cmdline, []byte("console=ttyS0 root=/dev/mmcblk0p2 perch.slot="+string(slot)+"\n"), 0o644))
	return slot
}

func TestUBootCommitAndRollback(t *testing.T) {
	ctx := context.Background()
	f := newFakeUBoot(t)
	l := f.loader
	want := func(step string, w boot.Status) {
		t.Helper()
		got, err := l.Status(ctx)
		must(t, err)
		if got != w {
			t.Fatalf("%s: status %+v, want %+v", step, got, w)
		}
	}
	A, B, none := boot.SlotA, boot.SlotB, boot.NoSlot
	want("fresh", boot.Status{Booted: A, Fallback: A})
	must(t, l.TryNext(ctx, B, 2))
	if log, _ := os.ReadFile(f.env + ".log"); strings.Count(string(log), "\n") != 1 {
		t.Fatalf("TryNext must be one fw_setenv call (one env write), log:\n%s", log)
	}
	want("after TryNext", boot.Status{Booted: A, Fallback: A, Trying: B, TriesLeft: 2})
	if got := f.powerOn(); got != B {
		t.Fatalf("first boot after TryNext: %s", got)
	}
	want("trial boot 1", boot.Status{Booted: B, Fallback: A, Trying: B, TriesLeft: 1})
	if err := l.TryNext(ctx, A, 1); !errors.Is(err, boot.ErrTrialRunning) {
		t.Fatalf("TryNext during a trial: %v", err)
	}
	f.powerOn()
	want("trial boot 2", boot.Status{Booted: B, Fallback: A, Trying: B, TriesLeft: 0})
	if got := f.powerOn(); got != A {
		t.Fatalf("third boot: %s, want the fallback A", got)
	}
	want("rolled back", boot.Status{Booted: A, Fallback: A, Trying: none, RolledBack: B})

	// Second attempt, committed this time.
	must(t, l.TryNext(ctx, B, 3))
	f.powerOn()
	must(t, l.MarkGood(ctx))
	want("committed", boot.Status{Booted: B, Fallback: B})
	for range 5 {
		if got := f.powerOn(); got != B {
			t.Fatalf("boot after commit: %s", got)
		}
	}
	if v := f.vars(); v["upgrade_available"] != "0" || v["bootcount"] != "0" || v["perch_default"] != "B" {
		t.Fatalf("env after commit: %v", v)
	}
}

func TestUBootErrors(t *testing.T) {
	ctx := context.Background()
	f := newFakeUBoot(t)
	must(t, os.WriteFile(f.cmdline, []byte("console=ttyS0\n"), 0o644))
	if _, err := f.loader.Status(ctx); err == nil || !strings.Contains(err.Error(), "no perch.slot= parameter") {
		t.Fatalf("no slot on the command line: %v", err)
	}
	f.powerOn()
	m := f.vars()
	delete(m, "perch_default")
	f.save(m)
	if _, err := f.loader.Status(ctx); err == nil || !strings.Contains(err.Error(), "has no perch_default") {
		t.Fatalf("no perch_default: %v", err)
	}
	f.loader.PrintEnv = filepath.Join(t.TempDir(), "missing-fw_printenv")
	if _, err := f.loader.Status(ctx); err == nil || !strings.Contains(err.Error(), "missing-fw_printenv") {
		t.Fatalf("missing tool: %v", err)
	}
}
