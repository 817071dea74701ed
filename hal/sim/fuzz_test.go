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

// The fuzz targets below drive each device model with a program: a byte string read as a
// sequence of operations (transactions with fuzzed bytes, clock steps, faults on and off). No
// program may make a model panic or return an error other than the hal sentinels, and each
// checks what must hold whatever the program did.

// program reads operations from fuzz input.
type program struct{ b []byte }

func (p *program) more() bool { return len(p.b) > 0 }

func (p *program) byte() byte {
	if len(p.b) == 0 {
		return 0
	}
	c := p.b[0]
	p.b = p.b[1:]
	return c
}

func (p *program) bytes(n int) []byte {
	n = min(n, len(p.b))
	out := p.b[:n]
	p.b = p.b[n:]
	return out
}

// halErr reports whether err is nil or one of the sentinels a simulated device may return.
func halErr(err error) bool {
	if err == nil {
		return true
	}
	for _, s := range []error{hal.ErrNACK, hal.ErrTimeout, hal.ErrNoDevice, hal.ErrCorrupt, hal.ErrInvalid} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func clearFaults(f *sim.Faults) {
	for _, k := range sim.FaultKinds {
		f.Inject(k, false)
	}
}

func FuzzADXL345(f *testing.F) {
	f.Add([]byte{0, 2, 8, 0x2D, 0x08, 2, 20, 0, 1, 6, 0x32})
	f.Add([]byte{1, 3, 0xF2, 0, 0, 2, 200, 3, 0, 3, 2, 1, 7, 0xF0})
	f.Add([]byte{0, 3, 0, 0x31, 0x0F, 0, 2, 0, 0x2D, 0x08, 2, 255, 1, 9, 0xC0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		ctx := context.Background()
		clk := newClock()
		dev := sim.NewADXL345(sim.ADXL345Signals{
			X: sim.Signal{Shape: "sine", Mean: 1, Amplitude: 30, Period: sim.Duration(time.Second)},
			Y: sim.Signal{Value: -0.5}, Z: sim.Signal{Shape: "noise", Sigma: 5, Seed: 1},
		}, clk.now)
		var p sim.Provider
		if err := p.AttachI2C(0, sim.ADXL345AddrHigh, dev.I2C()); err != nil {
			t.Fatal(err)
		}
		if err := p.AttachSPI(0, 0, dev.SPI()); err != nil {
			t.Fatal(err)
		}
		bus, _ := p.I2CBus(0)
		spi, _ := p.SPIPort(0, 0)
		pr := &program{prog}
		for pr.more() {
			switch pr.byte() % 4 {
			case 0: // I2C: w, then a read of up to 15 bytes
				w := pr.bytes(int(pr.byte() % 16))
				r := make([]byte, pr.byte()%16)
				if err := bus.Tx(ctx, sim.ADXL345AddrHigh, w, r); !halErr(err) {
					t.Fatalf("i2c: %v", err)
				}
			case 1: // SPI
				w := pr.bytes(int(pr.byte() % 16))
				if err := spi.Tx(ctx, w, make([]byte, len(w))); !halErr(err) {
					t.Fatalf("spi: %v", err)
				}
			case 2:
				clk.add(time.Duration(pr.byte()) * time.Millisecond)
			case 3:
				c := pr.byte()
				dev.Faults().Inject(sim.FaultKinds[int(c)%len(sim.FaultKinds)], c >= 128)
			}
		}
		clearFaults(dev.Faults())
		r := make([]byte, 2)
		if err := spi.Tx(ctx, []byte{0x80 | 0x30, 0}, r); err != nil || r[1]&0x7F != 0x02 {
			t.Errorf("INT_SOURCE % x, %v", r, err)
		}
		r = make([]byte, 1)
		if err := bus.Tx(ctx, sim.ADXL345AddrHigh, []byte{0}, r); err != nil || r[0] != 0xE5 {
			t.Errorf("DEVID % x, %v", r, err)
		}
	})
}

func FuzzPMS5003(f *testing.F) {
	cmd := sim.PMS5003Command(sim.PMS5003CmdMode, 0)
	read := sim.PMS5003Command(sim.PMS5003CmdRead, 0)
	f.Add([]byte{2, 100, 0, 40, 2, 200, 0, 7})
	f.Add(append(append([]byte{1, 7}, cmd[:]...), append([]byte{1, 7}, read[:]...)...))
	f.Add([]byte{3, 129, 2, 255, 2, 255, 0, 100, 3, 1, 2, 255, 2, 255, 2, 255, 2, 255, 0, 255})
	f.Fuzz(func(t *testing.T, prog []byte) {
		ctx := context.Background()
		clk := newClock()
		// Constant values: no byte of a frame is 0x42, so frames are found by their header.
		dev := sim.NewPMS5003(airSignals, clk.now)
		var p sim.Provider
		if err := p.AttachUART("/dev/ttyUSB0", dev); err != nil {
			t.Fatal(err)
		}
		port, _ := p.UARTPort("/dev/ttyUSB0")
		var stream []byte
		corrupt := false
		pr := &program{prog}
		for pr.more() {
			switch pr.byte() % 4 {
			case 0:
				buf := make([]byte, pr.byte())
				n, err := port.Read(ctx, buf)
				if !halErr(err) || n < 0 || n > len(buf) {
					t.Fatalf("read: %d, %v", n, err)
				}
				stream = append(stream, buf[:n]...)
			case 1:
				w := pr.bytes(int(pr.byte() % 16))
				if n, err := port.Write(ctx, w); !halErr(err) || err == nil && n != len(w) {
					t.Fatalf("write: %d, %v", n, err)
				}
			case 2:
				clk.add(time.Duration(pr.byte()) * 20 * time.Millisecond)
			case 3:
				c := pr.byte()
				kind := sim.FaultKinds[int(c)%len(sim.FaultKinds)]
				dev.Faults().Inject(kind, c >= 128)
				corrupt = corrupt || kind == sim.FaultCorrupt && c >= 128
			}
		}
		// Every whole frame in the stream is the frame of the signals, unless corrupt was on.
		for i := bytes.Index(stream, airFrame[:4]); i >= 0 && i+32 <= len(stream); {
			fr := stream[i : i+32]
			ok := binary.BigEndian.Uint16(fr[30:]) == sim.PMS5003Checksum(fr[:30])
			if !corrupt && !bytes.Equal(fr, airFrame) {
				t.Fatalf("frame at %d: % x", i, fr)
			}
			if ok && !bytes.Equal(fr, airFrame) {
				t.Fatalf("frame at %d with a good checksum and other values: % x", i, fr)
			}
			j := bytes.Index(stream[i+1:], airFrame[:4])
			if j < 0 {
				break
			}
			i += 1 + j
		}
	})
}

func FuzzGPIO(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 2, 100, 1, 3, 130, 0, 1})
	f.Add([]byte{3, 2, 0, 1, 3, 130, 0, 0, 3, 3, 1, 2, 255, 1})
	f.Fuzz(func(t *testing.T, prog []byte) {
		ctx := context.Background()
		clk := newClock()
		btn := sim.NewButton(sim.Signal{Shape: "sine", Mean: 0.5, Amplitude: 1, Period: sim.Duration(time.Second)}, clk.now)
		rel := sim.NewRelay(clk.now)
		var p sim.Provider
		if err := p.AttachGPIO(4, btn); err != nil {
			t.Fatal(err)
		}
		if err := p.AttachGPIO(5, rel); err != nil {
			t.Fatal(err)
		}
		in, _ := p.GPIOLine(4)
		out, _ := p.GPIOLine(5)
		level, writes := false, 0 // what the relay must be at
		pr := &program{prog}
		for pr.more() {
			switch pr.byte() % 4 {
			case 0:
				v := pr.byte()&1 == 1
				stuck := rel.Faults().Active(sim.FaultStuck)
				err := out.Write(ctx, v)
				if !halErr(err) {
					t.Fatal(err)
				}
				if err == nil {
					writes++
					if !stuck {
						level = v
					}
				}
				if err := in.Write(ctx, v); !errors.Is(err, hal.ErrInvalid) {
					t.Fatalf("write to the button: %v", err)
				}
			case 1:
				if _, err := in.Read(ctx); !halErr(err) {
					t.Fatal(err)
				}
				if v, err := out.Read(ctx); !halErr(err) || err == nil && v != level {
					t.Fatalf("relay read %v, %v; want %v", v, err, level)
				}
			case 2:
				clk.add(time.Duration(pr.byte()) * 10 * time.Millisecond)
			case 3:
				c := pr.byte()
				dev := btn.Faults()
				if c&64 != 0 {
					dev = rel.Faults()
				}
				dev.Inject(sim.FaultKinds[int(c)%len(sim.FaultKinds)], c >= 128)
			}
		}
		if rel.Level() != level || rel.Writes() != writes {
			t.Errorf("relay at %v after %d writes, want %v after %d", rel.Level(), rel.Writes(), level, writes)
		}
		ch := rel.Changes()
		for i := range ch {
			if i > 0 && (ch[i].Level == ch[i-1].Level || ch[i].Time.Before(ch[i-1].Time)) {
				t.Fatalf("changes %v", ch)
			}
		}
		if len(ch) > 0 && ch[len(ch)-1].Level != level {
			t.Errorf("last change %v, level %v", ch[len(ch)-1], level)
		}
	})
}

func FuzzBME280(f *testing.F) {
	f.Add([]byte{0, 4, 0xF2, 1, 0xF4, 0x25, 8, 2, 10, 0, 1, 0xF7, 8})
	f.Add([]byte{3, 130, 0, 1, 0xD0, 1, 3, 2, 0, 1, 0xE0, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		ctx := context.Background()
		clk := newClock()
		faults := sim.NewFaults(clk.now)
		dev := sim.NewBME280(sim.Signals{Temperature: sim.Signal{Shape: "noise", Mean: 20, Sigma: 50, Seed: 3}}, faults.SignalClock)
		var p sim.Provider
		if err := p.AttachI2C(1, 0x77, sim.FaultyI2C(dev, faults)); err != nil {
			t.Fatal(err)
		}
		bus, _ := p.I2CBus(1)
		pr := &program{prog}
		for pr.more() {
			switch pr.byte() % 4 {
			case 0, 1:
				w := pr.bytes(int(pr.byte() % 16))
				r := make([]byte, pr.byte()%32)
				if err := bus.Tx(ctx, 0x77, w, r); !halErr(err) {
					t.Fatal(err)
				}
			case 2:
				clk.add(time.Duration(pr.byte()) * time.Second)
			case 3:
				c := pr.byte()
				faults.Inject(sim.FaultKinds[int(c)%len(sim.FaultKinds)], c >= 128)
			}
		}
		clearFaults(faults)
		r := make([]byte, 1)
		if err := bus.Tx(ctx, 0x77, []byte{0xD0}, r); err != nil || r[0] != 0x60 {
			t.Errorf("chip id % x, %v", r, err)
		}
	})
}
