package boot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// U-Boot environment variables the [UBoot] loader reads and writes. bootcount, bootlimit,
// upgrade_available and altbootcmd are U-Boot's own (CONFIG_BOOTCOUNT_LIMIT with
// CONFIG_BOOTCOUNT_ENV); the perch_ ones are ours.
const (
	UBootVarSlot     = "perch_slot"    // slot bootcmd boots: A or B
	UBootVarDefault  = "perch_default" // committed slot
	UBootVarFailed   = "perch_failed"  // slot whose trial altbootcmd abandoned
	UBootVarCount    = "bootcount"
	UBootVarLimit    = "bootlimit"
	UBootVarUpgrade  = "upgrade_available"
	UBootVarAltBoot  = "altbootcmd"
	UBootCmdlineSlot = "perch.slot" // kernel command line parameter bootcmd must pass
)

// UBootAltBootCmd is the altbootcmd a box's default U-Boot environment must hold: U-Boot
// runs it instead of bootcmd when bootcount exceeds bootlimit while upgrade_available=1,
// and it falls back to the committed slot.
const UBootAltBootCmd = "setenv perch_failed ${perch_slot}; setenv perch_slot ${perch_default}; " +
	"setenv upgrade_available 0; setenv bootcount 0; saveenv; run bootcmd"

// UBoot is a [Loader] for boxes booted by U-Boot. It shells out to fw_printenv and fw_setenv
// (from u-boot-tools or libubootenv, configured by /etc/fw_env.config with two environment
// copies, so that each write survives a power cut) and learns which slot booted from the
// kernel command line.
//
// The board's U-Boot must be built with CONFIG_BOOTCOUNT_LIMIT and CONFIG_BOOTCOUNT_ENV,
// its environment must be redundant (CONFIG_SYS_REDUNDAND_ENVIRONMENT), and its default
// environment must hold:
//
//	perch_slot=A
//	perch_default=A
//	upgrade_available=0
//	bootcount=0
//	bootlimit=3
//	altbootcmd=<UBootAltBootCmd>
//	bootcmd=...load the kernel of ${perch_slot}...; setenv bootargs ${bootargs} perch.slot=${perch_slot}; bootz/booti ...
//
// State mapping: TryNext(s, n) sets perch_slot=s, bootlimit=n, bootcount=0,
// upgrade_available=1 in one fw_setenv -s write. U-Boot increments bootcount at each boot
// while upgrade_available=1 and runs altbootcmd once bootcount > bootlimit: n trial boots,
// then the fallback. MarkGood sets perch_default and perch_slot to the booted slot and
// upgrade_available=0, bootcount=0.
//
// The zero value uses the tools from $PATH and /proc/cmdline. A UBoot is safe for
// concurrent use by multiple goroutines.
type UBoot struct {
	// PrintEnv and SetEnv are the paths of fw_printenv and fw_setenv; empty means the
	// names, looked up in $PATH. Tests point them at scripts.
	PrintEnv, SetEnv string
	// Cmdline is the kernel command line file; empty means /proc/cmdline.
	Cmdline string
	mu      sync.Mutex
}

func (u *UBoot) tool(path, name string) string {
	if path != "" {
		return path
	}
	return name
}

// run executes a tool and returns its stdout; a failure names the command and its stderr.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("boot: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// printEnv reads the whole environment.
func (u *UBoot) printEnv(ctx context.Context) (map[string]string, error) {
	out, err := run(ctx, u.tool(u.PrintEnv, "fw_printenv"))
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for line := range strings.SplitSeq(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	return vars, nil
}

// setEnv writes vars in one fw_setenv -s call (one environment write); an empty value
// deletes the variable.
func (u *UBoot) setEnv(ctx context.Context, vars [][2]string) error {
	var script strings.Builder
	for _, kv := range vars {
		fmt.Fprintf(&script, "%s %s\n", kv[0], kv[1])
	}
	f, err := os.CreateTemp("", "perch-fw_setenv-*.txt")
	if err != nil {
		return fmt.Errorf("boot: fw_setenv script: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(script.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("boot: fw_setenv script: %w", err)
	}
	_, err = run(ctx, u.tool(u.SetEnv, "fw_setenv"), "-s", f.Name())
	return err
}

// booted reads the slot the kernel was booted with from the command line.
func (u *UBoot) booted() (Slot, error) {
	name := u.Cmdline
	if name == "" {
		name = "/proc/cmdline"
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return NoSlot, fmt.Errorf("boot: booted slot: %w", err)
	}
	for f := range strings.FieldsSeq(string(data)) {
		if v, ok := strings.CutPrefix(f, UBootCmdlineSlot+"="); ok {
			s, err := ParseSlot(v)
			if err != nil {
				return NoSlot, fmt.Errorf("%s: %s: %w", name, UBootCmdlineSlot, err)
			}
			return s, nil
		}
	}
	return NoSlot, fmt.Errorf("boot: %s has no %s= parameter: bootcmd must pass it (see boot.UBoot)", name, UBootCmdlineSlot)
}

func (u *UBoot) status(ctx context.Context) (Status, error) {
	booted, err := u.booted()
	if err != nil {
		return Status{}, err
	}
	vars, err := u.printEnv(ctx)
	if err != nil {
		return Status{}, err
	}
	slotVar := func(name string, required bool) (Slot, error) {
		v, ok := vars[name]
		if !ok || v == "" {
			if required {
				return NoSlot, fmt.Errorf("boot: U-Boot environment has no %s (see boot.UBoot for the default environment)", name)
			}
			return NoSlot, nil
		}
		s, err := ParseSlot(v)
		if err != nil {
			return NoSlot, fmt.Errorf("U-Boot variable %s: %w", name, err)
		}
		return s, nil
	}
	intVar := func(name string) (int, error) {
		v := vars[name]
		if v == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("boot: U-Boot variable %s=%q: not a number", name, v)
		}
		return n, nil
	}
	st := Status{Booted: booted}
	if st.Fallback, err = slotVar(UBootVarDefault, true); err != nil {
		return Status{}, err
	}
	if st.RolledBack, err = slotVar(UBootVarFailed, false); err != nil {
		return Status{}, err
	}
	if vars[UBootVarUpgrade] == "1" {
		if st.Trying, err = slotVar(UBootVarSlot, true); err != nil {
			return Status{}, err
		}
		count, err := intVar(UBootVarCount)
		if err != nil {
			return Status{}, err
		}
		limit, err := intVar(UBootVarLimit)
		if err != nil {
			return Status{}, err
		}
		st.TriesLeft = max(limit-count, 0)
	}
	return st, nil
}

// Status implements [Loader].
func (u *UBoot) Status(ctx context.Context) (Status, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.status(ctx)
}

// TryNext implements [Loader].
func (u *UBoot) TryNext(ctx context.Context, slot Slot, tries int) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.status(ctx)
	if err != nil {
		return err
	}
	if err := checkTry(st, slot, tries); err != nil {
		return err
	}
	return u.setEnv(ctx, [][2]string{
		{UBootVarSlot, string(slot)},
		{UBootVarFailed, ""},
		{UBootVarLimit, strconv.Itoa(tries)},
		{UBootVarCount, "0"},
		{UBootVarUpgrade, "1"},
	})
}

// MarkGood implements [Loader].
func (u *UBoot) MarkGood(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.status(ctx)
	if err != nil {
		return err
	}
	if !st.Trial() && st.Trying == NoSlot && st.RolledBack == NoSlot {
		return nil
	}
	return u.setEnv(ctx, [][2]string{
		{UBootVarDefault, string(st.Booted)},
		{UBootVarSlot, string(st.Booted)},
		{UBootVarFailed, ""},
		{UBootVarUpgrade, "0"},
		{UBootVarCount, "0"},
	})
}

var _ Loader = (*UBoot)(nil)
