package boot

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// TrybootRebootArg is the argument of reboot(8) that sets the Raspberry Pi firmware's
// one-shot tryboot flag: `reboot "0 tryboot"` (the quotes matter: one argument).
const TrybootRebootArg = "0 tryboot"

// RPiTryboot is a [Loader] for Raspberry Pi 4/5 boxes that boot with the firmware's tryboot
// A/B scheme: slots are two FAT boot partitions (A and B, with their root file systems), and
// autoboot.txt on partition 1 says which one boots:
//
//	[all]
//	tryboot_a_b=1
//	boot_partition=2    # the committed slot (A = PartitionA)
//	[tryboot]
//	boot_partition=3    # the slot a tryboot boot takes
//
// TryNext(s, n) rewrites autoboot.txt with [tryboot] pointing at s; the agent must then
// reboot with the one-shot tryboot flag, `reboot "0 tryboot"` ([TrybootRebootArg]). Only
// that one boot takes the trial slot: whatever reboot follows (a crash, the watchdog, a
// power cut) boots [all] again. So the boot counter is always 1 whatever n says (Status
// reports TriesLeft 1), and the firmware keeps no record of a failed trial (RolledBack is
// never set: the agent's journal knows it asked for a trial). MarkGood points both sections
// at the booted slot.
//
// Which slot booted, and whether in tryboot mode, comes from the device tree the firmware
// fills in: /proc/device-tree/chosen/bootloader/partition and .../tryboot (big-endian
// uint32 each).
//
// autoboot.txt is written next to itself and renamed over it, with fsyncs; FAT has no
// journal, so this is as safe as FAT allows, not as safe as the redundant env of
// [FileLoader] or U-Boot (see README.md).
//
// A RPiTryboot is safe for concurrent use by multiple goroutines.
type RPiTryboot struct {
	// FS holds autoboot.txt; nil means OSFS.
	FS FS
	// Autoboot is the path of autoboot.txt; empty means /boot/firmware/autoboot.txt.
	Autoboot string
	// DeviceTree is the firmware's device-tree folder; empty means
	// /proc/device-tree/chosen/bootloader.
	DeviceTree string
	// PartitionA and PartitionB are the boot partitions of the slots; 0 means 2 and 3.
	PartitionA, PartitionB int
	mu                     sync.Mutex
}

// autobootMaxBytes is the firmware's limit on autoboot.txt.
const autobootMaxBytes = 512

func (r *RPiTryboot) fsys() FS {
	if r.FS == nil {
		return OSFS{}
	}
	return r.FS
}

func (r *RPiTryboot) autobootPath() string {
	if r.Autoboot == "" {
		return "/boot/firmware/autoboot.txt"
	}
	return r.Autoboot
}

func (r *RPiTryboot) parts() (int, int) {
	a, b := r.PartitionA, r.PartitionB
	if a == 0 {
		a = 2
	}
	if b == 0 {
		b = 3
	}
	return a, b
}

func (r *RPiTryboot) slotOf(part int, where string) (Slot, error) {
	a, b := r.parts()
	switch part {
	case a:
		return SlotA, nil
	case b:
		return SlotB, nil
	}
	return NoSlot, fmt.Errorf("boot: %s: partition %d is neither slot A (%d) nor slot B (%d)", where, part, a, b)
}

func (r *RPiTryboot) partOf(s Slot) int {
	a, b := r.parts()
	if s == SlotA {
		return a
	}
	return b
}

// dtUint32 reads a big-endian uint32 device-tree property.
func (r *RPiTryboot) dtUint32(name string) (uint32, error) {
	dir := r.DeviceTree
	if dir == "" {
		dir = "/proc/device-tree/chosen/bootloader"
	}
	p := filepath.Join(dir, name)
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("boot: tryboot: %w", err)
	}
	if len(data) != 4 {
		return 0, fmt.Errorf("boot: tryboot: %s: %d bytes, want a 4-byte big-endian integer", p, len(data))
	}
	return binary.BigEndian.Uint32(data), nil
}

// readAutoboot returns the boot_partition of the [all] and [tryboot] sections.
func (r *RPiTryboot) readAutoboot() (all, try int, err error) {
	name := r.autobootPath()
	f, err := r.fsys().Open(name)
	if err != nil {
		return 0, 0, fmt.Errorf("boot: tryboot: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, autobootMaxBytes+1))
	if err != nil {
		return 0, 0, fmt.Errorf("boot: tryboot: read %s: %w", name, err)
	}
	if len(data) > autobootMaxBytes {
		return 0, 0, fmt.Errorf("boot: tryboot: %s is larger than the firmware's %d bytes", name, autobootMaxBytes)
	}
	section := "all"
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if strings.HasPrefix(text, "[") && strings.HasSuffix(text, "]") {
			section = strings.Trim(text, "[]")
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok || key != "boot_partition" {
			continue // tryboot_a_b and other properties
		}
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return 0, 0, fmt.Errorf("boot: tryboot: %s:%d: boot_partition %q is not a number", name, line, val)
		}
		switch section {
		case "all":
			all = n
		case "tryboot":
			try = n
		}
	}
	if all == 0 {
		return 0, 0, fmt.Errorf("boot: tryboot: %s has no boot_partition in [all]", name)
	}
	if try == 0 {
		try = all
	}
	return all, try, nil
}

// writeAutoboot replaces autoboot.txt: write a temporary file, fsync, rename, fsync folder.
func (r *RPiTryboot) writeAutoboot(all, try int) error {
	name := r.autobootPath()
	tmp := name + ".new"
	text := fmt.Sprintf("[all]\ntryboot_a_b=1\nboot_partition=%d\n[tryboot]\nboot_partition=%d\n", all, try)
	fsys := r.fsys()
	f, err := fsys.Create(tmp, 0o644)
	if err != nil {
		return fmt.Errorf("boot: tryboot: %w", err)
	}
	_, err = io.WriteString(f, text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, name)
	}
	if err == nil {
		err = fsys.SyncDir(path.Dir(name))
	}
	if err != nil {
		return fmt.Errorf("boot: tryboot: write %s: %w", name, err)
	}
	return nil
}

func (r *RPiTryboot) status() (Status, error) {
	part, err := r.dtUint32("partition")
	if err != nil {
		return Status{}, err
	}
	flag, err := r.dtUint32("tryboot")
	if err != nil && !errors.Is(err, fs.ErrNotExist) { // older firmware: no property, no tryboot
		return Status{}, err
	}
	booted, err := r.slotOf(int(part), "device tree partition")
	if err != nil {
		return Status{}, err
	}
	all, try, err := r.readAutoboot()
	if err != nil {
		return Status{}, err
	}
	st := Status{Booted: booted}
	if st.Fallback, err = r.slotOf(all, r.autobootPath()+" [all]"); err != nil {
		return Status{}, err
	}
	trySlot, err := r.slotOf(try, r.autobootPath()+" [tryboot]")
	if err != nil {
		return Status{}, err
	}
	switch {
	case flag == 1 && booted != st.Fallback:
		st.Trying, st.TriesLeft = booted, 0 // the one trial boot is being spent
	case flag != 1 && trySlot != st.Fallback:
		st.Trying, st.TriesLeft = trySlot, 1 // pending: needs reboot "0 tryboot"
	}
	return st, nil
}

// Status implements [Loader].
func (r *RPiTryboot) Status(ctx context.Context) (Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status()
}

// TryNext implements [Loader]. The trial happens only if the next reboot is
// `reboot "0 tryboot"`, and lasts one boot whatever tries says.
func (r *RPiTryboot) TryNext(ctx context.Context, slot Slot, tries int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.status()
	if err != nil {
		return err
	}
	if err := checkTry(st, slot, tries); err != nil {
		return err
	}
	return r.writeAutoboot(r.partOf(st.Fallback), r.partOf(slot))
}

// MarkGood implements [Loader].
func (r *RPiTryboot) MarkGood(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.status()
	if err != nil {
		return err
	}
	if !st.Trial() && st.Trying == NoSlot {
		return nil
	}
	p := r.partOf(st.Booted)
	return r.writeAutoboot(p, p)
}

var _ Loader = (*RPiTryboot)(nil)
