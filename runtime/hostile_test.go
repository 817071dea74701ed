package runtime_test

import (
	"errors"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// hostileGrants grants the hostile module everything its manifest declares, so that a bad
// pointer reaches each host function's bounds check instead of stopping at EPERM.
var hostileGrants = config.Grants{
	I2C:   []config.I2CGrant{{Bus: 1, Address: 0x76}},
	SPI:   []config.SPIGrant{{Bus: 0, CS: 0}},
	GPIO:  []config.GPIOGrant{{Line: 17, Mode: "in"}},
	UART:  []config.UARTGrant{{Port: "/dev/ttyS0"}},
	State: true,
}

func simHAL(t *testing.T) *sim.Provider {
	p := sim.NewProvider()
	if err := p.AttachI2C(1, 0x76, sim.NewBME280(sim.Signals{}, nil)); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHostileModule makes the hostile module misbehave in every way the supervisor must
// survive, and checks that each is stopped with the right reason within its deadline (plus
// slack for a loaded machine), while a forced garbage collection runs.
func TestHostileModule(t *testing.T) {
	wasm := perchtest.Built(t, "hostile")
	cases := []struct{ mode, reason string }{
		{"spin", runtime.ReasonDeadline},
		{"bomb", runtime.ReasonMemory},
		{"trap", runtime.ReasonTrap},
		{"exit", runtime.ReasonTrap},
		{"emitflood", runtime.ReasonEmitQuota},
		{"logflood", runtime.ReasonLogQuota},
		{"badrecord", runtime.ReasonBadRecord},
		{"undeclared", runtime.ReasonBadRecord},
	}
	for _, fn := range []string{"log", "emit", "config", "state_get", "state_set", "state_delete",
		"i2c_read", "i2c_write", "spi_transfer", "gpio_read", "uart_read", "uart_write"} {
		cases = append(cases, struct{ mode, reason string }{"badptr:" + fn, runtime.ReasonBadPointer})
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			// The spinning guest meets a short deadline; the others get a long one, so that a
			// loaded machine cannot turn their fault (such as the memory bomb's) into an overrun.
			deadline := 5 * time.Second
			if c.reason == runtime.ReasonDeadline {
				deadline = 200 * time.Millisecond
			}
			m := perchtest.Load(t, perchtest.Options{
				Wasm: wasm, Config: map[string]any{"mode": c.mode, "after": 1},
				Grants: hostileGrants, HAL: simHAL(t), Deadline: deadline, MemoryPages: 512,
			})
			if out := m.Poll(t, 1); len(out) != 1 || out[0].Series != "heartbeat" {
				t.Fatalf("first poll: got %+v, want one heartbeat", out)
			}
			// Force collections while the guest misbehaves: without close-on-context-done a
			// spinning guest would block them, and this test would hang.
			var stop atomic.Bool
			done := make(chan struct{})
			go func() {
				defer close(done)
				for !stop.Load() {
					goruntime.GC()
					time.Sleep(time.Millisecond)
				}
			}()
			start := time.Now()
			_, err := m.TryPoll(1)
			took := time.Since(start)
			stop.Store(true)
			<-done
			var f *runtime.Fault
			if !errors.As(err, &f) {
				t.Fatalf("got %v, want a fault", err)
			}
			if f.Reason != c.reason {
				t.Fatalf("reason %q, want %q (%v)", f.Reason, c.reason, f)
			}
			if took > deadline+2*time.Second {
				t.Fatalf("stopped after %v, deadline %v", took, deadline)
			}
			t.Logf("%s: stopped after %v: %v", c.mode, took.Round(time.Millisecond), f)
		})
	}
}

// TestUngrantedDevice checks that a driver configured for an address it was not granted gets
// EPERM from the host and fails its init.
func TestUngrantedDevice(t *testing.T) {
	p := simHAL(t)
	if err := p.AttachI2C(1, 0x77, sim.NewBME280(sim.Signals{}, nil)); err != nil {
		t.Fatal(err)
	}
	_, err := perchtest.Open(perchtest.Options{
		Wasm:   perchtest.Built(t, "bme280"),
		Config: map[string]any{"bus": 1, "address": 0x76},
		Grants: config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x77}}},
		HAL:    p,
	})
	if err == nil || !strings.Contains(err.Error(), abi.EPERM.String()) {
		t.Fatalf("got %v, want an init error with EPERM", err)
	}
}

// TestMemoryLimitBelowStart checks that a memory limit smaller than what the module needs to
// start is a clear load error, not a crash.
func TestMemoryLimitBelowStart(t *testing.T) {
	_, err := perchtest.Open(perchtest.Options{Wasm: perchtest.Built(t, "hostile"), Grants: hostileGrants, MemoryPages: 1})
	if err == nil || !strings.Contains(err.Error(), "more than its limit of 1 (memory_pages)") {
		t.Fatalf("got %v, want an error about memory_pages", err)
	}
}
