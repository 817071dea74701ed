package plugin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

func TestMux(t *testing.T) {
	ctx := context.Background()
	var a, b sim.Provider
	relay := sim.NewRelay(time.Now)
	_ = a.AttachI2C(1, 0x76, sim.NewBME280(sim.Signals{}, time.Now))
	_ = b.AttachI2C(1, 0x77, sim.NewBME280(sim.Signals{}, time.Now))
	_ = b.AttachGPIO(17, relay)
	m := &Mux{Fallback: &a}
	m.RouteI2C(1, 0x77, &b)
	m.RouteGPIO(17, &b)
	bus, _ := m.I2CBus(1)
	for _, addr := range []uint16{0x76, 0x77} { // one bus, two providers
		id := make([]byte, 1)
		if err := bus.Tx(ctx, addr, []byte{0xd0}, id); err != nil || id[0] != 0x60 {
			t.Errorf("chip id at %#x: %#x, %v", addr, id[0], err)
		}
	}
	if err := bus.Tx(ctx, 0x50, nil, make([]byte, 1)); !errors.Is(err, hal.ErrNACK) {
		t.Errorf("empty address: %v, want hal.ErrNACK", err)
	}
	l, err := m.GPIOLine(17)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(ctx, true); err != nil || !relay.Level() {
		t.Errorf("routed relay write: %v, level %v", err, relay.Level())
	}
	if _, err := m.SPIPort(0, 0); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("SPI with nothing routed: %v, want hal.ErrNoDevice", err)
	}
	var empty Mux
	if _, err := empty.UARTPort("/dev/ttyS0"); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("zero Mux UART: %v", err)
	}
	bus, _ = empty.I2CBus(0)
	if err := bus.Tx(ctx, 0x76, nil, nil); !errors.Is(err, hal.ErrNACK) {
		t.Errorf("zero Mux I2C: %v", err)
	}
}
