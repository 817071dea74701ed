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

// i2cAdapter makes k answer I2C_FUNCS with funcs.
func i2cAdapter(k *fakeKernel, funcs uintptr) {
	k.handle(i2cFuncs, func(arg unsafe.Pointer) error {
		*(*uintptr)(arg) = funcs
		return nil
	})
}

func TestI2CRegisterReadIsOneCombinedTransfer(t *testing.T) {
	k := newFakeKernel()
	i2cAdapter(k, i2cFuncI2C)
	var seen []i2cMsg
	var wrote []byte
	k.handle(i2cRDWR, func(arg unsafe.Pointer) error {
		d := (*i2cRDWRData)(arg)
		msgs := unsafe.Slice((*i2cMsg)(d.msgs), d.nmsgs)
		seen = append(seen[:0], msgs...)
		for _, m := range msgs {
			buf := unsafe.Slice((*byte)(m.buf), m.len)
			if m.flags&i2cMRd != 0 {
				for i := range buf {
					buf[i] = 0x60 + byte(i)
				}
			} else {
				wrote = append(wrote[:0], buf...)
			}
		}
		return nil
	})
	p := fakeProvider(t, k, Options{}, "i2c-1")
	bus, err := p.I2CBus(1)
	if err != nil {
		t.Fatal(err)
	}
	r := make([]byte, 2)
	if err := bus.Tx(context.Background(), 0x76, []byte{0xd0}, r); err != nil {
		t.Fatal(err)
	}
	if k.count(i2cRDWR) != 1 {
		t.Fatalf("%d I2C_RDWR ioctls, want 1", k.count(i2cRDWR))
	}
	if len(seen) != 2 {
		t.Fatalf("%d messages, want 2 (write, then read after a repeated start)", len(seen))
	}
	if m := seen[0]; m.addr != 0x76 || m.flags != 0 || m.len != 1 {
		t.Errorf("write message = addr 0x%x flags 0x%x len %d, want 0x76 0 1", m.addr, m.flags, m.len)
	}
	if m := seen[1]; m.addr != 0x76 || m.flags != i2cMRd || m.len != 2 {
		t.Errorf("read message = addr 0x%x flags 0x%x len %d, want 0x76 I2C_M_RD 2", m.addr, m.flags, m.len)
	}
	if !bytes.Equal(wrote, []byte{0xd0}) || !bytes.Equal(r, []byte{0x60, 0x61}) {
		t.Errorf("wrote % x read % x, want d0 and 60 61", wrote, r)
	}

	// Write only, read only, and an address probe: one message each.
	for _, tt := range []struct {
		w, r  []byte
		flags uint16
		n     uint16
	}{
		{[]byte{0xf4, 0x27}, nil, 0, 2},
		{nil, make([]byte, 3), i2cMRd, 3},
		{nil, nil, 0, 0},
	} {
		if err := bus.Tx(context.Background(), 0x77, tt.w, tt.r); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 1 || seen[0].flags != tt.flags || seen[0].len != tt.n || seen[0].addr != 0x77 {
			t.Errorf("Tx(w=%d, r=%d): messages %+v, want one with flags %d len %d", len(tt.w), len(tt.r), seen, tt.flags, tt.n)
		}
	}

	again, err := p.I2CBus(1)
	if err != nil || again != bus {
		t.Errorf("second I2CBus(1) = %p, %v; want the cached %p", again, err, bus)
	}
}

func TestI2CErrors(t *testing.T) {
	k := newFakeKernel()
	i2cAdapter(k, i2cFuncI2C)
	var next error
	k.handle(i2cRDWR, func(unsafe.Pointer) error { return next })
	p := fakeProvider(t, k, Options{}, "i2c-1")
	bus, err := p.I2CBus(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		errno unix.Errno
		want  error
	}{
		{unix.EREMOTEIO, hal.ErrNACK},
		{unix.ENXIO, hal.ErrNACK},
		{unix.ETIMEDOUT, hal.ErrTimeout},
		{unix.ENODEV, hal.ErrNoDevice},
		{unix.EIO, hal.ErrIO},
	} {
		next = tt.errno
		err := bus.Tx(ctx, 0x76, []byte{0}, make([]byte, 1))
		if !errors.Is(err, tt.want) || !errors.Is(err, tt.errno) {
			t.Errorf("kernel %v: Tx = %v, want %v wrapping the errno", tt.errno, err, tt.want)
		}
	}
	next = nil
	for _, tt := range []struct {
		name string
		addr uint16
		w, r []byte
	}{
		{"10-bit address", 0x80, []byte{0}, nil},
		{"write too long", 0x76, make([]byte, 8193), nil},
		{"read too long", 0x76, nil, make([]byte, 8193)},
	} {
		if err := bus.Tx(ctx, tt.addr, tt.w, tt.r); !errors.Is(err, hal.ErrInvalid) {
			t.Errorf("%s: Tx = %v, want hal.ErrInvalid", tt.name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	n := k.count(i2cRDWR)
	if err := bus.Tx(cctx, 0x76, []byte{0}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Tx with a cancelled context = %v, want context.Canceled", err)
	}
	if k.count(i2cRDWR) != n {
		t.Error("Tx with a cancelled context reached the kernel")
	}
}

// An SMBus-only adapter (i2c-stub, a PC's SMBus controller) gets the SMBus transfer that puts
// the same bytes on the wire.
func TestI2CSMBusFallback(t *testing.T) {
	k := newFakeKernel()
	i2cAdapter(k, i2cFuncSMBusQuick|i2cFuncSMBusReadByte|i2cFuncSMBusWriteByte|i2cFuncSMBusReadByteD|
		i2cFuncSMBusWriteByteD|i2cFuncSMBusReadI2CBlk|i2cFuncSMBusWriteI2CBlk)
	regs := make([]byte, 256)
	var ptr byte
	var slave uintptr
	k.onInt = func(req uint, arg uintptr) error {
		if req != i2cSlave {
			return unix.ENOTTY
		}
		slave = arg
		return nil
	}
	type call struct {
		rw, cmd byte
		size    uint32
	}
	var calls []call
	k.handle(i2cSMBus, func(arg unsafe.Pointer) error {
		x := (*i2cSMBusData)(arg)
		if slave != 0x50 {
			return unix.ENXIO
		}
		blk := (*[i2cSMBusDataSize]byte)(x.data)
		calls = append(calls, call{x.readWrite, x.command, x.size})
		switch {
		case x.size == i2cSMBusQuick:
		case x.size == i2cSMBusByte && x.readWrite == i2cSMBusWrite:
			ptr = x.command
		case x.size == i2cSMBusByte:
			blk[0] = regs[ptr]
			ptr++
		case x.size == i2cSMBusByteData && x.readWrite == i2cSMBusWrite:
			regs[x.command] = blk[0]
		case x.size == i2cSMBusByteData:
			blk[0] = regs[x.command]
		case x.size == i2cSMBusI2CBlock && x.readWrite == i2cSMBusWrite:
			copy(regs[x.command:], blk[1:1+blk[0]])
		case x.size == i2cSMBusI2CBlock:
			copy(blk[1:1+blk[0]], regs[x.command:])
		default:
			return unix.EOPNOTSUPP
		}
		return nil
	})
	p := fakeProvider(t, k, Options{}, "i2c-0")
	bus, err := p.I2CBus(0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must := func(w, r []byte) {
		t.Helper()
		if err := bus.Tx(ctx, 0x50, w, r); err != nil {
			t.Fatalf("Tx(% x, %d) = %v", w, len(r), err)
		}
	}
	must([]byte{0x10, 0xaa}, nil)          // write byte data
	must([]byte{0x20, 1, 2, 3, 4, 5}, nil) // I2C block write
	one := make([]byte, 1)
	must([]byte{0x10}, one) // read byte data
	if one[0] != 0xaa {
		t.Errorf("register 0x10 = %#x, want 0xaa", one[0])
	}
	five := make([]byte, 5)
	must([]byte{0x20}, five) // I2C block read
	if !bytes.Equal(five, []byte{1, 2, 3, 4, 5}) {
		t.Errorf("registers 0x20.. = % x, want 01 02 03 04 05", five)
	}
	must([]byte{0x21}, nil) // send byte: set the pointer
	must(nil, one)          // receive byte
	if one[0] != 2 {
		t.Errorf("receive byte = %d, want 2", one[0])
	}
	must(nil, nil) // quick
	want := []call{
		{i2cSMBusWrite, 0x10, i2cSMBusByteData},
		{i2cSMBusWrite, 0x20, i2cSMBusI2CBlock},
		{i2cSMBusRead, 0x10, i2cSMBusByteData},
		{i2cSMBusRead, 0x20, i2cSMBusI2CBlock},
		{i2cSMBusWrite, 0x21, i2cSMBusByte},
		{i2cSMBusRead, 0, i2cSMBusByte},
		{i2cSMBusWrite, 0, i2cSMBusQuick},
	}
	if len(calls) != len(want) {
		t.Fatalf("SMBus calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("SMBus call %d = %+v, want %+v", i, calls[i], want[i])
		}
	}
	if len(k.intCalls) != 1 {
		t.Errorf("%d I2C_SLAVE calls for one address, want 1", len(k.intCalls))
	}
	// Transactions SMBus cannot express, and an absent device.
	for _, tt := range []struct{ w, r []byte }{
		{[]byte{1, 2}, make([]byte, 1)},
		{[]byte{1}, make([]byte, 33)},
		{nil, make([]byte, 2)},
		{make([]byte, 34), nil},
	} {
		if err := bus.Tx(ctx, 0x50, tt.w, tt.r); !errors.Is(err, hal.ErrInvalid) {
			t.Errorf("Tx(%d out, %d in) on SMBus = %v, want hal.ErrInvalid", len(tt.w), len(tt.r), err)
		}
	}
	if err := bus.Tx(ctx, 0x51, []byte{0}, one); !errors.Is(err, hal.ErrNACK) {
		t.Errorf("Tx to an absent address = %v, want hal.ErrNACK", err)
	}
}

func TestI2COpenErrors(t *testing.T) {
	// Real kernel: no such file, and a file that is not an I2C adapter (ENOTTY).
	p := fakeProvider(t, sysKernel{}, Options{}, "i2c-3")
	for _, n := range []int{-1, 2, 3} {
		if _, err := p.I2CBus(n); !errors.Is(err, hal.ErrNoDevice) {
			t.Errorf("I2CBus(%d) = %v, want hal.ErrNoDevice", n, err)
		}
	}
}
