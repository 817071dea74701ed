package sim_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

// echo is a device that records the last write and fills reads with 0xAB.
type echo struct {
	mu   sync.Mutex
	last []byte
}

func (e *echo) Tx(_ context.Context, w, r []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last = append(e.last[:0], w...)
	for i := range r {
		r[i] = 0xAB
	}
	return nil
}

func TestProviderI2C(t *testing.T) {
	ctx := context.Background()
	p := sim.NewProvider()
	dev := &echo{}
	if err := p.AttachI2C(1, 0x40, dev); err != nil {
		t.Fatal(err)
	}
	bus, err := p.I2CBus(1)
	if err != nil {
		t.Fatal(err)
	}
	r := make([]byte, 2)
	if err := bus.Tx(ctx, 0x40, []byte{1, 2}, r); err != nil {
		t.Fatal(err)
	}
	if string(dev.last) != "\x01\x02" || string(r) != "\xab\xab" {
		t.Errorf("device saw %x and returned %x", dev.last, r)
	}
	again, _ := p.I2CBus(1)
	if again != bus {
		t.Error("I2CBus(1) twice returned different buses")
	}
}

func TestProviderErrors(t *testing.T) {
	ctx := context.Background()
	var p sim.Provider // the zero value is ready to use
	if err := p.AttachI2C(1, 0x40, &echo{}); err != nil {
		t.Fatal(err)
	}
	bus1, _ := p.I2CBus(1)
	empty, err := p.I2CBus(7)
	if err != nil {
		t.Fatalf("I2CBus(7) on a bus with no devices: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, spiErr := p.SPIPort(0, 0)
	_, gpioErr := p.GPIOLine(17)
	_, uartErr := p.UARTPort("ttyS0")
	_, negErr := p.I2CBus(-1)

	tests := []struct {
		name string
		err  error
		want error
	}{
		{"empty address", bus1.Tx(ctx, 0x41, []byte{0}, nil), hal.ErrNACK},
		{"bus without devices", empty.Tx(ctx, 0x40, nil, make([]byte, 1)), hal.ErrNACK},
		{"10-bit address", bus1.Tx(ctx, 0x140, nil, nil), hal.ErrInvalid},
		{"canceled context", bus1.Tx(canceled, 0x40, nil, nil), context.Canceled},
		{"duplicate address", p.AttachI2C(1, 0x40, &echo{}), sim.ErrAddrInUse},
		{"attach 10-bit address", p.AttachI2C(1, 0x80, &echo{}), hal.ErrInvalid},
		{"attach negative bus", p.AttachI2C(-1, 0x10, &echo{}), hal.ErrInvalid},
		{"attach nil device", p.AttachI2C(1, 0x10, nil), hal.ErrInvalid},
		{"negative bus", negErr, hal.ErrNoDevice},
		{"spi", spiErr, hal.ErrNoDevice},
		{"gpio", gpioErr, hal.ErrNoDevice},
		{"uart", uartErr, hal.ErrNoDevice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("got %v, want an error matching %v", tt.err, tt.want)
			}
		})
	}
	if got, want := tests[0].err.Error(), "sim: i2c bus 1 address 0x41: hal: no acknowledge"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
}

// TestProviderConcurrent runs transactions and attachments at once; run it with -race.
func TestProviderConcurrent(t *testing.T) {
	ctx := context.Background()
	var p sim.Provider
	dev := sim.NewBME280(sim.Signals{Temperature: sim.Signal{Value: 20}}, nil)
	if err := p.AttachI2C(0, 0x76, dev); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			bus, _ := p.I2CBus(0)
			r := make([]byte, 8)
			for i := range 200 {
				if err := bus.Tx(ctx, 0x76, []byte{0xF4, 0x25, 0xF7}, r); err != nil {
					t.Error(err)
					return
				}
				if i == 100 {
					_ = p.AttachI2C(g+1, 0x10, &echo{})
				}
			}
		})
	}
	wg.Wait()
}
