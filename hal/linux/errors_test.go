//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

func TestHalError(t *testing.T) {
	tests := []struct {
		err  error
		ph   phase
		want error
	}{
		// Transfers (Documentation/i2c/fault-codes.rst).
		{unix.EREMOTEIO, transfer, hal.ErrNACK},
		{unix.ENXIO, transfer, hal.ErrNACK},
		{unix.ETIMEDOUT, transfer, hal.ErrTimeout},
		{unix.ENODEV, transfer, hal.ErrNoDevice},
		{unix.ESHUTDOWN, transfer, hal.ErrNoDevice},
		{unix.EBADMSG, transfer, hal.ErrCorrupt},
		{unix.EINVAL, transfer, hal.ErrInvalid},
		{unix.EMSGSIZE, transfer, hal.ErrInvalid},
		{unix.EOPNOTSUPP, transfer, hal.ErrInvalid},
		{unix.EIO, transfer, hal.ErrIO},
		{unix.EAGAIN, transfer, hal.ErrIO}, // arbitration lost
		{unix.EPROTO, transfer, hal.ErrIO},
		{unix.EBUSY, transfer, hal.ErrIO},
		// Opening.
		{unix.ENOENT, opening, hal.ErrNoDevice},
		{unix.ENODEV, opening, hal.ErrNoDevice},
		{unix.ENXIO, opening, hal.ErrNoDevice},
		{unix.ENOTTY, opening, hal.ErrNoDevice},
		{unix.EACCES, opening, hal.ErrIO},
		{unix.EBUSY, opening, hal.ErrIO},
		{&os.PathError{Op: "open", Path: "/dev/i2c-9", Err: unix.ENOENT}, opening, hal.ErrNoDevice},
		// Not errnos.
		{errClosed, transfer, hal.ErrNoDevice},
		{fmt.Errorf("x: %w", hal.ErrInvalid), transfer, hal.ErrInvalid},
		{context.DeadlineExceeded, transfer, context.DeadlineExceeded},
		{errors.New("something else"), transfer, hal.ErrIO},
	}
	for _, tt := range tests {
		if got := halError(tt.err, tt.ph); got != tt.want {
			t.Errorf("halError(%v, %d) = %v, want %v", tt.err, tt.ph, got, tt.want)
		}
	}
}

// wrap keeps both the sentinel and the errno reachable through errors.Is.
func TestWrapKeepsErrno(t *testing.T) {
	err := wrap(unix.EREMOTEIO, transfer, "i2c bus %d address 0x%02x", 1, 0x76)
	for _, target := range []error{hal.ErrNACK, unix.EREMOTEIO} {
		if !errors.Is(err, target) {
			t.Errorf("%v does not wrap %v", err, target)
		}
	}
	err = wrap(&os.PathError{Op: "open", Path: "/dev/i2c-1", Err: unix.EACCES}, opening, "i2c bus 1")
	if !errors.Is(err, hal.ErrIO) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("%v: want hal.ErrIO and fs.ErrPermission", err)
	}
	if wrap(nil, transfer, "x") != nil {
		t.Error("wrap(nil) != nil")
	}
}

func TestCtxLock(t *testing.T) {
	l := newCtxLock()
	if err := l.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.lock(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("lock of a held lock with a done context = %v, want context.Canceled", err)
	}
	l.unlock()
	if err := l.lock(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("lock with a done context = %v, want context.Canceled even when free", err)
	}
}
