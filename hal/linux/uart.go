//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// Parity is a UART's parity bit.
type Parity uint8

const (
	ParityNone Parity = iota // no parity bit
	ParityOdd                // odd parity
	ParityEven               // even parity
)

// DefaultBaud is the rate of a UART whose [UARTOptions.Baud] is 0.
const DefaultBaud = 9600

// UARTOptions configures one serial port. The zero value is 9600 baud, 8 data bits, no parity,
// 1 stop bit, no flow control (9600 8N1).
type UARTOptions struct {
	// Baud is the line rate in bits per second; 0 means DefaultBaud. The standard rates
	// (50 to 4000000) work with every driver; another rate is asked for with BOTHER (termios2),
	// which most modern drivers honour, and fails with hal.ErrInvalid where the driver
	// cannot do it.
	Baud     int
	DataBits int // 5 to 8; 0 means 8
	Parity   Parity
	StopBits int  // 1 or 2; 0 means 1
	RTSCTS   bool // hardware flow control on the RTS and CTS lines
}

func (o UARTOptions) validate() error {
	var errs []error
	if o.Baud < 0 || o.Baud > 1<<31-1 {
		errs = append(errs, fmt.Errorf("baud %d: %w", o.Baud, hal.ErrInvalid))
	}
	if o.DataBits != 0 && (o.DataBits < 5 || o.DataBits > 8) {
		errs = append(errs, fmt.Errorf("%d data bits: %w", o.DataBits, hal.ErrInvalid))
	}
	if o.Parity > ParityEven {
		errs = append(errs, fmt.Errorf("parity %d: %w", o.Parity, hal.ErrInvalid))
	}
	if o.StopBits != 0 && o.StopBits != 1 && o.StopBits != 2 {
		errs = append(errs, fmt.Errorf("%d stop bits: %w", o.StopBits, hal.ErrInvalid))
	}
	return errors.Join(errs...)
}

func (o UARTOptions) baud() int {
	if o.Baud == 0 {
		return DefaultBaud
	}
	return o.Baud
}

// stdBauds maps the rates that have a Bnnn code to it.
var stdBauds = map[int]uint32{
	50: unix.B50, 75: unix.B75, 110: unix.B110, 134: unix.B134, 150: unix.B150, 200: unix.B200,
	300: unix.B300, 600: unix.B600, 1200: unix.B1200, 1800: unix.B1800, 2400: unix.B2400,
	4800: unix.B4800, 9600: unix.B9600, 19200: unix.B19200, 38400: unix.B38400,
	57600: unix.B57600, 115200: unix.B115200, 230400: unix.B230400, 460800: unix.B460800,
	500000: unix.B500000, 576000: unix.B576000, 921600: unix.B921600, 1000000: unix.B1000000,
	1152000: unix.B1152000, 1500000: unix.B1500000, 2000000: unix.B2000000,
	2500000: unix.B2500000, 3000000: unix.B3000000, 3500000: unix.B3500000,
	4000000: unix.B4000000,
}

// makeRaw sets t up like cfmakeraw(3) plus the framing of o and non-blocking reads
// (VMIN = VTIME = 0). It leaves the baud rate alone.
func makeRaw(t *unix.Termios, o UARTOptions) {
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR |
		unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY | unix.INPCK
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CMSPAR | unix.CSTOPB | unix.CRTSCTS
	t.Cflag |= unix.CREAD | unix.CLOCAL
	switch o.DataBits {
	case 5:
		t.Cflag |= unix.CS5
	case 6:
		t.Cflag |= unix.CS6
	case 7:
		t.Cflag |= unix.CS7
	default:
		t.Cflag |= unix.CS8
	}
	switch o.Parity {
	case ParityOdd:
		t.Cflag |= unix.PARENB | unix.PARODD
		t.Iflag |= unix.INPCK
	case ParityEven:
		t.Cflag |= unix.PARENB
		t.Iflag |= unix.INPCK
	}
	if o.StopBits == 2 {
		t.Cflag |= unix.CSTOPB
	}
	if o.RTSCTS {
		t.Cflag |= unix.CRTSCTS
	}
	t.Cc[unix.VMIN] = 0
	t.Cc[unix.VTIME] = 0
}

// framing is the c_cflag bits that must read back as set, or the bytes on the wire differ
// from what was asked for (a pty, for one, forces CS8 and no parity).
const framing = unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CRTSCTS

// configureTTY puts the tty fd in raw mode with o's framing and rate, checks that the driver
// kept both, and discards input that arrived before.
func configureTTY(fd int, o UARTOptions) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("not a tty: %w", err)
	}
	makeRaw(t, o)
	baud := o.baud()
	code, std := stdBauds[baud]
	if std {
		t.Cflag &^= unix.CBAUD | unix.CIBAUD
		t.Cflag |= code
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
			return fmt.Errorf("set termios: %w", err)
		}
	} else if err := setOtherBaud(fd, t, baud); err != nil {
		return err
	}
	got, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("get termios: %w", err)
	}
	if std && got.Cflag&unix.CBAUD != code {
		return fmt.Errorf("the driver does not do %d baud: %w", baud, hal.ErrInvalid)
	}
	if got.Cflag&framing != t.Cflag&framing {
		return fmt.Errorf("the driver does not do this framing (asked c_cflag %#o, got %#o): %w",
			t.Cflag&framing, got.Cflag&framing, hal.ErrInvalid)
	}
	if err := unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH); err != nil {
		return fmt.Errorf("flush input: %w", err)
	}
	return nil
}

// UART is one serial port in raw mode. Get it from [Provider.UARTPort]. It is safe for
// concurrent use; writes are serialised.
type UART struct {
	path string
	f    *os.File
	rc   syscall.RawConn
	wmu  ctxLock
}

func openUART(path string, o UARTOptions) (*UART, error) {
	what := fmt.Sprintf("uart %s", path)
	// O_NONBLOCK: opening does not wait for carrier detect, and Go's poller serves the file.
	f, err := openFile(path, unix.O_NOCTTY|unix.O_NONBLOCK, what)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, wrap(err, opening, "%s", what)
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = configureTTY(int(fd), o) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		f.Close()
		return nil, wrap(cerr, opening, "%s", what)
	}
	return &UART{path: path, f: f, rc: rc, wmu: newCtxLock()}, nil
}

// Read implements [hal.UART]: it copies up to len(p) bytes that have arrived into p and never
// waits; with nothing pending it returns 0, nil. Errors wrap [hal.ErrNoDevice] after
// [Provider.Close] and [hal.ErrIO] otherwise (a USB adapter pulled out reads as EIO).
func (u *UART) Read(ctx context.Context, p []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("linux: uart %s: %w", u.path, err)
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var e error
	if err := u.rc.Control(func(fd uintptr) {
		for {
			n, e = unix.Read(int(fd), p)
			if e != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return 0, fmt.Errorf("linux: uart %s: %w", u.path, errClosed)
	}
	switch {
	case e == unix.EAGAIN:
		return 0, nil
	case e != nil:
		return 0, wrap(e, transfer, "uart %s: read", u.path)
	case n < 0:
		return 0, nil
	}
	return n, nil
}

// Write implements [hal.UART]: it returns once the kernel has taken all of p (the bytes then
// leave at the baud rate), or when ctx is done, with the count taken so far and an error
// wrapping ctx.Err(). Errors otherwise wrap [hal.ErrNoDevice] after [Provider.Close] and
// [hal.ErrIO].
func (u *UART) Write(ctx context.Context, p []byte) (int, error) {
	if err := u.wmu.lock(ctx); err != nil {
		return 0, fmt.Errorf("linux: uart %s: %w", u.path, err)
	}
	defer u.wmu.unlock()
	var n int
	err := cancelable(ctx, u.f.SetWriteDeadline, func() (err error) {
		n, err = u.f.Write(p)
		return err
	})
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, os.ErrClosed):
		return n, fmt.Errorf("linux: uart %s: %w", u.path, errClosed)
	}
	return n, wrap(err, transfer, "uart %s: write", u.path)
}
