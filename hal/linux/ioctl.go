//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// ioctl request numbers are _IOC(dir, type, nr, size) (include/uapi/asm-generic/ioctl.h).
const (
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = iocSizeShift + iocSizeBits
)

// kernel is the package's only door to ioctl(2). Handles keep the Provider's kernel, so a test
// can stand in for a driver that this machine lacks and inspect the exact bytes it is handed.
type kernel interface {
	// ioctl passes a pointer argument; the memory it points to must stay reachable through
	// Go-typed pointers (or be pinned) for the duration of the call.
	ioctl(fd uintptr, req uint, arg unsafe.Pointer) error
	// ioctlInt passes an integer argument (I2C_SLAVE).
	ioctlInt(fd uintptr, req uint, arg uintptr) error
}

// sysKernel is the real kernel.
type sysKernel struct{}

func (sysKernel) ioctl(fd uintptr, req uint, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return e
		}
	}
}

func (sysKernel) ioctlInt(fd uintptr, req uint, arg uintptr) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), arg)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return e
		}
	}
}

// device is an open device file and the kernel that serves its ioctls.
type device struct {
	f  *os.File
	rc syscall.RawConn
	k  kernel
}

func newDevice(f *os.File, k kernel) (device, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return device{}, err
	}
	return device{f: f, rc: rc, k: k}, nil
}

// ioctl runs a pointer ioctl on the device. Once the file is closed it fails with an error
// wrapping [ErrClosed] and [hal.ErrNoDevice], and never touches a reused descriptor number.
func (d device) ioctl(req uint, arg unsafe.Pointer) error {
	var e error
	if err := d.rc.Control(func(fd uintptr) { e = d.k.ioctl(fd, req, arg) }); err != nil {
		return errClosed
	}
	return e
}

func (d device) ioctlInt(req uint, arg uintptr) error {
	var e error
	if err := d.rc.Control(func(fd uintptr) { e = d.k.ioctlInt(fd, req, arg) }); err != nil {
		return errClosed
	}
	return e
}

// ErrClosed is wrapped (together with [hal.ErrNoDevice]) by every call on a [Provider] or a
// handle after [Provider.Close].
var ErrClosed = errors.New("linux: provider closed")

var errClosed = fmt.Errorf("%w: %w", ErrClosed, hal.ErrNoDevice)

// phase tells errno mapping whether a device was being opened or used: ENXIO means "no such
// device" from open(2) but "address not acknowledged" from an I2C transfer.
type phase uint8

const (
	opening phase = iota
	transfer
)

var halSentinels = []error{hal.ErrNACK, hal.ErrTimeout, hal.ErrNoDevice, hal.ErrIO, hal.ErrCorrupt, hal.ErrInvalid}

// halError returns the hal sentinel for an error from the kernel. Errnos follow the kernel's
// Documentation/i2c/fault-codes.rst for transfers; anything unknown is [hal.ErrIO].
func halError(err error, ph phase) error {
	switch {
	case errors.Is(err, ErrClosed):
		return hal.ErrNoDevice
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	for _, s := range halSentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return hal.ErrIO
	}
	if ph == opening {
		switch errno {
		case unix.ENOENT, unix.ENODEV, unix.ENXIO, unix.ENOTTY, unix.ENOTDIR:
			return hal.ErrNoDevice
		case unix.EINVAL:
			return hal.ErrInvalid
		}
		return hal.ErrIO
	}
	switch errno {
	case unix.EREMOTEIO, unix.ENXIO:
		return hal.ErrNACK
	case unix.ETIMEDOUT:
		return hal.ErrTimeout
	case unix.ENODEV, unix.ESHUTDOWN, unix.ENOENT:
		return hal.ErrNoDevice
	case unix.EBADMSG:
		return hal.ErrCorrupt
	case unix.EINVAL, unix.EMSGSIZE, unix.ERANGE, unix.EOPNOTSUPP:
		return hal.ErrInvalid
	}
	return hal.ErrIO
}

// wrap prefixes err with what was being done and wraps both its hal sentinel and err itself, so
// that errors.Is works for hal.ErrNACK as well as for unix.EREMOTEIO or fs.ErrPermission.
func wrap(err error, ph phase, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	s := halError(err, ph)
	if s == err || errors.Is(err, s) {
		return fmt.Errorf("linux: %s: %w", what, err)
	}
	return fmt.Errorf("linux: %s: %w: %w", what, s, err)
}

// ctxLock is a mutex whose Lock gives up when the context is done.
type ctxLock chan struct{}

func newCtxLock() ctxLock { return make(ctxLock, 1) }

func (l ctxLock) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l ctxLock) unlock() { <-l }

// cancelable runs op, a blocking read or write on a pollable file, and makes it return early
// when ctx is done by moving the file's deadline (through set, SetReadDeadline or
// SetWriteDeadline) into the past. It leaves the deadline cleared. A deadline error caused by
// ctx comes back as ctx.Err(). The caller serialises calls that share a deadline.
func cancelable(ctx context.Context, set func(time.Time) error, op func() error) error {
	if ctx.Done() == nil {
		return op()
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		set(time.Unix(1, 0))
		close(fired)
	})
	err := op()
	if !stop() {
		<-fired
		set(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ctx.Err()
		}
	}
	return err
}
