//go:build linux

package linux

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/perch-edge/perch/hal"
)

// i2c-dev ioctls and flags (include/uapi/linux/i2c-dev.h, include/uapi/linux/i2c.h).
const (
	i2cSlave = 0x0703 // set the address of the next SMBus transfer
	i2cFuncs = 0x0705 // read the adapter's I2C_FUNC_* bits (unsigned long)
	i2cRDWR  = 0x0707 // combined transfer: struct i2c_rdwr_ioctl_data
	i2cSMBus = 0x0720 // one SMBus transfer: struct i2c_smbus_ioctl_data

	i2cMRd = 0x0001 // i2c_msg.flags: read from the device

	i2cFuncI2C              = 0x00000001
	i2cFuncSMBusQuick       = 0x00010000
	i2cFuncSMBusReadByte    = 0x00020000
	i2cFuncSMBusWriteByte   = 0x00040000
	i2cFuncSMBusReadByteD   = 0x00080000
	i2cFuncSMBusWriteByteD  = 0x00100000
	i2cFuncSMBusReadI2CBlk  = 0x04000000
	i2cFuncSMBusWriteI2CBlk = 0x08000000

	i2cSMBusRead        = 1
	i2cSMBusWrite       = 0
	i2cSMBusQuick       = 0
	i2cSMBusByte        = 1
	i2cSMBusByteData    = 2
	i2cSMBusI2CBlock    = 8
	i2cSMBusBlockMax    = 32
	i2cRDWRMaxMsgLen    = 8192 // i2c-dev refuses longer messages
	i2cSMBusDataSize    = i2cSMBusBlockMax + 2
	i2cMaxAddr7         = 0x7f
	i2cMaxTransferBytes = i2cRDWRMaxMsgLen
)

// i2cMsg is struct i2c_msg: __u16 addr, flags, len; __u8 *buf. 16 bytes on 64-bit, 12 on 32-bit.
type i2cMsg struct {
	addr  uint16
	flags uint16
	len   uint16
	buf   unsafe.Pointer
}

// i2cRDWRData is struct i2c_rdwr_ioctl_data: struct i2c_msg *msgs; __u32 nmsgs.
type i2cRDWRData struct {
	msgs  unsafe.Pointer
	nmsgs uint32
}

// i2cSMBusData is struct i2c_smbus_ioctl_data: __u8 read_write, command; __u32 size;
// union i2c_smbus_data *data.
type i2cSMBusData struct {
	readWrite uint8
	command   uint8
	size      uint32
	data      unsafe.Pointer
}

// I2C is one I2C bus, /dev/i2c-N. Get it from [Provider.I2CBus]. It is safe for concurrent use:
// transactions on one bus run one at a time, and waiting for the bus honours the context.
//
// On an adapter that speaks plain I2C (every SoC controller on a Raspberry Pi or a Jetson), a
// transaction is one I2C_RDWR ioctl: a write message, a repeated start, a read message. On an
// SMBus-only adapter (a PC's SMBus controller, i2c-stub) the transactions that SMBus can express
// are sent as SMBus transfers: quick write (no bytes), receive/send byte, read/write byte data,
// and I2C block read/write (a register byte plus up to 32 bytes); others fail with
// [hal.ErrInvalid].
type I2C struct {
	n     int
	dev   device
	funcs uintptr // I2C_FUNC_* (an unsigned long)
	mu    ctxLock
	addr  int // address set with I2C_SLAVE for SMBus transfers, or -1
}

func openI2C(k kernel, path string, n int) (*I2C, error) {
	what := fmt.Sprintf("i2c bus %d (%s)", n, path)
	f, err := openFile(path, 0, what)
	if err != nil {
		return nil, err
	}
	dev, err := newDevice(f, k)
	if err != nil {
		return nil, wrap(err, opening, "%s", what)
	}
	b := &I2C{n: n, dev: dev, mu: newCtxLock(), addr: -1}
	if err := dev.ioctl(i2cFuncs, unsafe.Pointer(&b.funcs)); err != nil {
		f.Close()
		return nil, wrap(err, opening, "%s: not an I2C adapter", what)
	}
	return b, nil
}

// Tx implements [hal.I2C]: it writes w to the 7-bit address addr, then reads len(r) bytes into r,
// in one transaction with a repeated start. Each of w and r holds at most 8192 bytes. The
// transfer itself cannot be interrupted once the kernel has it; the adapter's own timeout
// (typically 1 s) bounds it. Errors wrap [hal.ErrNACK] (EREMOTEIO, ENXIO), [hal.ErrTimeout]
// (ETIMEDOUT), [hal.ErrNoDevice] (the adapter went away), [hal.ErrInvalid] (bad address or
// length, or a transaction the adapter cannot do) or [hal.ErrIO], and also the errno itself.
func (b *I2C) Tx(ctx context.Context, addr uint16, w, r []byte) error {
	switch {
	case addr > i2cMaxAddr7:
		return fmt.Errorf("linux: i2c bus %d: address 0x%x is not 7-bit: %w", b.n, addr, hal.ErrInvalid)
	case len(w) > i2cMaxTransferBytes || len(r) > i2cMaxTransferBytes:
		return fmt.Errorf("linux: i2c bus %d address 0x%02x: %d+%d bytes, at most %d each way: %w", b.n, addr, len(w), len(r), i2cMaxTransferBytes, hal.ErrInvalid)
	}
	if err := b.mu.lock(ctx); err != nil {
		return fmt.Errorf("linux: i2c bus %d: %w", b.n, err)
	}
	defer b.mu.unlock()
	var err error
	if b.funcs&i2cFuncI2C != 0 {
		err = b.rdwr(addr, w, r)
	} else {
		err = b.smbus(addr, w, r)
	}
	return wrap(err, transfer, "i2c bus %d address 0x%02x", b.n, addr)
}

// rdwr sends w and r as one I2C_RDWR transfer. With both empty it sends a zero-length write,
// which probes for an ACK.
func (b *I2C) rdwr(addr uint16, w, r []byte) error {
	var msgs [2]i2cMsg
	k := 0
	if len(w) > 0 || len(r) == 0 {
		msgs[k] = i2cMsg{addr: addr, len: uint16(len(w)), buf: bufPtr(w)}
		k++
	}
	if len(r) > 0 {
		msgs[k] = i2cMsg{addr: addr, flags: i2cMRd, len: uint16(len(r)), buf: bufPtr(r)}
		k++
	}
	data := i2cRDWRData{msgs: unsafe.Pointer(&msgs[0]), nmsgs: uint32(k)}
	return b.dev.ioctl(i2cRDWR, unsafe.Pointer(&data))
}

// smbus sends the transaction as the one SMBus transfer that puts the same bytes on the wire.
func (b *I2C) smbus(addr uint16, w, r []byte) error {
	var blk [i2cSMBusDataSize]byte
	x := i2cSMBusData{readWrite: i2cSMBusWrite, data: unsafe.Pointer(&blk)}
	var need uintptr
	switch {
	case len(w) == 0 && len(r) == 0:
		x.size, need = i2cSMBusQuick, i2cFuncSMBusQuick
	case len(w) == 0 && len(r) == 1:
		x.readWrite, x.size, need = i2cSMBusRead, i2cSMBusByte, i2cFuncSMBusReadByte
	case len(w) == 1 && len(r) == 0:
		x.command, x.size, need = w[0], i2cSMBusByte, i2cFuncSMBusWriteByte
	case len(w) == 1 && len(r) == 1:
		x.readWrite, x.command, x.size, need = i2cSMBusRead, w[0], i2cSMBusByteData, i2cFuncSMBusReadByteD
	case len(w) == 1 && len(r) <= i2cSMBusBlockMax:
		x.readWrite, x.command, x.size, need = i2cSMBusRead, w[0], i2cSMBusI2CBlock, i2cFuncSMBusReadI2CBlk
		blk[0] = byte(len(r))
	case len(w) == 2 && len(r) == 0:
		x.command, x.size, need = w[0], i2cSMBusByteData, i2cFuncSMBusWriteByteD
		blk[0] = w[1]
	case len(w) <= i2cSMBusBlockMax+1 && len(r) == 0:
		x.command, x.size, need = w[0], i2cSMBusI2CBlock, i2cFuncSMBusWriteI2CBlk
		blk[0] = byte(len(w) - 1)
		copy(blk[1:], w[1:])
	default:
		return fmt.Errorf("%d bytes out then %d in cannot be sent over an SMBus-only adapter: %w", len(w), len(r), hal.ErrInvalid)
	}
	if b.funcs&need == 0 {
		return fmt.Errorf("the SMBus-only adapter cannot send %d bytes out then %d in (functionality 0x%x): %w", len(w), len(r), b.funcs, hal.ErrInvalid)
	}
	if b.addr != int(addr) {
		if err := b.dev.ioctlInt(i2cSlave, uintptr(addr)); err != nil {
			return fmt.Errorf("I2C_SLAVE (is the address bound to a kernel driver?): %w", err)
		}
		b.addr = int(addr)
	}
	if err := b.dev.ioctl(i2cSMBus, unsafe.Pointer(&x)); err != nil {
		return err
	}
	switch x.size {
	case i2cSMBusByte, i2cSMBusByteData:
		if x.readWrite == i2cSMBusRead {
			r[0] = blk[0]
		}
	case i2cSMBusI2CBlock:
		if x.readWrite == i2cSMBusRead {
			if int(blk[0]) < len(r) {
				return fmt.Errorf("short block read: %d of %d bytes: %w", blk[0], len(r), hal.ErrIO)
			}
			copy(r, blk[1:1+len(r)])
		}
	}
	return nil
}

// bufPtr is the address of p's first byte, or nil for an empty p.
func bufPtr(p []byte) unsafe.Pointer {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Pointer(&p[0])
}
