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

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// chip returns a BME280 with a settable clock and helpers to read and write its registers.
type chip struct {
	t   *testing.T
	dev *sim.BME280
	now time.Time
}

func newChip(t *testing.T, sig sim.Signals) *chip {
	c := &chip{t: t, now: epoch}
	c.dev = sim.NewBME280(sig, func() time.Time { return c.now })
	return c
}

func (c *chip) read(reg byte, n int) []byte {
	c.t.Helper()
	r := make([]byte, n)
	if err := c.dev.Tx(context.Background(), []byte{reg}, r); err != nil {
		c.t.Fatal(err)
	}
	return r
}

func (c *chip) write(pairs ...byte) {
	c.t.Helper()
	if err := c.dev.Tx(context.Background(), pairs, nil); err != nil {
		c.t.Fatal(err)
	}
}

// raw returns the pressure, temperature and humidity ADC values in the data registers.
func (c *chip) raw() (p, t, h uint32) {
	c.t.Helper()
	b := c.read(0xF7, 8)
	return uint32(b[0])<<12 | uint32(b[1])<<4 | uint32(b[2])>>4,
		uint32(b[3])<<12 | uint32(b[4])<<4 | uint32(b[5])>>4,
		uint32(b[6])<<8 | uint32(b[7])
}

var room = sim.Signals{
	Temperature: sim.Signal{Shape: "ramp", From: 10, To: 30, Period: sim.Duration(time.Minute)},
	Pressure:    sim.Signal{Value: 1013.25},
	Humidity:    sim.Signal{Value: 45},
}

func TestBME280Registers(t *testing.T) {
	c := newChip(t, room)
	if id := c.read(0xD0, 1)[0]; id != 0x60 {
		t.Errorf("chip id 0x%02x, want 0x60", id)
	}
	cal := c.read(0x88, 26)
	le := binary.LittleEndian
	for _, f := range []struct {
		name string
		got  int
		want int
	}{
		{"T1", int(le.Uint16(cal[0:])), 27504},
		{"T2", int(int16(le.Uint16(cal[2:]))), 26435},
		{"T3", int(int16(le.Uint16(cal[4:]))), -1000},
		{"P1", int(le.Uint16(cal[6:])), 36477},
		{"P2", int(int16(le.Uint16(cal[8:]))), -10685},
		{"P6", int(int16(le.Uint16(cal[16:]))), -7},
		{"P9", int(int16(le.Uint16(cal[22:]))), 6000},
		{"H1", int(cal[25]), 75},
	} {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	h := c.read(0xE1, 7)
	if got := int16(le.Uint16(h)); got != 362 {
		t.Errorf("H2 = %d, want 362", got)
	}
	if h4 := int16(int8(h[3]))<<4 | int16(h[4]&0x0F); h4 != 324 {
		t.Errorf("H4 = %d, want 324", h4)
	}
	if h5 := int16(int8(h[5]))<<4 | int16(h[4]>>4); h5 != 50 {
		t.Errorf("H5 = %d, want 50", h5)
	}
	if h[6] != 30 {
		t.Errorf("H6 = %d, want 30", h[6])
	}

	// Power-on data registers, and auto-increment across the whole block.
	if got := c.read(0xF2, 13); string(got) != "\x00\x00\x00\x00\x00\x80\x00\x00\x80\x00\x00\x80\x00" {
		t.Errorf("0xF2..0xFE after power-on = %x", got)
	}

	// Read-only registers ignore writes; config drops its reserved bit.
	c.write(0xD0, 0x12, 0x88, 0xFF, 0xF5, 0xFF)
	if id := c.read(0xD0, 1)[0]; id != 0x60 {
		t.Errorf("chip id 0x%02x after a write, want 0x60", id)
	}
	if got := c.read(0xF5, 1)[0]; got != 0xFD {
		t.Errorf("config 0x%02x, want 0xfd", got)
	}

	// Soft reset restores the power-on state; another value does nothing.
	c.write(0xF2, 0x01, 0xF4, 0x25)
	c.write(0xE0, 0x01)
	if got := c.read(0xF2, 1)[0]; got != 0x01 {
		t.Errorf("ctrl_hum 0x%02x after a non-reset write to 0xE0, want 0x01", got)
	}
	c.write(0xE0, 0xB6)
	if got := c.read(0xF2, 8); string(got) != "\x00\x00\x00\x00\x00\x80\x00\x00" {
		t.Errorf("0xF2..0xF9 after soft reset = %x", got)
	}
}

func TestBME280Modes(t *testing.T) {
	c := newChip(t, room)
	c.write(0xF2, 0x01, 0xF4, 0x24) // oversampling x1, sleep: nothing measured yet
	if p, tr, h := c.raw(); p != 0x80000 || tr != 0x80000 || h != 0x8000 {
		t.Errorf("raw before a measurement %x %x %x", p, tr, h)
	}

	c.write(0xF4, 0x25) // forced
	if mode := c.read(0xF4, 1)[0] & 3; mode != 0 {
		t.Errorf("mode %d after a forced measurement, want 0 (sleep)", mode)
	}
	_, t0, _ := c.raw()
	c.now = epoch.Add(30 * time.Second) // the ramp warms up; sleep mode keeps the old data
	if _, t1, _ := c.raw(); t1 != t0 {
		t.Errorf("raw temperature changed in sleep mode: %x -> %x", t0, t1)
	}
	c.write(0xF4, 0x26) // forced (the other encoding)
	_, t1, _ := c.raw()
	if t1 <= t0 {
		t.Errorf("raw temperature %x after warming, want above %x", t1, t0)
	}

	c.write(0xF4, 0x27) // normal: every read measures
	c.now = epoch.Add(time.Minute)
	if _, t2, _ := c.raw(); t2 <= t1 {
		t.Errorf("raw temperature %x in normal mode after warming, want above %x", t2, t1)
	}
	if mode := c.read(0xF4, 1)[0] & 3; mode != 3 {
		t.Errorf("mode %d, want 3 (normal)", mode)
	}
}

func TestBME280Skipped(t *testing.T) {
	tests := []struct {
		name          string
		ctrlHum, meas byte
		skipP, skipT  bool
		skipH         bool
	}{
		{"none", 0x01, 0x25, false, false, false},
		{"temperature", 0x01, 0x05, false, true, false},
		{"pressure", 0x01, 0x21, true, false, false},
		{"humidity", 0x00, 0x25, false, false, true},
		{"all", 0x00, 0x01, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newChip(t, room)
			c.write(0xF2, tt.ctrlHum, 0xF4, tt.meas)
			p, tr, h := c.raw()
			if (p == 0x80000) != tt.skipP || (tr == 0x80000) != tt.skipT || (h == 0x8000) != tt.skipH {
				t.Errorf("raw %x %x %x", p, tr, h)
			}
		})
	}

	// ctrl_hum only takes effect with the next write to ctrl_meas.
	c := newChip(t, room)
	c.write(0xF4, 0x25)
	c.write(0xF2, 0x01)
	c.write(0xF4, 0x24)
	c.write(0xF4, 0x25)
	if _, _, h := c.raw(); h == 0x8000 {
		t.Error("humidity skipped after ctrl_hum and ctrl_meas writes")
	}
}

func TestBME280InjectNACK(t *testing.T) {
	c := newChip(t, room)
	c.dev.InjectNACK(true)
	err := c.dev.Tx(context.Background(), []byte{0xD0}, make([]byte, 1))
	if !errors.Is(err, hal.ErrNACK) {
		t.Errorf("Tx with InjectNACK(true): %v, want hal.ErrNACK", err)
	}
	c.dev.InjectNACK(false)
	if id := c.read(0xD0, 1)[0]; id != 0x60 {
		t.Errorf("chip id 0x%02x after InjectNACK(false)", id)
	}
}

func TestBME280Truth(t *testing.T) {
	c := newChip(t, sim.Signals{
		Temperature: sim.Signal{Shape: "ramp", From: -50, To: 100, Period: sim.Duration(150 * time.Second)},
		Pressure:    sim.Signal{Value: 1013.25},
		Humidity:    sim.Signal{Shape: "step", From: -3, To: 104, Start: sim.Duration(time.Second)},
	})
	tests := []struct {
		at          time.Duration
		c, hPa, pct float64
	}{
		{0, -40, 1013.25, 0},
		{50 * time.Second, 0, 1013.25, 100},
		{150 * time.Second, 85, 1013.25, 100},
	}
	for _, tt := range tests {
		c1, hPa, pct := c.dev.Truth(epoch.Add(tt.at))
		if c1 != tt.c || hPa != tt.hPa || pct != tt.pct {
			t.Errorf("Truth(+%v) = %v, %v, %v; want %v, %v, %v", tt.at, c1, hPa, pct, tt.c, tt.hPa, tt.pct)
		}
	}
}

// FuzzBME280Tx checks that no transaction panics, and that none changes the chip id or the
// calibration.
func FuzzBME280Tx(f *testing.F) {
	f.Add([]byte{0xD0}, uint8(1))
	f.Add([]byte{0xF2, 0x01, 0xF4, 0x25, 0xF7}, uint8(8))
	f.Add([]byte{0xF4, 0x27}, uint8(255))
	f.Add([]byte{0xE0, 0xB6, 0xFF}, uint8(4))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, w []byte, n uint8) {
		dev := sim.NewBME280(room, nil)
		ctx := context.Background()
		if err := dev.Tx(ctx, w, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		r := make([]byte, 26)
		if err := dev.Tx(ctx, []byte{0xD0}, r[:1]); err != nil || r[0] != 0x60 {
			t.Fatalf("chip id 0x%02x, %v", r[0], err)
		}
		if err := dev.Tx(ctx, []byte{0x88}, r); err != nil || binary.LittleEndian.Uint16(r) != 27504 {
			t.Fatalf("T1 %d, %v", binary.LittleEndian.Uint16(r), err)
		}
	})
}
