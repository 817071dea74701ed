package sim_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) add(d time.Duration)     { c.t = c.t.Add(d) }
func newClock() *fakeClock                   { return &fakeClock{t: epoch} }
func (c *fakeClock) set(since time.Duration) { c.t = epoch.Add(since) }

// accel is an ADXL345 on both of its buses, through a Provider, with helpers.
type accel struct {
	t   *testing.T
	dev *sim.ADXL345
	clk *fakeClock
	i2c hal.I2C
	spi hal.SPI
}

func newAccel(t *testing.T, sig sim.ADXL345Signals) *accel {
	t.Helper()
	a := &accel{t: t, clk: newClock()}
	a.dev = sim.NewADXL345(sig, a.clk.now)
	var p sim.Provider
	if err := p.AttachI2C(1, sim.ADXL345AddrLow, a.dev.I2C()); err != nil {
		t.Fatal(err)
	}
	if err := p.AttachSPI(0, 1, a.dev.SPI()); err != nil {
		t.Fatal(err)
	}
	a.i2c, _ = p.I2CBus(1)
	var err error
	if a.spi, err = p.SPIPort(0, 1); err != nil {
		t.Fatal(err)
	}
	return a
}

// spiRead reads n registers from reg with a multi-byte SPI read.
func (a *accel) spiRead(reg byte, n int) []byte {
	a.t.Helper()
	w := make([]byte, n+1)
	r := make([]byte, n+1)
	w[0] = 0xC0 | reg
	if err := a.spi.Tx(context.Background(), w, r); err != nil {
		a.t.Fatal(err)
	}
	if r[0] != 0 {
		a.t.Errorf("byte clocked out during the address byte: %#x, want 0", r[0])
	}
	return r[1:]
}

// spiWrite writes values to consecutive registers from reg.
func (a *accel) spiWrite(reg byte, v ...byte) {
	a.t.Helper()
	w := append([]byte{0x40 | reg}, v...)
	if err := a.spi.Tx(context.Background(), w, make([]byte, len(w))); err != nil {
		a.t.Fatal(err)
	}
}

func (a *accel) i2cRead(reg byte, n int) []byte {
	a.t.Helper()
	r := make([]byte, n)
	if err := a.i2c.Tx(context.Background(), sim.ADXL345AddrLow, []byte{reg}, r); err != nil {
		a.t.Fatal(err)
	}
	return r
}

func (a *accel) i2cWrite(reg byte, v ...byte) {
	a.t.Helper()
	if err := a.i2c.Tx(context.Background(), sim.ADXL345AddrLow, append([]byte{reg}, v...), nil); err != nil {
		a.t.Fatal(err)
	}
}

// xyz decodes the six data registers as right-justified values.
func xyz(b []byte) [3]int16 {
	return [3]int16{int16(binary.LittleEndian.Uint16(b)), int16(binary.LittleEndian.Uint16(b[2:])), int16(binary.LittleEndian.Uint16(b[4:]))}
}

func TestADXL345Registers(t *testing.T) {
	a := newAccel(t, sim.ADXL345Signals{})
	if id := a.spiRead(0x00, 1)[0]; id != 0xE5 {
		t.Errorf("DEVID over SPI %#x, want 0xe5", id)
	}
	if id := a.i2cRead(0x00, 1)[0]; id != 0xE5 {
		t.Errorf("DEVID over I2C %#x, want 0xe5", id)
	}
	// Power-on values of BW_RATE .. FIFO_STATUS.
	want := []byte{0x0A, 0x00, 0x00, 0x00, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0x00, 0x00}
	if got := a.spiRead(0x2C, 14); string(got) != string(want) {
		t.Errorf("0x2C..0x39 after power-on = % x, want % x", got, want)
	}
	// Reserved bits read 0; read-only and missing registers ignore writes; past 0x39 reads 0.
	a.spiWrite(0x2C, 0xFF, 0xFF)       // BW_RATE, POWER_CTL
	a.i2cWrite(0x31, 0xFF)             // DATA_FORMAT
	a.i2cWrite(0x00, 0x12)             // DEVID
	a.i2cWrite(0x05, 0x12)             // reserved
	a.spiWrite(0x32, 1, 2, 3, 4, 5, 6) // data registers
	if got := a.i2cRead(0x2C, 2); got[0] != 0x1F || got[1] != 0x3F {
		t.Errorf("BW_RATE, POWER_CTL = % x after writing ff ff, want 1f 3f", got)
	}
	if got := a.spiRead(0x31, 1)[0]; got != 0xEF {
		t.Errorf("DATA_FORMAT = %#x after writing 0xff, want 0xef", got)
	}
	if got := a.i2cRead(0x00, 1)[0]; got != 0xE5 {
		t.Errorf("DEVID = %#x after a write", got)
	}
	if got := a.i2cRead(0x05, 1)[0]; got != 0 {
		t.Errorf("reserved register 0x05 = %#x after a write", got)
	}
	if got := a.i2cRead(0x3A, 4); string(got) != "\x00\x00\x00\x00" {
		t.Errorf("0x3A.. = % x", got)
	}
	// Offsets are plain registers.
	a.i2cWrite(0x1E, 0x10, 0xF0, 0x7F)
	if got := a.spiRead(0x1E, 3); string(got) != "\x10\xf0\x7f" {
		t.Errorf("OFSX..OFSZ = % x", got)
	}
}

func TestADXL345SPIProtocol(t *testing.T) {
	a := newAccel(t, sim.ADXL345Signals{})
	ctx := context.Background()
	// Without MB the address does not move: three reads of DEVID.
	r := make([]byte, 4)
	if err := a.spi.Tx(ctx, []byte{0x80, 0, 0, 0}, r); err != nil {
		t.Fatal(err)
	}
	if string(r) != "\x00\xe5\xe5\xe5" {
		t.Errorf("single-byte-mode read = % x, want 00 e5 e5 e5", r)
	}
	// Without MB a write repeats on one register: OFSX ends with the last byte.
	if err := a.spi.Tx(ctx, []byte{0x1E, 1, 2, 3}, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if got := a.spiRead(0x1E, 3); string(got) != "\x03\x00\x00" {
		t.Errorf("OFSX..OFSZ after a single-byte-mode write of 1 2 3 = % x, want 03 00 00", got)
	}
	// A write clocks zeros back.
	r = []byte{9, 9, 9}
	if err := a.spi.Tx(ctx, []byte{0x40 | 0x1E, 7, 8}, r); err != nil {
		t.Fatal(err)
	}
	if string(r) != "\x00\x00\x00" {
		t.Errorf("rx during a write = % x", r)
	}
	// The port refuses transfers of unequal lengths; an empty one does nothing.
	if err := a.spi.Tx(ctx, []byte{0x80}, make([]byte, 2)); !errors.Is(err, hal.ErrInvalid) {
		t.Errorf("unequal lengths: %v, want hal.ErrInvalid", err)
	}
	if err := a.spi.Tx(ctx, nil, nil); err != nil {
		t.Errorf("empty transfer: %v", err)
	}
}

func TestADXL345Data(t *testing.T) {
	sig := sim.ADXL345Signals{X: sim.Signal{Value: 0.5}, Y: sim.Signal{Value: -1.25}, Z: sim.Signal{Value: 1}}
	big := sim.ADXL345Signals{X: sim.Signal{Value: 3}, Y: sim.Signal{Value: -20}, Z: sim.Signal{Value: 0.0019}}
	tests := []struct {
		name   string
		sig    sim.ADXL345Signals
		format byte
		ofs    [3]int8
		want   [3]int16
	}{
		{"±2g full", sig, 0x08, [3]int8{}, [3]int16{128, -320, 256}},
		{"±16g full", sig, 0x0B, [3]int8{}, [3]int16{128, -320, 256}},
		{"±2g 10-bit", sig, 0x00, [3]int8{}, [3]int16{128, -320, 256}},
		{"±4g 10-bit", sig, 0x01, [3]int8{}, [3]int16{64, -160, 128}},
		{"±8g 10-bit", sig, 0x02, [3]int8{}, [3]int16{32, -80, 64}},
		{"±16g 10-bit", sig, 0x03, [3]int8{}, [3]int16{16, -40, 32}},
		// 3 g saturates at 10 bits (511) at ±2 g; -20 g at 13 bits (-4096) at ±16 g; 1.9 mg
		// rounds to 0.486 LSB -> 0.
		{"±2g full saturated", big, 0x08, [3]int8{}, [3]int16{511, -512, 0}},
		{"±16g full saturated", big, 0x0B, [3]int8{}, [3]int16{768, -4096, 0}},
		{"±8g full", big, 0x0A, [3]int8{}, [3]int16{768, -2048, 0}},
		{"±4g 10-bit saturated", big, 0x01, [3]int8{}, [3]int16{384, -512, 0}},
		// Offsets: 15.6 mg/LSB, added before the scale.
		{"offsets", sig, 0x08, [3]int8{32, -16, 1}, [3]int16{128 + 128, -320 - 64, 256 + 4}},
		// Left-justified: the value in the top bits.
		{"±2g 10-bit left", sig, 0x04, [3]int8{}, [3]int16{128 << 6, -320 << 6, 256 << 6}},
		{"±16g full left", sig, 0x0F, [3]int8{}, [3]int16{128 << 3, -320 << 3, 256 << 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, spi := range []bool{true, false} {
				a := newAccel(t, tt.sig)
				write, read := a.i2cWrite, a.i2cRead
				if spi {
					write, read = a.spiWrite, a.spiRead
				}
				write(0x1E, byte(tt.ofs[0]), byte(tt.ofs[1]), byte(tt.ofs[2]))
				write(0x31, tt.format)
				write(0x2D, 0x08) // measure
				a.clk.add(10 * time.Millisecond)
				if got := xyz(read(0x32, 6)); got != tt.want {
					t.Errorf("spi %v: data %v, want %v", spi, got, tt.want)
				}
			}
		})
	}
	if got := sim.ADXL345Raw(0.5, 0x08); got != 128 {
		t.Errorf("ADXL345Raw(0.5, full) = %d", got)
	}
}

func TestADXL345Sampling(t *testing.T) {
	// x ramps 0 -> 1 g over 1 s: the sample shows the value at its sampling instant.
	a := newAccel(t, sim.ADXL345Signals{X: sim.Signal{Shape: "ramp", From: 0, To: 1, Period: sim.Duration(time.Second)}})
	ready := func() bool { return a.spiRead(0x30, 1)[0]&0x80 != 0 }
	a.spiWrite(0x31, 0x08)
	a.spiWrite(0x2C, 0x0A) // 100 Hz
	if ready() {
		t.Error("DATA_READY in standby")
	}
	a.clk.set(100 * time.Millisecond)
	if ready() {
		t.Error("DATA_READY in standby after 100 ms")
	}
	a.spiWrite(0x2D, 0x08) // measure from 100 ms on
	if ready() {
		t.Error("DATA_READY at once after Measure: the first sample comes one period later")
	}
	a.clk.set(115 * time.Millisecond)
	if !ready() {
		t.Fatal("no DATA_READY one period after Measure")
	}
	// The sample is that of 110 ms: 0.11 g = 28.16 LSB -> 28. Reading INT_SOURCE again keeps
	// DATA_READY; reading the data clears it.
	if !ready() {
		t.Error("reading INT_SOURCE cleared DATA_READY")
	}
	if got := xyz(a.spiRead(0x32, 6))[0]; got != 28 {
		t.Errorf("x at 115 ms = %d, want 28 (the 110 ms sample)", got)
	}
	if ready() {
		t.Error("DATA_READY after reading the data")
	}
	// One read of INT_SOURCE and the data together sees DATA_READY and clears it.
	a.clk.set(500 * time.Millisecond)
	b := a.spiRead(0x30, 8)
	if b[0]&0x80 == 0 || xyz(b[2:])[0] != 128 {
		t.Errorf("burst at 500 ms: INT_SOURCE %#x, x %d; want DATA_READY and 128", b[0], xyz(b[2:])[0])
	}
	if ready() {
		t.Error("DATA_READY after the burst")
	}
	// A slower rate samples less often: 12.5 Hz, every 80 ms.
	a.spiWrite(0x2C, 0x07)
	a.clk.set(600 * time.Millisecond)
	if got := xyz(a.spiRead(0x32, 6))[0]; got != 143 {
		t.Errorf("x at 600 ms at 12.5 Hz = %d, want 143 (the 560 ms sample: 143.36)", got)
	}
	// Leaving measure mode keeps the data and stops sampling.
	a.spiWrite(0x2D, 0x00)
	a.clk.set(900 * time.Millisecond)
	if ready() || xyz(a.spiRead(0x32, 6))[0] != 143 {
		t.Error("sampling in standby")
	}
	if p := sim.ADXL345Period(0x0F); p != 312500*time.Nanosecond {
		t.Errorf("period at 3200 Hz %v", p)
	}
	if p := sim.ADXL345Period(0x00); p != 10240*time.Millisecond { // "0.10 Hz": 3200 Hz / 2^15
		t.Errorf("period at 0.1 Hz %v", p)
	}
}

func TestADXL345Faults(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		kind          sim.FaultKind
		wantI2C, want error
	}{
		{sim.FaultNACK, hal.ErrNACK, nil}, // SPI has no acknowledge
		{sim.FaultTimeout, hal.ErrTimeout, hal.ErrTimeout},
		{sim.FaultDisconnect, hal.ErrNoDevice, hal.ErrNoDevice},
		{sim.FaultCorrupt, hal.ErrCorrupt, hal.ErrCorrupt},
	} {
		t.Run(string(tt.kind), func(t *testing.T) {
			a := newAccel(t, sim.ADXL345Signals{})
			a.dev.Faults().Inject(tt.kind, true)
			errI2C := a.i2c.Tx(ctx, sim.ADXL345AddrLow, []byte{0}, make([]byte, 1))
			errSPI := a.spi.Tx(ctx, []byte{0x80, 0}, make([]byte, 2))
			if !errors.Is(errI2C, tt.wantI2C) || tt.wantI2C == nil && errI2C != nil {
				t.Errorf("I2C: %v, want %v", errI2C, tt.wantI2C)
			}
			if !errors.Is(errSPI, tt.want) || tt.want == nil && errSPI != nil {
				t.Errorf("SPI: %v, want %v", errSPI, tt.want)
			}
			a.dev.Faults().Inject(tt.kind, false)
			if id := a.spiRead(0, 1)[0]; id != 0xE5 {
				t.Errorf("DEVID %#x after the fault", id)
			}
		})
	}

	t.Run("stuck", func(t *testing.T) {
		a := newAccel(t, sim.ADXL345Signals{X: sim.Signal{Shape: "ramp", From: 0, To: 1, Period: sim.Duration(time.Second)}})
		a.spiWrite(0x31, 0x08)
		a.spiWrite(0x2D, 0x08)
		a.clk.set(250 * time.Millisecond)
		if got := xyz(a.spiRead(0x32, 6))[0]; got != 64 {
			t.Fatalf("x at 250 ms = %d", got)
		}
		a.dev.Faults().Inject(sim.FaultStuck, true)
		a.clk.set(600 * time.Millisecond)
		if b := a.spiRead(0x30, 8); b[0]&0x80 != 0 || xyz(b[2:])[0] != 64 {
			t.Errorf("stuck at 600 ms: INT_SOURCE %#x, x %d; want no DATA_READY, 64", b[0], xyz(b[2:])[0])
		}
		a.dev.Faults().Inject(sim.FaultStuck, false)
		a.clk.set(750 * time.Millisecond)
		if b := a.spiRead(0x30, 8); b[0]&0x80 == 0 || xyz(b[2:])[0] != 192 {
			t.Errorf("after stuck at 750 ms: INT_SOURCE %#x, x %d; want DATA_READY, 192", b[0], xyz(b[2:])[0])
		}
	})

	t.Run("disconnect resets", func(t *testing.T) {
		a := newAccel(t, sim.ADXL345Signals{})
		a.spiWrite(0x31, 0x0B)
		a.spiWrite(0x2D, 0x08)
		a.dev.Faults().Inject(sim.FaultDisconnect, true)
		if err := a.spi.Tx(ctx, []byte{0x80, 0}, make([]byte, 2)); !errors.Is(err, hal.ErrNoDevice) {
			t.Fatalf("disconnected: %v", err)
		}
		a.dev.Faults().Inject(sim.FaultDisconnect, false)
		if got := a.spiRead(0x2C, 6); string(got) != "\x0a\x00\x00\x00\x02\x00" {
			t.Errorf("BW_RATE..DATA_FORMAT after reconnecting = % x, want the power-on values", got)
		}
	})

	t.Run("script", func(t *testing.T) {
		a := newAccel(t, sim.ADXL345Signals{})
		a.dev.Faults().Script([]sim.Fault{{Kind: sim.FaultTimeout, At: sim.Duration(time.Second), For: sim.Duration(time.Second)}})
		for _, c := range []struct {
			at   time.Duration
			want error
		}{{500 * time.Millisecond, nil}, {time.Second, hal.ErrTimeout}, {1999 * time.Millisecond, hal.ErrTimeout}, {2 * time.Second, nil}} {
			a.clk.set(c.at)
			err := a.spi.Tx(ctx, []byte{0x80, 0}, make([]byte, 2))
			if !errors.Is(err, c.want) || c.want == nil && err != nil {
				t.Errorf("at %v: %v, want %v", c.at, err, c.want)
			}
		}
	})
}

func TestADXL345ErrorNames(t *testing.T) {
	a := newAccel(t, sim.ADXL345Signals{})
	a.dev.Faults().Inject(sim.FaultTimeout, true)
	err := a.spi.Tx(context.Background(), []byte{0x80, 0}, make([]byte, 2))
	if got, want := err.Error(), "sim: spi 0.1: hal: bus timeout"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
}
