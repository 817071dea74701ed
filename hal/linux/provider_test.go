//go:build linux

package linux

import (
	"context"
	"errors"
	"sync"
	"testing"
	"unsafe"

	"github.com/perch-edge/perch/hal"
)

// The zero Provider works and finds nothing on a machine without these buses.
func TestZeroProviderMissingDevices(t *testing.T) {
	p := &Provider{opts: Options{DevDir: t.TempDir()}}
	defer p.Close()
	if _, err := p.I2CBus(1); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("I2CBus = %v, want hal.ErrNoDevice", err)
	}
	if _, err := p.SPIPort(0, 0); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("SPIPort = %v, want hal.ErrNoDevice", err)
	}
	if _, err := p.GPIOLine(17); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("GPIOLine = %v, want hal.ErrNoDevice", err)
	}
	if _, err := p.UARTPort("ttyAMA0"); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("UARTPort = %v, want hal.ErrNoDevice", err)
	}
	var zero Provider
	if err := zero.Close(); err != nil {
		t.Errorf("Close of the zero Provider = %v", err)
	}
}

// Many goroutines asking for the same bus at once get one handle, opened once, and their
// transactions all reach the kernel.
func TestProviderConcurrentOpen(t *testing.T) {
	k := newFakeKernel()
	i2cAdapter(k, i2cFuncI2C)
	k.handle(i2cRDWR, func(unsafe.Pointer) error { return nil })
	p := fakeProvider(t, k, Options{}, "i2c-1")
	const n = 16
	buses := make([]hal.I2C, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := p.I2CBus(1)
			if err != nil {
				t.Error(err)
				return
			}
			buses[i] = b
			for range 50 {
				if err := b.Tx(context.Background(), 0x76, []byte{0xd0}, make([]byte, 1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, b := range buses[1:] {
		if b != buses[0] {
			t.Fatal("I2CBus(1) returned different handles")
		}
	}
	if c := k.count(i2cFuncs); c != 1 {
		t.Errorf("the bus was opened %d times, want 1", c)
	}
	if c := k.count(i2cRDWR); c != n*50 {
		t.Errorf("%d transfers reached the kernel, want %d", c, n*50)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := buses[0].Tx(context.Background(), 0x76, nil, nil); !errors.Is(err, ErrClosed) || !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("Tx after Close = %v, want ErrClosed and hal.ErrNoDevice", err)
	}
	if _, err := p.I2CBus(1); !errors.Is(err, ErrClosed) {
		t.Errorf("I2CBus after Close = %v, want ErrClosed", err)
	}
}
