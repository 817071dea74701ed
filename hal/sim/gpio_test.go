package sim_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

// press is a button pressed from 1 s to 1.5 s and from 3 s to 4 s.
var press = sim.Signal{Sum: []sim.Signal{
	{Shape: "spike", Amplitude: 1, Start: sim.Duration(time.Second), Width: sim.Duration(500 * time.Millisecond)},
	{Shape: "spike", Amplitude: 1, Start: sim.Duration(3 * time.Second), Width: sim.Duration(time.Second)},
}}

func TestButton(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	b := sim.NewButton(press, clk.now)
	var p sim.Provider
	if err := p.AttachGPIO(17, b); err != nil {
		t.Fatal(err)
	}
	line, err := p.GPIOLine(17)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {999 * time.Millisecond, false}, {time.Second, true}, {1499 * time.Millisecond, true},
		{1500 * time.Millisecond, false}, {3500 * time.Millisecond, true}, {5 * time.Second, false}} {
		clk.set(c.at)
		if got, err := line.Read(ctx); err != nil || got != c.want {
			t.Errorf("at %v: %v, %v; want %v", c.at, got, err, c.want)
		}
	}
	want := []sim.Edge{
		{Time: epoch.Add(time.Second), Level: true}, {Time: epoch.Add(1500 * time.Millisecond), Level: false},
		{Time: epoch.Add(3 * time.Second), Level: true}, {Time: epoch.Add(4 * time.Second), Level: false},
	}
	if got := b.Edges(epoch, epoch.Add(5*time.Second), 10*time.Millisecond); !reflect.DeepEqual(got, want) {
		t.Errorf("edges %v, want %v", got, want)
	}
	if got := b.Edges(epoch, epoch.Add(time.Hour), 0); got != nil {
		t.Errorf("edges with step 0: %v", got)
	}
	if err := line.Write(ctx, true); !errors.Is(err, hal.ErrInvalid) {
		t.Errorf("driving a button: %v, want hal.ErrInvalid", err)
	}
	if got, want := line.Write(ctx, true).Error(), "sim: gpio line 17: sim: the line is a button's input: hal: invalid argument"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}

	// Faults: stuck holds the level of its start; timeout and disconnect fail reads.
	clk.set(1200 * time.Millisecond)
	b.Faults().Inject(sim.FaultStuck, true)
	clk.set(2 * time.Second)
	if got, _ := line.Read(ctx); !got {
		t.Error("stuck button: low, want high (the level when it stuck)")
	}
	b.Faults().Inject(sim.FaultStuck, false)
	if got, _ := line.Read(ctx); got {
		t.Error("after stuck: high, want low")
	}
	for kind, want := range map[sim.FaultKind]error{sim.FaultTimeout: hal.ErrTimeout, sim.FaultDisconnect: hal.ErrNoDevice} {
		b.Faults().Inject(kind, true)
		if _, err := line.Read(ctx); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", kind, err, want)
		}
		b.Faults().Inject(kind, false)
	}
	if _, err := line.Read(ctx); err != nil {
		t.Errorf("after the faults: %v", err)
	}
}

func TestRelay(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	r := sim.NewRelay(clk.now)
	var p sim.Provider
	if err := p.AttachGPIO(22, r); err != nil {
		t.Fatal(err)
	}
	line, _ := p.GPIOLine(22)
	if r.Level() {
		t.Error("a new relay is high")
	}
	steps := []struct {
		at    time.Duration
		level bool
	}{{time.Second, true}, {2 * time.Second, true}, {3 * time.Second, false}, {4 * time.Second, true}}
	for _, s := range steps {
		clk.set(s.at)
		if err := line.Write(ctx, s.level); err != nil {
			t.Fatal(err)
		}
		if got, err := line.Read(ctx); err != nil || got != s.level {
			t.Errorf("read back at %v: %v, %v", s.at, got, err)
		}
	}
	want := []sim.Edge{
		{Time: epoch.Add(time.Second), Level: true}, {Time: epoch.Add(3 * time.Second), Level: false},
		{Time: epoch.Add(4 * time.Second), Level: true},
	}
	if got := r.Changes(); !reflect.DeepEqual(got, want) {
		t.Errorf("changes %v, want %v", got, want)
	}
	if r.Writes() != 4 {
		t.Errorf("%d writes, want 4", r.Writes())
	}

	// Stuck: the contacts weld; writes succeed and change nothing.
	r.Faults().Inject(sim.FaultStuck, true)
	clk.set(5 * time.Second)
	if err := line.Write(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !r.Level() || len(r.Changes()) != 3 {
		t.Errorf("a stuck relay moved: level %v, %d changes", r.Level(), len(r.Changes()))
	}
	r.Faults().Inject(sim.FaultStuck, false)
	for kind, want := range map[sim.FaultKind]error{sim.FaultTimeout: hal.ErrTimeout, sim.FaultDisconnect: hal.ErrNoDevice} {
		r.Faults().Inject(kind, true)
		if err := line.Write(ctx, false); !errors.Is(err, want) {
			t.Errorf("%s write: %v, want %v", kind, err, want)
		}
		if _, err := line.Read(ctx); !errors.Is(err, want) {
			t.Errorf("%s read: %v, want %v", kind, err, want)
		}
		r.Faults().Inject(kind, false)
	}
	if !r.Level() || r.Writes() != 5 {
		t.Errorf("after failed writes: level %v, %d writes", r.Level(), r.Writes())
	}
	// The history is bounded.
	for i := range 3000 {
		clk.add(time.Millisecond)
		if err := line.Write(ctx, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(r.Changes()); n != 1024 {
		t.Errorf("%d changes kept, want 1024", n)
	}
}
