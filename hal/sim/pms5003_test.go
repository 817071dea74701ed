package sim_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

const byteTime = time.Second * 10 / 9600

// airSignals: constant values, each its own so that a swap shows.
var airSignals = sim.PMS5003Signals{
	PM1: sim.Signal{Value: 5}, PM25: sim.Signal{Value: 8}, PM10: sim.Signal{Value: 11},
	PM1Atm: sim.Signal{Value: 4}, PM25Atm: sim.Signal{Value: 7}, PM10Atm: sim.Signal{Value: 10},
	N03: sim.Signal{Value: 825}, N05: sim.Signal{Value: 237}, N1: sim.Signal{Value: 44},
	N25: sim.Signal{Value: 4}, N5: sim.Signal{Value: 1}, N10: sim.Signal{Value: 0},
}

// airFrame is the frame of airSignals, written out from the data manual's layout.
var airFrame = []byte{
	0x42, 0x4D, 0x00, 0x1C, // start characters, frame length 28
	0x00, 0x05, 0x00, 0x08, 0x00, 0x0B, // PM1.0, PM2.5, PM10 (CF=1)
	0x00, 0x04, 0x00, 0x07, 0x00, 0x0A, // the same, atmospheric
	0x03, 0x39, 0x00, 0xED, 0x00, 0x2C, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, // counts
	0x00, 0x00, // reserved
	0x02, 0x32, // checksum: 0x42+0x4D+0x1C+5+8+11+4+7+10+3+0x39+0xED+0x2C+4+1 = 0x232
}

// uart is a PMS5003 on a port of a Provider.
type uart struct {
	t    *testing.T
	dev  *sim.PMS5003
	clk  *fakeClock
	port hal.UART
}

func newUART(t *testing.T, sig sim.PMS5003Signals) *uart {
	t.Helper()
	u := &uart{t: t, clk: newClock()}
	u.dev = sim.NewPMS5003(sig, u.clk.now)
	var p sim.Provider
	if err := p.AttachUART("/dev/ttyS0", u.dev); err != nil {
		t.Fatal(err)
	}
	var err error
	if u.port, err = p.UARTPort("/dev/ttyS0"); err != nil {
		t.Fatal(err)
	}
	return u
}

// read reads everything that has arrived, in reads of at most chunk bytes.
func (u *uart) read(chunk int) []byte {
	u.t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := u.port.Read(context.Background(), buf)
		if err != nil {
			u.t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

func (u *uart) command(cmd byte, data uint16) {
	u.t.Helper()
	c := sim.PMS5003Command(cmd, data)
	if n, err := u.port.Write(context.Background(), c[:]); err != nil || n != len(c) {
		u.t.Fatalf("write %x: %d, %v", c, n, err)
	}
}

func TestPMS5003Frame(t *testing.T) {
	d := sim.PMS5003Data{5, 8, 11, 4, 7, 10, 825, 237, 44, 4, 1, 0, 0}
	f := d.Frame()
	if !bytes.Equal(f[:], airFrame) {
		t.Errorf("frame\n% x\nwant\n% x", f, airFrame)
	}
	u := newUART(t, airSignals)
	if got := u.dev.Truth(epoch); got != d {
		t.Errorf("Truth = %v, want %v", got, d)
	}
	if c := sim.PMS5003Command(sim.PMS5003CmdMode, 1); !bytes.Equal(c[:], []byte{0x42, 0x4D, 0xE1, 0x00, 0x01, 0x01, 0x71}) {
		t.Errorf("active-mode command % x", c)
	}
	// Values are rounded and saturated.
	u = newUART(t, sim.PMS5003Signals{PM1: sim.Signal{Value: 12.5}, PM25: sim.Signal{Value: -3}, PM10: sim.Signal{Value: 1e6}, N03: sim.Signal{Value: 0.49}})
	if got := u.dev.Truth(epoch); got[0] != 13 || got[1] != 0 || got[2] != 65535 || got[6] != 0 {
		t.Errorf("rounding and saturation: %v", got)
	}
}

func TestPMS5003Timing(t *testing.T) {
	u := newUART(t, airSignals)
	if got := u.read(64); len(got) != 0 {
		t.Errorf("at the start: % x", got)
	}
	// Bytes arrive one per byte time.
	u.clk.set(10 * byteTime)
	if got := u.read(64); !bytes.Equal(got, airFrame[:10]) {
		t.Errorf("after 10 byte times: % x", got)
	}
	u.clk.set(10*byteTime + byteTime/2)
	if got := u.read(64); len(got) != 0 {
		t.Errorf("half a byte later: % x", got)
	}
	u.clk.set(40 * time.Millisecond)
	if got := u.read(7); !bytes.Equal(got, airFrame[10:]) {
		t.Errorf("the rest of frame 0, in reads of 7: % x", got)
	}
	// Nothing until the next second, then the next frame; reads of 1 byte reassemble it.
	u.clk.set(999 * time.Millisecond)
	if got := u.read(64); len(got) != 0 {
		t.Errorf("before frame 1: % x", got)
	}
	u.clk.set(1100 * time.Millisecond)
	if got := u.read(1); !bytes.Equal(got, airFrame) {
		t.Errorf("frame 1 byte by byte: % x", got)
	}
	// Several seconds unread: every frame is there, in order.
	u.clk.set(4500 * time.Millisecond)
	if got := u.read(100); !bytes.Equal(got, bytes.Repeat(airFrame, 3)) {
		t.Errorf("frames 2..4: %d bytes", len(got))
	}
	// A reader that falls far behind finds the last 128 frames (4 KiB).
	u.clk.set(1000*time.Second + 500*time.Millisecond)
	if got := u.read(4096); len(got) != 128*32 || !bytes.Equal(got[:32], airFrame) {
		t.Errorf("after a long wait: %d bytes", len(got))
	}
}

func TestPMS5003Values(t *testing.T) {
	// PM2.5 ramps from 0 to 100 over 100 s: each frame has the value of its own second.
	u := newUART(t, sim.PMS5003Signals{PM25: sim.Signal{Shape: "ramp", From: 0, To: 100, Period: sim.Duration(100 * time.Second)}})
	u.clk.set(3500 * time.Millisecond)
	got := u.read(256)
	if len(got) != 4*32 {
		t.Fatalf("%d bytes", len(got))
	}
	for k := range 4 {
		f := got[32*k : 32*k+32]
		if v := binary.BigEndian.Uint16(f[6:]); v != uint16(k) {
			t.Errorf("frame %d: PM2.5 %d, want %d", k, v, k)
		}
		if sum := sim.PMS5003Checksum(f[:30]); binary.BigEndian.Uint16(f[30:]) != sum {
			t.Errorf("frame %d: bad checksum", k)
		}
	}
}

func TestPMS5003Commands(t *testing.T) {
	u := newUART(t, airSignals)
	u.clk.set(100 * time.Millisecond)
	u.read(64) // frame 0
	u.command(sim.PMS5003CmdMode, 0)
	u.clk.set(3100 * time.Millisecond)
	if got := u.read(64); len(got) != 0 {
		t.Errorf("passive mode sent %d bytes", len(got))
	}
	u.command(sim.PMS5003CmdRead, 0)
	u.clk.add(40 * time.Millisecond)
	if got := u.read(64); !bytes.Equal(got, airFrame) {
		t.Errorf("passive read: % x", got)
	}
	// A command with a bad checksum, split over two writes with junk before it, is ignored.
	bad := sim.PMS5003Command(sim.PMS5003CmdMode, 1)
	bad[6]++
	if _, err := u.port.Write(context.Background(), append([]byte{0x00, 0x42}, bad[:3]...)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.port.Write(context.Background(), bad[3:]); err != nil {
		t.Fatal(err)
	}
	u.clk.set(5100 * time.Millisecond)
	if got := u.read(64); len(got) != 0 {
		t.Errorf("a bad command changed the mode: %d bytes", len(got))
	}
	// Split good command after junk: active again.
	good := sim.PMS5003Command(sim.PMS5003CmdMode, 1)
	if _, err := u.port.Write(context.Background(), append([]byte{0x42, 0x42}, good[1:4]...)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.port.Write(context.Background(), good[4:]); err != nil {
		t.Fatal(err)
	}
	u.clk.set(6100 * time.Millisecond)
	if got := u.read(64); !bytes.Equal(got, airFrame) {
		t.Errorf("active again: % x", got)
	}
	// Sleep: nothing; wake up: frames again.
	u.command(sim.PMS5003CmdSleep, 0)
	u.clk.set(9100 * time.Millisecond)
	if got := u.read(64); len(got) != 0 {
		t.Errorf("asleep: %d bytes", len(got))
	}
	u.command(sim.PMS5003CmdSleep, 1)
	u.clk.set(10100 * time.Millisecond)
	if got := u.read(64); !bytes.Equal(got, airFrame) {
		t.Errorf("awake: % x", got)
	}
}

func TestPMS5003Faults(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		kind sim.FaultKind
		want error
	}{{sim.FaultTimeout, hal.ErrTimeout}, {sim.FaultDisconnect, hal.ErrNoDevice}} {
		t.Run(string(tt.kind), func(t *testing.T) {
			u := newUART(t, airSignals)
			u.command(sim.PMS5003CmdMode, 0) // passive: a disconnect must undo it
			u.command(sim.PMS5003CmdMode, 1)
			u.dev.Faults().Script([]sim.Fault{{Kind: tt.kind, At: sim.Duration(1500 * time.Millisecond), For: sim.Duration(2 * time.Second)}})
			u.clk.set(2 * time.Second)
			if _, err := u.port.Read(ctx, make([]byte, 64)); !errors.Is(err, tt.want) {
				t.Errorf("read during the fault: %v, want %v", err, tt.want)
			}
			if _, err := u.port.Write(ctx, []byte{0}); !errors.Is(err, tt.want) {
				t.Errorf("write during the fault: %v, want %v", err, tt.want)
			}
			// Frames 0 and 1 were sent before the fault, 2 and 3 were not, 4 is after it.
			u.clk.set(4100 * time.Millisecond)
			if got := u.read(64); !bytes.Equal(got, bytes.Repeat(airFrame, 3)) {
				t.Errorf("after the fault: %d bytes, want frames 0, 1 and 4", len(got))
			}
		})
	}

	t.Run("disconnect resets", func(t *testing.T) {
		u := newUART(t, airSignals)
		u.clk.set(100 * time.Millisecond)
		if got := u.read(64); !bytes.Equal(got, airFrame) {
			t.Fatalf("frame 0: % x", got)
		}
		u.command(sim.PMS5003CmdMode, 0)
		u.dev.Faults().Inject(sim.FaultDisconnect, true)
		if _, err := u.port.Read(ctx, make([]byte, 1)); !errors.Is(err, hal.ErrNoDevice) {
			t.Fatal(err)
		}
		u.dev.Faults().Inject(sim.FaultDisconnect, false)
		u.clk.set(1100 * time.Millisecond)
		if got := u.read(64); !bytes.Equal(got, airFrame) {
			t.Errorf("after a power loss the sensor is in active mode: % x", got)
		}
	})

	t.Run("corrupt", func(t *testing.T) {
		u := newUART(t, airSignals)
		u.dev.Faults().Script([]sim.Fault{{Kind: sim.FaultCorrupt, At: sim.Duration(time.Second), For: sim.Duration(2 * time.Second)}})
		u.clk.set(3100 * time.Millisecond)
		got := u.read(256)
		if len(got) != 4*32 {
			t.Fatalf("%d bytes", len(got))
		}
		for k := range 4 {
			f := got[32*k : 32*k+32]
			ok := binary.BigEndian.Uint16(f[30:]) == sim.PMS5003Checksum(f[:30])
			if want := k == 0 || k == 3; ok != want {
				t.Errorf("frame %d: checksum ok %v, want %v", k, ok, want)
			}
			if !bytes.Equal(f[:4], airFrame[:4]) || !bytes.Equal(f[30:], airFrame[30:]) {
				t.Errorf("frame %d: header or checksum changed: % x", k, f)
			}
		}
	})

	t.Run("stuck", func(t *testing.T) {
		u := newUART(t, sim.PMS5003Signals{PM10: sim.Signal{Shape: "ramp", From: 0, To: 100, Period: sim.Duration(100 * time.Second)}})
		u.dev.Faults().Script([]sim.Fault{{Kind: sim.FaultStuck, At: sim.Duration(1500 * time.Millisecond), For: sim.Duration(2 * time.Second)}})
		u.clk.set(4100 * time.Millisecond)
		got := u.read(256)
		var vals []uint16
		for k := 0; k+32 <= len(got); k += 32 {
			vals = append(vals, binary.BigEndian.Uint16(got[k+8:]))
		}
		// Frames at 2 s and 3 s repeat the value of 1.5 s (1.5, rounded: 2).
		if want := []uint16{0, 1, 2, 2, 4}; !equalU16(vals, want) {
			t.Errorf("PM10 %v, want %v", vals, want)
		}
	})
}

func equalU16(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
