package sim

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/perch-edge/perch/hal"
)

// ADXL345 registers (Analog Devices ADXL345 datasheet, register map).
const (
	ADXL345RegDevID      = 0x00
	ADXL345RegOfsX       = 0x1E // OFSX, OFSY, OFSZ: 0x1E..0x20
	ADXL345RegBWRate     = 0x2C
	ADXL345RegPowerCtl   = 0x2D
	ADXL345RegIntSource  = 0x30
	ADXL345RegDataFormat = 0x31
	ADXL345RegDataX0     = 0x32 // DATAX0, DATAX1, DATAY0, DATAY1, DATAZ0, DATAZ1: 0x32..0x37
	ADXL345RegFIFOCtl    = 0x38
	ADXL345RegFIFOStatus = 0x39

	ADXL345DevID = 0xE5 // the fixed device id

	// I2C addresses: ALT ADDRESS low (0x53) or high (0x1D).
	ADXL345AddrLow  = 0x53
	ADXL345AddrHigh = 0x1D
)

// Register bits.
const (
	adxlMeasure    = 0x08 // POWER_CTL
	adxlFullRes    = 0x08 // DATA_FORMAT
	adxlJustify    = 0x04 // DATA_FORMAT: left-justified
	adxlDataReady  = 0x80 // INT_SOURCE
	adxlWatermark  = 0x02 // INT_SOURCE: set with FIFO_CTL's sample count 0 (as after reset)
	adxlLastReg    = 0x39
	adxlOfsLSBPerG = 64 // offsets: 15.6 mg/LSB
)

// adxlRW lists, for each register that can be written, the bits that can (reserved bits read 0).
var adxlRW = map[byte]byte{
	0x1D: 0xFF, 0x1E: 0xFF, 0x1F: 0xFF, 0x20: 0xFF, 0x21: 0xFF, 0x22: 0xFF, 0x23: 0xFF,
	0x24: 0xFF, 0x25: 0xFF, 0x26: 0xFF, 0x27: 0xFF, 0x28: 0xFF, 0x29: 0xFF, 0x2A: 0x0F,
	ADXL345RegBWRate: 0x1F, ADXL345RegPowerCtl: 0x3F, 0x2E: 0xFF, 0x2F: 0xFF,
	ADXL345RegDataFormat: 0xEF, ADXL345RegFIFOCtl: 0xFF,
}

// ADXL345Signals are the accelerations an [ADXL345] measures, in g, along its X, Y and Z axes.
type ADXL345Signals struct {
	X Signal `json:"x" yaml:"x"`
	Y Signal `json:"y" yaml:"y"`
	Z Signal `json:"z" yaml:"z"`
}

// Validate reports every problem of the three signals at once, each naming its field, such as
// `signals.z: unknown shape "sinus"`. Each error matches [ErrBadSignal].
func (s *ADXL345Signals) Validate() error {
	return validateSignals(map[string]*Signal{"x": &s.X, "y": &s.Y, "z": &s.Z}, "x", "y", "z")
}

// ADXL345 is a register-level model of an Analog Devices ADXL345 3-axis accelerometer, on SPI
// ([ADXL345.SPI]) or on I2C ([ADXL345.I2C]). It is safe for concurrent use.
//
// It models DEVID (0xE5), the offset registers OFSX..OFSZ (15.6 mg/LSB, added to the output),
// BW_RATE (the output data rate: 3200 Hz / 2^(15 - rate code)), POWER_CTL (the Measure bit;
// the chip powers up in standby), INT_SOURCE (DATA_READY, set when a sample newer than the last
// data read is in the data registers and cleared by a read of any of them), DATA_FORMAT (range
// ±2/4/8/16 g, FULL_RES, justify), DATAX0..DATAZ1 and FIFO_CTL/FIFO_STATUS (bypass only). The
// other registers of the datasheet (tap, activity, free fall, interrupt enable and map) store
// what is written and have no effect; reserved bits read 0, read-only registers ignore writes,
// and registers the chip does not have read 0.
//
// Data: while measuring, the chip takes a sample of its [ADXL345Signals] at every multiple of the
// output data period since the start (the first one period after Measure is set). A sample is
// the signal in g plus the offset, times the scale factor — 256 LSB/g in full resolution at
// every range, 256/(range/2) LSB/g in 10-bit mode — rounded to the nearest integer and saturated
// at the range's resolution (10 bits at ±2 g, 11, 12 and 13 bits at ±4, 8 and 16 g in full
// resolution; 10 bits in 10-bit mode), stored as little-endian two's complement, right-justified
// with sign extension or left-justified. One transaction reads one consistent sample, as on the
// chip. Simplifications: no noise beyond what the signals script, no self-test deflection, no
// FIFO modes, no interrupt pins, no sleep or low-power timing.
//
// Faults ([ADXL345.Faults]): nack (I2C only), timeout, disconnect and corrupt fail transactions
// (see the package doc); stuck stops the sampling, so the data registers freeze and DATA_READY
// stays clear. A disconnect is a power loss: the first transaction after it ends finds the chip
// in its power-on state (standby, registers reset).
type ADXL345 struct {
	sig    ADXL345Signals
	clock  func() time.Time
	faults *Faults

	mu          sync.Mutex
	start       time.Time
	regs        [adxlLastReg + 1]byte
	measureFrom time.Time // when Measure was last set
	sampleAt    time.Time // instant of the sample in the data registers
	sampled     bool      // the data registers hold a sample
	ready       bool      // DATA_READY
	lostPower   bool      // a transaction saw a disconnect
	ptr         byte      // I2C register pointer
}

// NewADXL345 returns an ADXL345 in its power-on state that measures sig. clock gives the current
// time (nil means time.Now); the signals are evaluated at the time elapsed since the clock's time
// when NewADXL345 was called (see [ADXL345.SetStart]). sig should have passed
// [ADXL345Signals.Validate].
func NewADXL345(sig ADXL345Signals, clock func() time.Time) *ADXL345 {
	if clock == nil {
		clock = time.Now
	}
	d := &ADXL345{sig: sig, clock: clock, faults: NewFaults(clock), start: clock()}
	d.reset()
	return d
}

// SetStart sets the instant the signals' time and the fault scripts count from.
func (d *ADXL345) SetStart(t time.Time) {
	d.mu.Lock()
	d.start = t
	d.mu.Unlock()
	d.faults.SetStart(t)
}

// Faults returns the chip's faults, to inject or script.
func (d *ADXL345) Faults() *Faults { return d.faults }

// reset puts the chip in its power-on state. d.mu must be held.
func (d *ADXL345) reset() {
	d.regs = [adxlLastReg + 1]byte{}
	d.regs[ADXL345RegDevID] = ADXL345DevID
	d.regs[ADXL345RegBWRate] = 0x0A // 100 Hz
	d.sampled, d.ready = false, false
	d.ptr = 0
}

// Truth returns the signals at t (since the start), in g, before offset, quantisation and
// saturation; NaN reads as 0.
func (d *ADXL345) Truth(t time.Time) (x, y, z float64) {
	d.mu.Lock()
	since := t.Sub(d.start)
	d.mu.Unlock()
	return d.truth(since)
}

func (d *ADXL345) truth(since time.Duration) (x, y, z float64) {
	nan0 := func(v float64) float64 {
		if math.IsNaN(v) {
			return 0
		}
		return v
	}
	return nan0(d.sig.X.At(since)), nan0(d.sig.Y.At(since)), nan0(d.sig.Z.At(since))
}

// ADXL345Raw returns the value the data registers hold for an acceleration of g (offset
// included) under the DATA_FORMAT value format, right-justified: rounded and saturated as the
// [ADXL345] doc says.
func ADXL345Raw(g float64, format byte) int16 {
	rng := uint(format & 3)
	lsbPerG, bits := 256.0, 10
	if format&adxlFullRes != 0 {
		bits += int(rng)
	} else {
		lsbPerG /= float64(uint(1) << rng)
	}
	hi := float64(int(1)<<(bits-1)) - 1
	v := math.Round(g * lsbPerG)
	switch {
	case math.IsNaN(v):
		v = 0
	case v > hi:
		v = hi
	case v < -hi-1:
		v = -hi - 1
	}
	return int16(v)
}

// ADXL345Period returns the output data period for the BW_RATE value rate.
func ADXL345Period(rate byte) time.Duration {
	// 3200 Hz / 2^(15-code): 312.5 µs at code 15, 10 s at code 0.
	return time.Duration(312500*(int64(1)<<(15-rate&0x0F))) * time.Nanosecond
}

// sample brings the data registers up to date at the device time now. d.mu must be held.
func (d *ADXL345) sample(now time.Time) {
	if d.regs[ADXL345RegPowerCtl]&adxlMeasure == 0 {
		return
	}
	st := d.faults.SignalTime(now)
	period := ADXL345Period(d.regs[ADXL345RegBWRate])
	since := st.Sub(d.start)
	if since < 0 {
		return
	}
	at := d.start.Add(since / period * period) // the latest sampling instant
	if at.Sub(d.measureFrom) < period || (d.sampled && !at.After(d.sampleAt)) {
		return // the first sample comes one period after Measure; no newer sample yet
	}
	x, y, z := d.truth(at.Sub(d.start))
	format := d.regs[ADXL345RegDataFormat]
	for i, g := range []float64{x, y, z} {
		g += float64(int8(d.regs[ADXL345RegOfsX+i])) / adxlOfsLSBPerG
		v := uint16(ADXL345Raw(g, format))
		if format&adxlJustify != 0 {
			bits := 10
			if format&adxlFullRes != 0 {
				bits += int(format & 3)
			}
			v <<= 16 - bits
		}
		d.regs[ADXL345RegDataX0+2*i] = byte(v)
		d.regs[ADXL345RegDataX0+2*i+1] = byte(v >> 8)
	}
	d.sampleAt, d.sampled, d.ready = at, true, true
}

// begin starts a transaction at now: it checks the faults and latches a fresh sample. d.mu must
// be held.
func (d *ADXL345) begin(now time.Time, i2c bool) error {
	if err := d.faults.busErr(now, i2c); err != nil {
		if d.faults.ActiveAt(FaultDisconnect, now) {
			d.lostPower = true
		}
		return err
	}
	if d.lostPower {
		d.lostPower = false
		d.reset()
	}
	d.sample(now)
	return nil
}

// read returns register reg. d.mu must be held.
func (d *ADXL345) read(reg byte) byte {
	switch {
	case reg > adxlLastReg:
		return 0
	case reg == ADXL345RegIntSource:
		v := byte(adxlWatermark)
		if d.ready {
			v |= adxlDataReady
		}
		return v
	case reg >= ADXL345RegDataX0 && reg < ADXL345RegDataX0+6:
		d.ready = false
	}
	return d.regs[reg]
}

// write sets register reg. d.mu must be held.
func (d *ADXL345) write(now time.Time, reg, v byte) {
	mask, ok := adxlRW[reg]
	if !ok {
		return
	}
	old := d.regs[reg]
	d.regs[reg] = v & mask
	if reg == ADXL345RegPowerCtl && v&adxlMeasure != 0 && old&adxlMeasure == 0 {
		d.measureFrom = d.faults.SignalTime(now)
		d.sampled, d.ready = false, false
	}
}

// I2C returns the chip as a device on an I2C bus (attach it at 0x53 or 0x1D): a write is a
// register address followed by values for it and the registers after it (auto-increment); a
// read continues from the register after the last one addressed, so a write of the address
// alone followed by a read (one combined transaction) reads from that register on.
func (d *ADXL345) I2C() I2CDevice { return adxlI2C{d} }

// SPI returns the chip as a device behind a chip select of a 4-wire SPI bus in mode 3 (clock
// idles high, data sampled on the rising edge; the simulated bus does not check the mode). The
// first byte is the address byte: bit 7 R/W (1 reads), bit 6 MB (1 increments the address after
// each byte; 0 keeps it), bits 5..0 the register. Each following byte writes the register (a
// write) or clocks it out (a read); the byte clocked out during the address byte is 0.
func (d *ADXL345) SPI() SPIDevice { return adxlSPI{d} }

type adxlI2C struct{ d *ADXL345 }

func (a adxlI2C) Tx(_ context.Context, w, r []byte) error {
	d := a.d
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock()
	if err := d.begin(now, true); err != nil {
		return err
	}
	if len(w) > 0 {
		d.ptr = w[0]
		for _, v := range w[1:] {
			d.write(now, d.ptr, v)
			d.ptr++
		}
	}
	for k := range r {
		r[k] = d.read(d.ptr)
		d.ptr++
	}
	return nil
}

type adxlSPI struct{ d *ADXL345 }

func (a adxlSPI) Tx(_ context.Context, w, r []byte) error {
	d := a.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(w) == 0 {
		return nil
	}
	if len(r) != len(w) {
		return hal.ErrInvalid
	}
	now := d.clock()
	if err := d.begin(now, false); err != nil {
		return err
	}
	read, multi, reg := w[0]&0x80 != 0, w[0]&0x40 != 0, w[0]&0x3F
	r[0] = 0
	for k := 1; k < len(w); k++ {
		if read {
			r[k] = d.read(reg)
		} else {
			r[k] = 0
			d.write(now, reg, w[k])
		}
		if multi {
			reg = (reg + 1) & 0x3F
		}
	}
	return nil
}

// validateSignals validates the named signals in order, naming each field "signals.<name>".
func validateSignals(sigs map[string]*Signal, order ...string) error {
	var errs []error
	for _, name := range order {
		errs = append(errs, sigs[name].validate("signals."+name)...)
	}
	return errors.Join(errs...)
}
