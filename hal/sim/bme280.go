package sim

import (
	"context"
	"encoding/binary"
	"math"
	"sync"
	"time"

	"github.com/perch-edge/perch/hal"
)

// BME280 registers (Bosch BME280 datasheet, section 5.3).
const (
	bmeRegCalib0   = 0x88 // calibration T1..T3, P1..P9, (0xA0 unused), H1: 0x88..0xA1
	bmeRegID       = 0xD0
	bmeRegReset    = 0xE0
	bmeRegCalib26  = 0xE1 // calibration H2..H6: 0xE1..0xE7
	bmeRegCtrlHum  = 0xF2
	bmeRegStatus   = 0xF3 // always 0: conversions and NVM copies finish at once
	bmeRegCtrlMeas = 0xF4
	bmeRegConfig   = 0xF5
	bmeRegData     = 0xF7 // press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb: 0xF7..0xFE

	bmeChipID    = 0x60
	bmeResetWord = 0xB6
)

// Sensor range of the BME280 (datasheet, table 1); truth outside it is clamped.
const (
	bmeMinTempC, bmeMaxTempC = -40.0, 85.0
	bmeMinHPa, bmeMaxHPa     = 300.0, 1100.0
	bmeMinHum, bmeMaxHum     = 0.0, 100.0
)

// bmeCal is a set of BME280 trimming parameters. The temperature and pressure values are the
// datasheet's example (section 8.1 / 8.2); the humidity ones are typical of real chips.
type bmeCal struct {
	T1             uint16
	T2, T3         int16
	P1             uint16
	P2, P3, P4, P5 int16
	P6, P7, P8, P9 int16
	H1             uint8
	H2             int16
	H3             uint8
	H4, H5         int16 // 12-bit signed
	H6             int8
}

var bmeDefaultCal = bmeCal{
	T1: 27504, T2: 26435, T3: -1000,
	P1: 36477, P2: -10685, P3: 3024, P4: 2855, P5: 140, P6: -7, P7: 15500, P8: -14600, P9: 6000,
	H1: 75, H2: 362, H3: 0, H4: 324, H5: 50, H6: 30,
}

// BME280 is a register-level model of a Bosch BME280 on I2C. Attach it to a [Provider] at 0x76
// or 0x77. It is safe for concurrent use.
//
// It models the chip id (0xD0), soft reset (0xE0), the calibration registers (0x88..0xA1,
// 0xE1..0xE7), ctrl_hum (0xF2, effective from the next ctrl_meas write), status (0xF3),
// ctrl_meas (0xF4), config (0xF5) and the data registers (0xF7..0xFE). A write is a sequence of
// (register, value) pairs; a trailing odd byte sets the register pointer, and a read continues
// from the pointer with auto-increment. Writes to read-only registers are ignored; registers the
// chip does not have read 0.
//
// A measurement completes at once: writing forced mode to ctrl_meas latches the [Signals] at the
// clock's current time into the data registers and returns the chip to sleep mode; in normal
// mode every read transaction latches a fresh measurement first. A quantity whose oversampling is
// "skipped" reads 0x80000 (0x8000 for humidity). Simplifications: the ADC always has its full
// 20-bit (16-bit humidity) resolution, there is no sensor noise beyond what the signals script,
// and the IIR filter and standby time in config are stored but have no effect.
type BME280 struct {
	sig   Signals
	clock func() time.Time
	start time.Time
	cal   bmeCal
	image [256]byte // register contents after power-on or soft reset

	mu    sync.Mutex
	regs  [256]byte
	ptr   byte // register pointer
	osrsH byte // effective humidity oversampling (ctrl_hum as of the last ctrl_meas write)
	nack  bool // InjectNACK
}

// NewBME280 returns a BME280 in its power-on state that measures sig. clock gives the current
// time (nil means time.Now); the signals are evaluated at the time elapsed since the clock's time
// when NewBME280 was called. sig should have passed [Signals.Validate].
func NewBME280(sig Signals, clock func() time.Time) *BME280 {
	if clock == nil {
		clock = time.Now
	}
	d := &BME280{sig: sig, clock: clock, start: clock(), cal: bmeDefaultCal}
	d.image = bmeImage(&d.cal)
	d.reset()
	return d
}

// SetStart sets the instant the signals' time counts from (by default, when NewBME280 was
// called), so that a script starts when the pipeline does. Call it before the device is in use.
func (d *BME280) SetStart(t time.Time) { d.start = t }

// bmeImage returns the power-on register contents for the calibration c.
func bmeImage(c *bmeCal) [256]byte {
	var m [256]byte
	le := binary.LittleEndian
	b := m[bmeRegCalib0:]
	le.PutUint16(b[0:], c.T1)
	for i, v := range []int16{c.T2, c.T3} {
		le.PutUint16(b[2+2*i:], uint16(v))
	}
	le.PutUint16(b[6:], c.P1)
	for i, v := range []int16{c.P2, c.P3, c.P4, c.P5, c.P6, c.P7, c.P8, c.P9} {
		le.PutUint16(b[8+2*i:], uint16(v))
	}
	b[25] = c.H1 // 0xA1
	b = m[bmeRegCalib26:]
	le.PutUint16(b[0:], uint16(c.H2))
	b[2] = c.H3
	b[3] = byte(c.H4 >> 4)                      // 0xE4: H4[11:4]
	b[4] = byte(c.H4&0x0F) | byte(c.H5&0x0F)<<4 // 0xE5: H4[3:0] in [3:0], H5[3:0] in [7:4]
	b[5] = byte(c.H5 >> 4)                      // 0xE6: H5[11:4]
	b[6] = byte(c.H6)
	m[bmeRegID] = bmeChipID
	copy(m[bmeRegData:], []byte{0x80, 0, 0, 0x80, 0, 0, 0x80, 0})
	return m
}

// reset puts the registers in their power-on state. d.mu must be held (or d not yet shared).
func (d *BME280) reset() {
	d.regs = d.image
	d.ptr = 0
	d.osrsH = 0
}

// InjectNACK makes every following transaction fail with [hal.ErrNACK] (on), or work again (off).
func (d *BME280) InjectNACK(on bool) {
	d.mu.Lock()
	d.nack = on
	d.mu.Unlock()
}

// Truth returns what an ideal sensor reports at t: the signals evaluated at t minus the start
// time, clamped to the sensor's range (-40..85 °C, 300..1100 hPa, 0..100 %RH; NaN reads as the
// bottom of the range). A driver reading the chip at t should get these values to within the
// ADC resolution (below 0.005 in each unit).
func (d *BME280) Truth(t time.Time) (tempC, pressHPa, humPct float64) {
	since := t.Sub(d.start)
	return clamp(d.sig.Temperature.At(since), bmeMinTempC, bmeMaxTempC),
		clamp(d.sig.Pressure.At(since), bmeMinHPa, bmeMaxHPa),
		clamp(d.sig.Humidity.At(since), bmeMinHum, bmeMaxHum)
}

func clamp(v, lo, hi float64) float64 {
	switch {
	case math.IsNaN(v) || v < lo:
		return lo
	case v > hi:
		return hi
	}
	return v
}

// Tx implements [I2CDevice]: w is a sequence of (register, value) pairs, optionally followed by
// one register address; r is then read from the register pointer on.
func (d *BME280) Tx(_ context.Context, w, r []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nack {
		return hal.ErrNACK
	}
	i := 0
	for ; i+1 < len(w); i += 2 {
		d.write(w[i], w[i+1])
	}
	if i < len(w) {
		d.ptr = w[i]
	}
	if len(r) == 0 {
		return nil
	}
	if d.regs[bmeRegCtrlMeas]&3 == 3 { // normal mode: the data registers are always fresh
		d.measure()
	}
	for k := range r {
		r[k] = d.regs[d.ptr]
		d.ptr++
	}
	return nil
}

// write handles one register write. d.mu must be held.
func (d *BME280) write(reg, v byte) {
	d.ptr = reg
	switch reg {
	case bmeRegReset:
		if v == bmeResetWord {
			d.reset()
		}
	case bmeRegCtrlHum:
		d.regs[reg] = v & 0x07
	case bmeRegConfig:
		d.regs[reg] = v &^ 0x02 // bit 1 is reserved
	case bmeRegCtrlMeas:
		d.regs[reg] = v
		d.osrsH = d.regs[bmeRegCtrlHum] & 0x07
		switch v & 3 {
		case 1, 2: // forced: measure once, back to sleep
			d.measure()
			d.regs[reg] &^= 3
		case 3:
			d.measure()
		}
	}
}

// measure latches the signals at the current time into the data registers. d.mu must be held.
func (d *BME280) measure() {
	tempC, hPa, hum := d.Truth(d.clock())
	c := &d.cal
	adcT := invert(1<<20-1, tempC, func(a int32) float64 { t, _ := c.temperature(a); return t })
	_, tFine := c.temperature(adcT)
	adcP := invert(1<<20-1, -hPa*100, func(a int32) float64 { return -c.pressure(a, tFine) })
	adcH := invert(1<<16-1, hum, func(a int32) float64 { return c.humidity(a, tFine) })

	ctrl := d.regs[bmeRegCtrlMeas]
	if ctrl>>5 == 0 { // osrs_t: skipped
		adcT = 0x80000
	}
	if ctrl>>2&7 == 0 { // osrs_p: skipped
		adcP = 0x80000
	}
	if d.osrsH == 0 {
		adcH = 0x8000
	}
	b := d.regs[bmeRegData:]
	put20(b[0:], adcP)
	put20(b[3:], adcT)
	b[6], b[7] = byte(adcH>>8), byte(adcH)
}

// put20 stores a 20-bit ADC value as msb, lsb, xlsb[7:4].
func put20(b []byte, v int32) {
	b[0], b[1], b[2] = byte(v>>12), byte(v>>4), byte(v<<4)
}

// invert returns the raw value in [0, max] at which the nondecreasing f comes nearest to want.
func invert(max int32, want float64, f func(int32) float64) int32 {
	lo, hi := int32(0), max
	for lo < hi { // find the first raw value with f >= want (or max)
		mid := lo + (hi-lo)/2
		if f(mid) < want {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo > 0 && want-f(lo-1) < f(lo)-want {
		return lo - 1
	}
	return lo
}

// The compensation formulas below are the floating-point ones of the datasheet, section 8.1,
// without the final clamping to the sensor range. They must stay identical to those of the
// driver, modules/drivers/bme280, which clamps their results; its tests check the two agree.

// temperature returns the temperature in °C for the raw value adc, and t_fine.
func (c *bmeCal) temperature(adc int32) (float64, int32) {
	var1 := (float64(adc)/16384 - float64(c.T1)/1024) * float64(c.T2)
	var2 := float64(adc)/131072 - float64(c.T1)/8192
	var2 = var2 * var2 * float64(c.T3)
	return (var1 + var2) / 5120, int32(var1 + var2)
}

// pressure returns the pressure in Pa for the raw value adc at the temperature tFine.
func (c *bmeCal) pressure(adc, tFine int32) float64 {
	var1 := float64(tFine)/2 - 64000
	var2 := var1 * var1 * float64(c.P6) / 32768
	var2 += var1 * float64(c.P5) * 2
	var2 = var2/4 + float64(c.P4)*65536
	var1 = (float64(c.P3)*var1*var1/524288 + float64(c.P2)*var1) / 524288
	var1 = (1 + var1/32768) * float64(c.P1)
	if var1 == 0 {
		return 0
	}
	p := 1048576 - float64(adc)
	p = (p - var2/4096) * 6250 / var1
	var1 = float64(c.P9) * p * p / 2147483648
	var2 = p * float64(c.P8) / 32768
	return p + (var1+var2+float64(c.P7))/16
}

// humidity returns the relative humidity in % for the raw value adc at the temperature tFine.
func (c *bmeCal) humidity(adc, tFine int32) float64 {
	h := float64(tFine) - 76800
	h = (float64(adc) - (float64(c.H4)*64 + float64(c.H5)/16384*h)) *
		(float64(c.H2) / 65536 * (1 + float64(c.H6)/67108864*h*(1+float64(c.H3)/67108864*h)))
	return h * (1 - float64(c.H1)*h/524288)
}
