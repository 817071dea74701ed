//go:build linux

package linux

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// spidev answers the setup ioctls and loops MOSI back to MISO with each byte inverted.
func spidev(k *fakeKernel, got *spiIOCTransfer, mode *uint32, bits *uint8, speed *uint32) {
	k.handle(spiIOCWrMode, func(a unsafe.Pointer) error { *mode = uint32(*(*uint8)(a)); return nil })
	k.handle(spiIOCWrMode32, func(a unsafe.Pointer) error { *mode = *(*uint32)(a); return nil })
	k.handle(spiIOCWrBitsPerWord, func(a unsafe.Pointer) error { *bits = *(*uint8)(a); return nil })
	k.handle(spiIOCWrMaxSpeedHz, func(a unsafe.Pointer) error { *speed = *(*uint32)(a); return nil })
	k.handle(spiIOCMessage1, func(a unsafe.Pointer) error {
		t := (*spiIOCTransfer)(a)
		*got = *t
		tx, rx := goBytes(&t.txBuf, t.len), goBytes(&t.rxBuf, t.len)
		for i := range tx {
			rx[i] = ^tx[i]
		}
		return nil
	})
}

func TestSPITransfer(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the fake spidev reads buffer addresses as 64-bit")
	}
	k := newFakeKernel()
	var got spiIOCTransfer
	var mode, speed uint32
	var bits uint8
	spidev(k, &got, &mode, &bits, &speed)
	p := fakeProvider(t, k, Options{
		SPIPorts: map[SPIPortID]SPIOptions{{0, 1}: {Mode: SPIMode3, SpeedHz: 5_000_000}},
	}, "spidev0.0", "spidev0.1")

	port, err := p.SPIPort(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if mode != SPIMode3 || bits != 8 || speed != 5_000_000 {
		t.Errorf("port 0.1 set up as mode %d, %d bits, %d Hz; want 3, 8, 5000000", mode, bits, speed)
	}
	w := []byte{0x80 | 0x32, 0, 0, 0, 0, 0, 0}
	r := make([]byte, len(w))
	if err := port.Tx(context.Background(), w, r); err != nil {
		t.Fatal(err)
	}
	if got.len != uint32(len(w)) || got.speedHz != 5_000_000 || got.bitsPerWord != 8 || got.csChange != 0 {
		t.Errorf("transfer = %+v, want len 7 at 5 MHz, 8 bits, cs_change 0", got)
	}
	want := []byte{^byte(0xb2), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if !bytes.Equal(r, want) {
		t.Errorf("read % x, want % x", r, want)
	}

	if _, err := p.SPIPort(0, 0); err != nil {
		t.Fatal(err)
	}
	if mode != SPIMode0 || speed != DefaultSPISpeedHz {
		t.Errorf("port 0.0 (defaults) set up as mode %d at %d Hz; want 0 at %d", mode, speed, DefaultSPISpeedHz)
	}

	if err := port.Tx(context.Background(), []byte{1, 2}, make([]byte, 1)); !errors.Is(err, hal.ErrInvalid) {
		t.Errorf("Tx with unequal lengths = %v, want hal.ErrInvalid", err)
	}
	if err := port.Tx(context.Background(), nil, nil); err != nil {
		t.Errorf("empty Tx = %v, want nil", err)
	}
	k.handle(spiIOCMessage1, func(unsafe.Pointer) error { return unix.EMSGSIZE })
	if err := port.Tx(context.Background(), make([]byte, 5000), make([]byte, 5000)); !errors.Is(err, hal.ErrInvalid) || !errors.Is(err, unix.EMSGSIZE) {
		t.Errorf("Tx over spidev's bufsiz = %v, want hal.ErrInvalid wrapping EMSGSIZE", err)
	}
}

func TestSPIOpenErrors(t *testing.T) {
	k := newFakeKernel()
	k.handle(spiIOCWrMode, func(unsafe.Pointer) error { return unix.EINVAL })
	p := fakeProvider(t, k, Options{SPI: SPIOptions{Mode: SPILSBFirst}}, "spidev1.0")
	if _, err := p.SPIPort(1, 0); !errors.Is(err, hal.ErrInvalid) {
		t.Errorf("SPIPort with a mode the driver refuses = %v, want hal.ErrInvalid", err)
	}
	real := fakeProvider(t, sysKernel{}, Options{}, "spidev0.0")
	for _, id := range []SPIPortID{{0, 0}, {0, 1}, {-1, 0}} {
		if _, err := real.SPIPort(id.Bus, id.CS); !errors.Is(err, hal.ErrNoDevice) {
			t.Errorf("SPIPort(%d, %d) = %v, want hal.ErrNoDevice", id.Bus, id.CS, err)
		}
	}
}
