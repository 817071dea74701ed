package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/perch-edge/perch/hal"
)

// ErrBadFault is matched (with errors.Is) by every error of [Fault.Validate].
var ErrBadFault = errors.New("sim: invalid fault")

// FaultKind names a fault that can be injected into a simulated device.
type FaultKind string

// Fault kinds. Which ones a device honours is in its doc comment; the others have no effect on
// it. A device that has several active at once reports the first of disconnect, nack, timeout
// and corrupt.
const (
	// FaultNACK: an I2C device does not acknowledge; transactions fail with [hal.ErrNACK].
	FaultNACK FaultKind = "nack"
	// FaultTimeout: the bus times out; calls fail with an error wrapping [hal.ErrTimeout], and a
	// UART device sends nothing.
	FaultTimeout FaultKind = "timeout"
	// FaultStuck: the device answers normally but its values freeze at those of the instant the
	// fault began (a relay's contacts weld: writes no longer move it). No error on the bus: a
	// driver tells as it would with a real part, where the protocol says that no new data came
	// (the ADXL345's DATA_READY) or from the values: readings that repeat to the bit where live
	// ones carry noise (the bme280 and pms5003 drivers' stuck_reads), a line that stays still for
	// longer than its use allows (the gpio driver's stuck_after).
	FaultStuck FaultKind = "stuck"
	// FaultDisconnect: the device is gone; calls fail with an error wrapping [hal.ErrNoDevice].
	FaultDisconnect FaultKind = "disconnect"
	// FaultCorrupt: framed data fails its checksum (a UART device sends frames with a bad
	// checksum, which the driver must detect); on a register bus the controller reports the
	// damaged transfer, with an error wrapping [hal.ErrCorrupt].
	FaultCorrupt FaultKind = "corrupt"
)

// FaultKinds lists every fault kind, in the order of the table in the package doc.
var FaultKinds = []FaultKind{FaultNACK, FaultTimeout, FaultStuck, FaultDisconnect, FaultCorrupt}

func (k FaultKind) index() int {
	for i, x := range FaultKinds {
		if x == k {
			return i
		}
	}
	return -1
}

// Fault is one scripted fault, plain data decoded from configuration: Kind is active from At
// after the simulation's start for For (0: until the end), as in
//
//	faults: [{kind: nack, at: 5s, for: 2s}]
type Fault struct {
	Kind FaultKind `json:"kind" yaml:"kind"`
	At   Duration  `json:"at,omitempty" yaml:"at,omitempty"`
	For  Duration  `json:"for,omitempty" yaml:"for,omitempty"`
}

// Validate reports every problem of f at once (joined with errors.Join), each naming its field
// relative to "fault", such as `fault.kind: unknown fault kind "nak"`. Each error matches
// [ErrBadFault]. It accepts every kind; which kinds a device honours is the caller's check.
func (f *Fault) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("fault.%s: %s: %w", field, fmt.Sprintf(format, args...), ErrBadFault))
	}
	if f.Kind.index() < 0 {
		bad("kind", "unknown fault kind %q (known: %s)", f.Kind, KindList(FaultKinds))
	}
	if f.At < 0 {
		bad("at", "must not be negative")
	}
	if f.For < 0 {
		bad("for", "must not be negative")
	}
	return errors.Join(errs...)
}

// KindList formats kinds for messages: "nack, timeout, stuck".
func KindList(kinds []FaultKind) string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// span is one interval [from, to) of the device clock during which a fault is active; open
// spans have no end yet.
type span struct {
	from, to time.Time
	open     bool
}

func (s span) contains(t time.Time) bool {
	return !t.Before(s.from) && (s.open || t.Before(s.to))
}

// maxManualSpans bounds the history of hand-injected faults kept per kind.
const maxManualSpans = 64

// Faults holds the faults injected into one device, by hand with [Faults.Inject] or by a script
// of [Fault]s with [Faults.Script], as intervals of the device's clock, so that a device can ask
// what was active at any instant (a UART device asks it for the instant each frame was sent).
// It is safe for concurrent use. Devices create their own (see their Faults method); use
// [NewFaults] with [FaultyI2C] to give faults to an [I2CDevice] that has none.
type Faults struct {
	clock func() time.Time

	mu     sync.Mutex
	start  time.Time
	script []Fault
	manual [5][]span // by FaultKind index; the last may be open
}

// NewFaults returns an empty set of faults on the clock (nil means time.Now); scripts count from
// the clock's time when NewFaults was called, or from [Faults.SetStart].
func NewFaults(clock func() time.Time) *Faults {
	if clock == nil {
		clock = time.Now
	}
	return &Faults{clock: clock, start: clock()}
}

// SetStart sets the instant scripts count from.
func (f *Faults) SetStart(t time.Time) {
	f.mu.Lock()
	f.start = t
	f.mu.Unlock()
}

// Script replaces the scripted faults. The faults should have passed [Fault.Validate]; one of an
// unknown kind is ignored.
func (f *Faults) Script(faults []Fault) {
	f.mu.Lock()
	f.script = append([]Fault(nil), faults...)
	f.mu.Unlock()
}

// Inject turns a fault of kind on or off from now on (the clock's current time). Injecting a
// fault that is already on, or clearing one that is off, does nothing; an unknown kind is
// ignored. Scripted faults are not affected.
func (f *Faults) Inject(kind FaultKind, on bool) {
	k := kind.index()
	if k < 0 {
		return
	}
	now := f.clock()
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.manual[k]
	isOn := len(s) > 0 && s[len(s)-1].open
	switch {
	case on && !isOn:
		if len(s) == maxManualSpans {
			s = append(s[:0], s[1:]...)
		}
		f.manual[k] = append(s, span{from: now, open: true})
	case !on && isOn:
		s[len(s)-1] = span{from: s[len(s)-1].from, to: now}
	}
}

// Active reports whether a fault of kind is active now.
func (f *Faults) Active(kind FaultKind) bool { return f.ActiveAt(kind, f.clock()) }

// ActiveAt reports whether a fault of kind is (or was) active at t.
func (f *Faults) ActiveAt(kind FaultKind, t time.Time) bool {
	k := kind.index()
	if k < 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.firstLocked(k, t)
	return ok
}

// firstLocked returns the earliest beginning of a fault of kind index k that is active at t.
func (f *Faults) firstLocked(k int, t time.Time) (time.Time, bool) {
	var first time.Time
	found := false
	note := func(s span) {
		if s.contains(t) && (!found || s.from.Before(first)) {
			first, found = s.from, true
		}
	}
	for _, s := range f.manual[k] {
		note(s)
	}
	for _, sf := range f.script {
		if sf.Kind.index() != k {
			continue
		}
		s := span{from: f.start.Add(time.Duration(sf.At)), open: sf.For == 0}
		s.to = s.from.Add(time.Duration(sf.For))
		note(s)
	}
	return first, found
}

// SignalTime returns the instant at which a device's values should be taken for t: t itself,
// or, while a stuck fault is active, the instant it began.
func (f *Faults) SignalTime(t time.Time) time.Time {
	k := FaultStuck.index()
	f.mu.Lock()
	defer f.mu.Unlock()
	if from, ok := f.firstLocked(k, t); ok {
		return from
	}
	return t
}

// SignalClock is the clock's current time as [Faults.SignalTime] sees it: it stands still while
// a stuck fault is active. Give it to a device model as its clock to make its values freeze,
// as in NewBME280(sig, f.SignalClock).
func (f *Faults) SignalClock() time.Time { return f.SignalTime(f.clock()) }

// busErr returns the error a bus reports at t for the active faults (nack only when i2c), or
// nil: disconnect first, then nack, timeout and corrupt.
func (f *Faults) busErr(t time.Time, i2c bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	active := func(k FaultKind) bool { _, ok := f.firstLocked(k.index(), t); return ok }
	switch {
	case active(FaultDisconnect):
		return hal.ErrNoDevice
	case i2c && active(FaultNACK):
		return hal.ErrNACK
	case active(FaultTimeout):
		return hal.ErrTimeout
	case active(FaultCorrupt):
		return hal.ErrCorrupt
	}
	return nil
}

// FaultyI2C returns dev seen through the faults f: while disconnect, nack, timeout or corrupt is
// active, transactions fail (with [hal.ErrNoDevice], [hal.ErrNACK], [hal.ErrTimeout] or
// [hal.ErrCorrupt]) without reaching dev. A stuck fault needs the device's help: give it
// [Faults.SignalClock] as its clock.
func FaultyI2C(dev I2CDevice, f *Faults) I2CDevice { return &faultyI2C{dev: dev, f: f} }

type faultyI2C struct {
	dev I2CDevice
	f   *Faults
}

func (d *faultyI2C) Tx(ctx context.Context, w, r []byte) error {
	if err := d.f.busErr(d.f.clock(), true); err != nil {
		return err
	}
	return d.dev.Tx(ctx, w, r)
}
