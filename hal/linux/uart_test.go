//go:build linux

package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// openPTY opens a pseudo-terminal pair and returns the controlling side (non-blocking, served by
// Go's poller) and the path of the terminal side, which stands in for a serial port.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		t.Fatalf("ptsname: %v", err)
	}
	master := os.NewFile(uintptr(fd), "ptmx")
	t.Cleanup(func() { master.Close() })
	return master, fmt.Sprintf("/dev/pts/%d", n)
}

func newUART(t *testing.T, name string, o UARTOptions) (*Provider, *UART) {
	t.Helper()
	p, err := New(Options{UART: o})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u, err := p.UARTPort(name)
	if err != nil {
		t.Fatal(err)
	}
	return p, u.(*UART)
}

// readN reads n bytes from the controlling side.
func readN(t *testing.T, f *os.File, n int) []byte {
	t.Helper()
	f.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer f.SetReadDeadline(time.Time{})
	got := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(got) < n {
		k, err := f.Read(buf[:n-len(got)])
		got = append(got, buf[:k]...)
		if err != nil {
			t.Fatalf("read %d of %d bytes from the pty: %v", len(got), n, err)
		}
	}
	return got
}

// uartReadN calls the non-blocking Read until n bytes have come.
func uartReadN(t *testing.T, u *UART, n int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(got) < n {
		k, err := u.Read(ctx, buf[:n-len(got)])
		if err != nil {
			t.Fatalf("Read after %d of %d bytes: %v", len(got), n, err)
		}
		got = append(got, buf[:k]...)
		if k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return got
}

func TestUARTBytesBothWays(t *testing.T) {
	master, slave := openPTY(t)
	_, u := newUART(t, slave, UARTOptions{Baud: 115200})
	ctx := context.Background()

	// Nothing sent yet: Read returns at once with nothing.
	buf := make([]byte, 64)
	if n, err := u.Read(ctx, buf); n != 0 || err != nil {
		t.Fatalf("Read with nothing pending = %d, %v; want 0, nil", n, err)
	}

	// Raw mode: no newline translation on the way out...
	out := []byte("AT\n\r\x00\xff\x03 binary")
	if n, err := u.Write(ctx, out); n != len(out) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := readN(t, master, len(out)); !bytes.Equal(got, out) {
		t.Errorf("the far end got %q, want %q", got, out)
	}
	// ...and none on the way in: no CR to NL, no line editing, no signals, no echo.
	in := []byte{0x42, 0x4d, '\r', '\n', 0x7f, 0x03, 0x1a, 0x00, 0x1c, 0xff}
	if _, err := master.Write(in); err != nil {
		t.Fatal(err)
	}
	if got := uartReadN(t, u, len(in)); !bytes.Equal(got, in) {
		t.Errorf("Read %q, want %q", got, in)
	}
	master.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := master.Read(buf); n != 0 {
		t.Errorf("the far end got %q back: echo is on", buf[:n])
	}
	if n, err := u.Read(ctx, buf); n != 0 || err != nil {
		t.Errorf("Read after draining = %d, %v; want 0, nil", n, err)
	}
	if n, err := u.Read(ctx, nil); n != 0 || err != nil {
		t.Errorf("Read into an empty buffer = %d, %v", n, err)
	}
}

func TestUARTSettings(t *testing.T) {
	tests := []struct {
		name  string
		o     UARTOptions
		code  uint32 // the Bnnn code, or BOTHER
		speed uint32 // termios2 c_ospeed, for BOTHER
		cflag uint32 // framing bits that must be set
		clear uint32 // framing bits that must be clear
	}{
		{"default 9600 8N1", UARTOptions{}, unix.B9600, 0, unix.CS8 | unix.CREAD | unix.CLOCAL, unix.PARENB | unix.CSTOPB | unix.CRTSCTS},
		{"115200", UARTOptions{Baud: 115200}, unix.B115200, 0, unix.CS8, 0},
		{"4000000", UARTOptions{Baud: 4000000}, unix.B4000000, 0, unix.CS8, 0},
		{"8N2 with RTS/CTS", UARTOptions{Baud: 57600, StopBits: 2, RTSCTS: true},
			unix.B57600, 0, unix.CS8 | unix.CSTOPB | unix.CRTSCTS, unix.PARENB},
		{"250000 (DMX), not a standard rate", UARTOptions{Baud: 250000}, unix.BOTHER, 250000, unix.CS8, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.code == unix.BOTHER && !haveBOTHER {
				t.Skip("no termios2 on this architecture")
			}
			_, slave := openPTY(t)
			newUART(t, slave, tt.o)
			fd, err := unix.Open(slave, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if got := tio.Cflag & unix.CBAUD; got != tt.code {
				t.Errorf("baud code %#o, want %#o", got, tt.code)
			}
			if tt.code == unix.BOTHER {
				speed, err := outputSpeed(fd)
				if err != nil {
					t.Fatal(err)
				}
				if speed != tt.speed {
					t.Errorf("speed %d, want %d", speed, tt.speed)
				}
			}
			if tio.Cflag&tt.cflag != tt.cflag || tio.Cflag&tt.clear != 0 {
				t.Errorf("c_cflag %#o: want %#o set and %#o clear", tio.Cflag, tt.cflag, tt.clear)
			}
			if tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 || tio.Oflag&unix.OPOST != 0 || tio.Iflag&unix.ICRNL != 0 {
				t.Errorf("not raw: c_lflag %#o c_oflag %#o c_iflag %#o", tio.Lflag, tio.Oflag, tio.Iflag)
			}
			if tio.Cc[unix.VMIN] != 0 || tio.Cc[unix.VTIME] != 0 {
				t.Errorf("VMIN %d VTIME %d, want 0 0", tio.Cc[unix.VMIN], tio.Cc[unix.VTIME])
			}
		})
	}
}

// A write the far end does not drain blocks once the pty's buffer is full, and returns when its
// context is done, with the bytes the kernel took so far.
func TestUARTWriteCancel(t *testing.T) {
	master, slave := openPTY(t)
	_, u := newUART(t, slave, UARTOptions{})
	big := bytes.Repeat([]byte("perch"), 1<<18) // 1.25 MiB: far more than a pty buffers

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	n, err := u.Write(ctx, big)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked Write = %d, %v; want context.DeadlineExceeded", n, err)
	}
	if n <= 0 || n >= len(big) {
		t.Errorf("blocked Write took %d of %d bytes, want some but not all", n, len(big))
	}

	// Cancelled by hand, from another goroutine.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := u.Write(ctx, big)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block; the assertion holds either way
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Write cancelled by hand = %v, want context.Canceled", err)
	}

	// The cancellation leaves no deadline behind: once the far end drains, writes go through.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 1<<16)
		for {
			master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := master.Read(buf); err != nil {
				return
			}
		}
	}()
	<-drained
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := u.Write(ctx, []byte("ok")); n != 2 || err != nil {
		t.Fatalf("Write after a cancelled one = %d, %v; want 2, nil", n, err)
	}
	if got := readN(t, master, 2); string(got) != "ok" {
		t.Errorf("the far end got %q, want \"ok\"", got)
	}

	// A context that is already done never starts a write.
	if n, err := u.Write(ctx, nil); n != 0 || err != nil {
		t.Errorf("empty Write = %d, %v", n, err)
	}
	dead, stop := context.WithCancel(context.Background())
	stop()
	if n, err := u.Write(dead, []byte("x")); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a done context = %d, %v; want 0, context.Canceled", n, err)
	}
}

// A pty, like some UART drivers, cannot do parity or short words; it says so by clearing the
// bits, and UARTPort refuses rather than put other bytes on the wire than were asked for.
func TestUARTFramingRefused(t *testing.T) {
	for _, o := range []UARTOptions{{Parity: ParityEven}, {Parity: ParityOdd}, {DataBits: 7}} {
		_, slave := openPTY(t)
		p, err := New(Options{UART: o})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.UARTPort(slave); !errors.Is(err, hal.ErrInvalid) {
			t.Errorf("UARTPort with %+v on a pty = %v, want hal.ErrInvalid", o, err)
		}
		p.Close()
	}
}

func TestUARTCloseUnblocksWrite(t *testing.T) {
	_, slave := openPTY(t)
	p, u := newUART(t, slave, UARTOptions{})
	done := make(chan error, 1)
	go func() {
		_, err := u.Write(context.Background(), make([]byte, 1<<20))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) || !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("Write across Close = %v, want ErrClosed and hal.ErrNoDevice", err)
	}
	if _, err := u.Read(context.Background(), make([]byte, 1)); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("Read after Close = %v, want hal.ErrNoDevice", err)
	}
	if _, err := p.UARTPort(slave); !errors.Is(err, ErrClosed) {
		t.Errorf("UARTPort after Close = %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestUARTConcurrentWrites(t *testing.T) {
	master, slave := openPTY(t)
	_, u := newUART(t, slave, UARTOptions{})
	const writers, each = 4, 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte('a' + i)}, 16)
			for range each {
				if _, err := u.Write(context.Background(), msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	got := readN(t, master, writers*each*16)
	wg.Wait()
	// Writes are serialised: every 16-byte message arrives whole.
	for off := 0; off < len(got); off += 16 {
		if !bytes.Equal(got[off:off+16], bytes.Repeat(got[off:off+1], 16)) {
			t.Fatalf("message at %d interleaved: %q", off, got[off:off+16])
		}
	}
}

func TestUARTPortNames(t *testing.T) {
	_, slave := openPTY(t)
	p, err := New(Options{UARTPorts: map[string]UARTOptions{"pts/x": {Baud: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, err := p.UARTPort(slave)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel("/dev", slave)
	b, err := p.UARTPort(rel) // "pts/N" in DevDir is the same port
	if err != nil || b != a {
		t.Errorf("UARTPort(%q) = %p, %v; want the handle of %q (%p)", rel, b, err, slave, a)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ttyFILE"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	q, err := New(Options{DevDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for name, want := range map[string]error{
		"ttyUSB9":         hal.ErrNoDevice, // no such file
		"ttyFILE":         hal.ErrNoDevice, // not a tty (ENOTTY)
		"/nonexistent/tt": hal.ErrNoDevice,
		"../ttyS0":        hal.ErrInvalid,
		"":                hal.ErrInvalid,
		"tty\x00":         hal.ErrInvalid,
	} {
		if _, err := q.UARTPort(name); !errors.Is(err, want) {
			t.Errorf("UARTPort(%q) = %v, want %v", name, err, want)
		}
	}
}

func TestUARTOptionsValidate(t *testing.T) {
	var errs int
	for _, o := range []UARTOptions{{Baud: -1}, {DataBits: 4}, {DataBits: 9}, {Parity: 3}, {StopBits: 3}} {
		if _, err := New(Options{UART: o}); !errors.Is(err, hal.ErrInvalid) {
			t.Errorf("New with UART %+v = %v, want hal.ErrInvalid", o, err)
		}
	}
	// Every problem at once.
	_, err := New(Options{
		UART:      UARTOptions{DataBits: 4},
		UARTPorts: map[string]UARTOptions{"ttyS0": {StopBits: 5}},
		SPI:       SPIOptions{Mode: 0x1000},
		Consumer:  "a consumer label that is much too long",
	})
	for _, part := range []string{"data bits", "stop bits", "mode", "consumer"} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(part)) {
			t.Errorf("New with four bad options: %v; want it to mention %q", err, part)
			errs++
		}
	}
}
