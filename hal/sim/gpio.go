package sim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/perch-edge/perch/hal"
)

// Edge is a change of a GPIO line's level: at Time it became Level.
type Edge struct {
	Time  time.Time
	Level bool
}

// Button is a GPIO input such as a push button or a limit switch: its level is high while its
// signal is above 0.5 and low otherwise (NaN reads low), so a step scripts one edge, a spike a
// press and release, and a sine of mean 0.5 a square wave. Attach it with
// [Provider.AttachGPIO]. It is safe for concurrent use.
//
// Faults ([Button.Faults]): timeout and disconnect fail reads (see the package doc); stuck
// freezes the level. Writing to the line fails with [hal.ErrInvalid]: it is an input.
type Button struct {
	sig    Signal
	clock  func() time.Time
	faults *Faults

	mu    sync.Mutex
	start time.Time
}

// NewButton returns a button whose level follows level. clock gives the current time (nil means
// time.Now); the signal is evaluated at the time elapsed since the clock's time when NewButton
// was called (see [Button.SetStart]). level should have passed [Signal.Validate].
func NewButton(level Signal, clock func() time.Time) *Button {
	if clock == nil {
		clock = time.Now
	}
	return &Button{sig: level, clock: clock, faults: NewFaults(clock), start: clock()}
}

// SetStart sets the instant the signal's time and the fault scripts count from.
func (b *Button) SetStart(t time.Time) {
	b.mu.Lock()
	b.start = t
	b.mu.Unlock()
	b.faults.SetStart(t)
}

// Faults returns the button's faults, to inject or script.
func (b *Button) Faults() *Faults { return b.faults }

// Level returns the level of the line at t, faults aside.
func (b *Button) Level(t time.Time) bool {
	b.mu.Lock()
	since := t.Sub(b.start)
	b.mu.Unlock()
	return b.sig.At(since) > 0.5
}

// Edges returns the changes of level in (from, to], found by sampling the signal every step
// (> 0; at most 1<<20 samples), each at the first sample that shows it. Faults aside.
func (b *Button) Edges(from, to time.Time, step time.Duration) []Edge {
	if step <= 0 || !to.After(from) || to.Sub(from)/step > 1<<20 {
		return nil
	}
	var out []Edge
	last := b.Level(from)
	for t := from.Add(step); !t.After(to); t = t.Add(step) {
		if v := b.Level(t); v != last {
			out = append(out, Edge{Time: t, Level: v})
			last = v
		}
	}
	return out
}

// Read implements [GPIODevice]: it samples the level.
func (b *Button) Read(context.Context) (bool, error) {
	now := b.clock()
	if err := b.faults.gpioErr(now); err != nil {
		return false, err
	}
	return b.Level(b.faults.SignalTime(now)), nil
}

// Write implements [GPIODevice]: it fails, the line is an input.
func (b *Button) Write(context.Context, bool) error {
	return fmt.Errorf("sim: the line is a button's input: %w", hal.ErrInvalid)
}

// gpioErr returns the error a GPIO line reports at t: disconnect, then timeout.
func (f *Faults) gpioErr(t time.Time) error {
	switch {
	case f.ActiveAt(FaultDisconnect, t):
		return hal.ErrNoDevice
	case f.ActiveAt(FaultTimeout, t):
		return hal.ErrTimeout
	}
	return nil
}

// maxRelayChanges bounds the history a [Relay] keeps.
const maxRelayChanges = 1024

// Relay is a GPIO output driving a relay: it starts low (open), records the level it is driven
// to and the times it changed, for tests. Reading the line reads back the level. Attach it with
// [Provider.AttachGPIO]. It is safe for concurrent use.
//
// Faults ([Relay.Faults]): timeout and disconnect fail reads and writes (see the package doc);
// stuck welds the contacts: writes succeed but no longer change the level.
type Relay struct {
	clock  func() time.Time
	faults *Faults

	mu      sync.Mutex
	level   bool
	writes  int
	changes []Edge
}

// NewRelay returns a relay at the low level. clock gives the current time (nil means time.Now).
func NewRelay(clock func() time.Time) *Relay {
	if clock == nil {
		clock = time.Now
	}
	return &Relay{clock: clock, faults: NewFaults(clock)}
}

// SetStart sets the instant the fault scripts count from.
func (r *Relay) SetStart(t time.Time) { r.faults.SetStart(t) }

// Faults returns the relay's faults, to inject or script.
func (r *Relay) Faults() *Faults { return r.faults }

// Level returns the level the relay is at.
func (r *Relay) Level() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.level
}

// Writes returns how many writes succeeded, changing the level or not.
func (r *Relay) Writes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// Changes returns a copy of the changes of level, oldest first (at most the last 1024).
func (r *Relay) Changes() []Edge {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Edge(nil), r.changes...)
}

// Read implements [GPIODevice]: it reads back the level.
func (r *Relay) Read(context.Context) (bool, error) {
	if err := r.faults.gpioErr(r.clock()); err != nil {
		return false, err
	}
	return r.Level(), nil
}

// Write implements [GPIODevice]: it drives the relay to level.
func (r *Relay) Write(_ context.Context, level bool) error {
	now := r.clock()
	if err := r.faults.gpioErr(now); err != nil {
		return err
	}
	stuck := r.faults.ActiveAt(FaultStuck, now)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if stuck || level == r.level {
		return nil
	}
	r.level = level
	if len(r.changes) == maxRelayChanges {
		r.changes = append(r.changes[:0], r.changes[1:]...)
	}
	r.changes = append(r.changes, Edge{Time: now, Level: level})
	return nil
}
