package boot

import (
	"context"
	"errors"
	"fmt"
)

// Slot names one of the two A/B slots. The zero value is [NoSlot].
type Slot string

// The two slots, and the absence of one.
const (
	NoSlot Slot = ""
	SlotA  Slot = "A"
	SlotB  Slot = "B"
)

// MaxTries bounds the boot counter a caller may ask for in [Loader.TryNext]: a trial that
// needs more boots than this is a boot loop, not a trial.
const MaxTries = 32

// Other returns the other slot: B for A, A for B, and NoSlot for anything else.
func (s Slot) Other() Slot {
	switch s {
	case SlotA:
		return SlotB
	case SlotB:
		return SlotA
	}
	return NoSlot
}

// Valid reports whether s is A or B.
func (s Slot) Valid() bool { return s == SlotA || s == SlotB }

// ParseSlot parses "A" or "B" (also "a", "b"). Anything else is an error that quotes the input.
func ParseSlot(s string) (Slot, error) {
	switch s {
	case "A", "a":
		return SlotA, nil
	case "B", "b":
		return SlotB, nil
	}
	return NoSlot, fmt.Errorf("boot: bad slot %q (want A or B)", s)
}

// Status is what a [Loader] knows about the slots at this moment.
type Status struct {
	// Booted is the slot the running system was booted from.
	Booted Slot
	// Fallback is the committed (default) slot: the one the loader boots when no trial is
	// pending, and falls back to when a trial's boot counter runs out. Booted != Fallback
	// means a trial is running and has not been committed with [Loader.MarkGood] yet.
	Fallback Slot
	// Trying is the slot under trial (set by [Loader.TryNext], cleared by MarkGood or by a
	// fallback), or NoSlot.
	Trying Slot
	// TriesLeft is how many more boots the loader will give Trying before it falls back
	// (0 when Trying is NoSlot; -1 when the loader cannot tell).
	TriesLeft int
	// RolledBack is the slot whose trial ran out of boots and was abandoned by the loader
	// (a rollback), so that the agent can report it; NoSlot otherwise. TryNext and MarkGood
	// clear it.
	RolledBack Slot
}

// Trial reports whether the running system is an uncommitted trial.
func (s Status) Trial() bool { return s.Booted != s.Fallback }

// Loader is the small bootloader interface the update agent needs for A/B slots. See the
// package documentation for the state machine every implementation follows.
//
// Implementations are safe for concurrent use by multiple goroutines of one process; two
// processes must not drive one bootloader environment at the same time.
type Loader interface {
	// Status reads the loader's state.
	Status(ctx context.Context) (Status, error)
	// TryNext makes the loader boot slot on the next boots, at most tries times (1 to
	// MaxTries): the boot counter. If the system has not called MarkGood by then, the loader
	// falls back to the committed slot (rollback). slot must not be the booted slot, and the
	// booted slot must be committed (no trial running): ErrTrialRunning otherwise.
	TryNext(ctx context.Context, slot Slot, tries int) error
	// MarkGood commits: the booted slot becomes the default, the counter is cleared and any
	// pending trial is cancelled. It is idempotent.
	MarkGood(ctx context.Context) error
}

// Errors returned by the loaders. They are wrapped with the detail; test with errors.Is.
var (
	// ErrTrialRunning: the running slot is an uncommitted trial; commit (MarkGood) or roll
	// back (reboot until the counter runs out) before starting another trial.
	ErrTrialRunning = errors.New("boot: a trial is running and not committed")
	// ErrNoEnv: the boot environment was never written (see [FileLoader.Init]).
	ErrNoEnv = errors.New("boot: no boot environment")
	// ErrEnvCorrupt: no copy of the boot environment passes its checksum.
	ErrEnvCorrupt = errors.New("boot: boot environment corrupt")
)

// checkTry validates the arguments of TryNext against the current status.
func checkTry(st Status, slot Slot, tries int) error {
	if !slot.Valid() {
		return fmt.Errorf("boot: TryNext: bad slot %q (want A or B)", slot)
	}
	if tries < 1 || tries > MaxTries {
		return fmt.Errorf("boot: TryNext: tries %d out of range 1..%d", tries, MaxTries)
	}
	if st.Trial() {
		return fmt.Errorf("%w: booted %s, committed %s", ErrTrialRunning, st.Booted, st.Fallback)
	}
	if slot == st.Booted {
		return fmt.Errorf("boot: TryNext: slot %s is the running slot; try the other one", slot)
	}
	return nil
}
