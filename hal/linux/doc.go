//go:build linux

// Package linux is the [hal.Provider] over Linux's device files: I2C on /dev/i2c-N, SPI on
// /dev/spidevB.C, GPIO through the character device /dev/gpiochipN (uAPI v2, Linux 5.10 and
// later) and UARTs on ttys.
//
// # Overview
//
// A [Provider] opens each bus, port or line the first time it is asked for, caches the handle,
// and closes them all in [Provider.Close]. Handles are safe for concurrent use: each I2C bus and
// SPI port runs one transaction at a time, and waiting for it honours the caller's context.
//
//   - [I2C]: [I2C.Tx] is one I2C_RDWR ioctl, a write message and a read message joined by a
//     repeated start, so reading a register is one bus transaction. Adapters that only speak
//     SMBus get the equivalent SMBus transfer where there is one.
//   - [SPI]: [SPI.Tx] is one full-duplex SPI_IOC_MESSAGE transfer; mode, word size and clock
//     come from [SPIOptions].
//   - [Line]: a GPIO line requested as an input or an output ([LineOptions]); [Line.WaitEdge]
//     returns edges as the kernel reports them (timestamped in its interrupt handler and queued),
//     not by polling the level.
//   - [UART]: a tty in raw mode at the [UARTOptions] baud rate; [UART.Read] never blocks and
//     returns 0, nil when nothing has arrived; [UART.Write] can be cancelled through its context.
//
// Errors wrap the [hal] sentinel a module must tell apart and also the kernel's errno, so both
// errors.Is(err, hal.ErrNACK) and errors.Is(err, unix.EREMOTEIO) hold. For transfers, EREMOTEIO
// and ENXIO mean [hal.ErrNACK], ETIMEDOUT [hal.ErrTimeout], ENODEV and ESHUTDOWN
// [hal.ErrNoDevice], EBADMSG [hal.ErrCorrupt], EINVAL, EMSGSIZE, ERANGE and EOPNOTSUPP
// [hal.ErrInvalid], anything else [hal.ErrIO]. Opening a device file that does not exist
// (ENOENT, ENODEV, ENXIO) or that is not the expected kind of device (ENOTTY) gives
// [hal.ErrNoDevice]; permission denied gives [hal.ErrIO] wrapping EACCES.
//
// Once an I2C or SPI transfer is in the kernel it cannot be interrupted; the adapter's own
// timeout bounds it. The calls that can block for long, [UART.Write] and [Line.WaitEdge],
// return as soon as their context is done.
//
// Why not periph.io: periph.io/x/host/v3 (v3.8.5) covers these buses, but its sysfs I2C and SPI
// wrap kernel errors with %v, so the errno that tells a NACK from a timeout is lost; none of its
// calls take a context; gpioioctl's WaitForEdge reports neither which edge nor when, cannot be
// cancelled through a context, and it logs through the standard logger; its serial package
// opens only /dev/ttySN and blocks on reads; and its drivers register themselves globally in
// init. This package therefore makes the few ioctls itself with golang.org/x/sys/unix, with the
// kernel's structs declared beside them and their sizes and request numbers checked by tests
// against the uAPI headers.
//
// # Usage
//
//	p, err := linux.New(linux.Options{
//		GPIO: map[int]linux.LineOptions{
//			17: {Bias: linux.BiasPullUp, Edges: linux.EdgeFalling, Debounce: 5 * time.Millisecond},
//			27: {Direction: linux.DirOut},
//		},
//		SPI:  linux.SPIOptions{Mode: linux.SPIMode3, SpeedHz: 5_000_000},
//		UART: linux.UARTOptions{Baud: 9600},
//	})
//	if err != nil { ... }
//	defer p.Close()
//
//	bus, err := p.I2CBus(1)
//	id := make([]byte, 1)
//	err = bus.Tx(ctx, 0x76, []byte{0xd0}, id) // read the BME280's chip id register
//
//	button, err := p.Line(17)
//	for {
//		e, err := button.WaitEdge(ctx) // a press, timestamped by the kernel
//		...
//	}
//
// Provider, I2C, SPI, Line and UART exist on Linux only (the files carry a linux build tag);
// the package uses no cgo and builds for linux/arm64, linux/arm, linux/amd64 and the other
// Linux ports (on ppc64 only the standard baud rates are available).
package linux
