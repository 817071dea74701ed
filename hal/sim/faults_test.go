package sim_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

func TestFaultsInject(t *testing.T) {
	clk := newClock()
	f := sim.NewFaults(clk.now)
	at := func(d time.Duration) time.Time { return epoch.Add(d) }
	f.Inject(sim.FaultNACK, true) // on at 0
	clk.set(time.Second)
	f.Inject(sim.FaultNACK, true) // already on: nothing
	clk.set(2 * time.Second)
	f.Inject(sim.FaultNACK, false) // off at 2 s
	f.Inject(sim.FaultNACK, false) // already off: nothing
	clk.set(5 * time.Second)
	f.Inject(sim.FaultNACK, true) // on again at 5 s
	f.Inject("bogus", true)       // ignored
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{{-time.Second, false}, {0, true}, {1999 * time.Millisecond, true}, {2 * time.Second, false},
		{4 * time.Second, false}, {5 * time.Second, true}, {time.Hour, true}} {
		if got := f.ActiveAt(sim.FaultNACK, at(c.at)); got != c.want {
			t.Errorf("nack at %v: %v, want %v", c.at, got, c.want)
		}
	}
	if !f.Active(sim.FaultNACK) || f.Active(sim.FaultTimeout) || f.Active("bogus") {
		t.Error("Active")
	}
	// An injection on and off at the same instant lasts no time.
	f.Inject(sim.FaultTimeout, true)
	f.Inject(sim.FaultTimeout, false)
	if f.Active(sim.FaultTimeout) {
		t.Error("a zero-length fault is active")
	}
}

func TestFaultsScript(t *testing.T) {
	clk := newClock()
	f := sim.NewFaults(clk.now)
	f.Script([]sim.Fault{
		{Kind: sim.FaultTimeout, At: sim.Duration(time.Second), For: sim.Duration(time.Second)},
		{Kind: sim.FaultStuck, At: sim.Duration(3 * time.Second), For: sim.Duration(2 * time.Second)},
		{Kind: sim.FaultStuck, At: sim.Duration(4 * time.Second)}, // until the end
		{Kind: "bogus"},
	})
	f.SetStart(epoch.Add(10 * time.Second))
	at := func(d time.Duration) time.Time { return epoch.Add(10*time.Second + d) }
	if f.ActiveAt(sim.FaultTimeout, at(500*time.Millisecond)) || !f.ActiveAt(sim.FaultTimeout, at(time.Second)) ||
		f.ActiveAt(sim.FaultTimeout, at(2*time.Second)) {
		t.Error("timeout interval")
	}
	for _, c := range []struct{ at, want time.Duration }{
		{2 * time.Second, 2 * time.Second}, {3 * time.Second, 3 * time.Second},
		{4500 * time.Millisecond, 3 * time.Second}, // both stuck faults: the earliest start
		{6 * time.Second, 4 * time.Second}, {time.Hour, 4 * time.Second},
	} {
		if got := f.SignalTime(at(c.at)); !got.Equal(at(c.want)) {
			t.Errorf("signal time at %v: %v, want %v", c.at, got.Sub(at(0)), c.want)
		}
	}
	clk.t = at(3500 * time.Millisecond)
	if got := f.SignalClock(); !got.Equal(at(3 * time.Second)) {
		t.Errorf("SignalClock %v", got.Sub(at(0)))
	}
}

func TestFaultValidate(t *testing.T) {
	good := sim.Fault{Kind: sim.FaultCorrupt, At: sim.Duration(time.Second)}
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
	bad := sim.Fault{Kind: "nak", At: -1, For: -1}
	err := bad.Validate()
	if !errors.Is(err, sim.ErrBadFault) {
		t.Fatalf("%v does not match ErrBadFault", err)
	}
	want := `fault.kind: unknown fault kind "nak" (known: nack, timeout, stuck, disconnect, corrupt): sim: invalid fault
fault.at: must not be negative: sim: invalid fault
fault.for: must not be negative: sim: invalid fault`
	if err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}

// TestFaultyBME280 gives the BME280, which has only InjectNACK, the whole set of faults.
func TestFaultyBME280(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	f := sim.NewFaults(clk.now)
	sig := sim.Signals{Temperature: sim.Signal{Shape: "ramp", From: 0, To: 50, Period: sim.Duration(time.Minute)}}
	dev := sim.NewBME280(sig, f.SignalClock)
	var p sim.Provider
	if err := p.AttachI2C(1, 0x76, sim.FaultyI2C(dev, f)); err != nil {
		t.Fatal(err)
	}
	bus, _ := p.I2CBus(1)
	rawT := func() []byte {
		t.Helper()
		r := make([]byte, 3)
		if err := bus.Tx(ctx, 0x76, []byte{0xF4, 0x25, 0xFA}, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, c := range []struct {
		kind sim.FaultKind
		want error
	}{{sim.FaultNACK, hal.ErrNACK}, {sim.FaultTimeout, hal.ErrTimeout}, {sim.FaultDisconnect, hal.ErrNoDevice}, {sim.FaultCorrupt, hal.ErrCorrupt}} {
		f.Inject(c.kind, true)
		err := bus.Tx(ctx, 0x76, []byte{0xD0}, make([]byte, 1))
		if !errors.Is(err, c.want) || !strings.HasPrefix(err.Error(), "sim: i2c bus 1 address 0x76: ") {
			t.Errorf("%s: %v, want %v", c.kind, err, c.want)
		}
		f.Inject(c.kind, false)
	}
	clk.set(10 * time.Second)
	t0 := rawT()
	f.Inject(sim.FaultStuck, true)
	clk.set(30 * time.Second)
	if t1 := rawT(); string(t1) != string(t0) {
		t.Errorf("stuck: raw temperature moved from % x to % x", t0, t1)
	}
	f.Inject(sim.FaultStuck, false)
	if t2 := rawT(); string(t2) == string(t0) {
		t.Error("after stuck: raw temperature did not move")
	}
}
