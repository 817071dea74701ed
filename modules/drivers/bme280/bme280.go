// Package bme280 is the chip logic of the Perch driver for the Bosch BME280 temperature, pressure
// and humidity sensor on I2C: initialisation, forced measurements and compensation.
//
// # Overview
//
// The package does no I/O of its own: every register access goes through a [Tx] that the caller
// binds to a bus and address. It runs natively (over a [hal.I2C], for example a simulated one)
// as the baseline of the pipeline benchmark, and it is the reference that the Wasm driver module
// in ./wasm (written in C for speed, see README.md) is tested against, bit for bit. It uses only
// the standard library's errors and encoding/binary packages.
//
// [Chip.Init] checks the chip id, soft-resets the chip, reads its calibration and sets
// oversampling x1 for all three quantities; [Chip.Read] triggers a forced measurement, reads the
// data registers in one burst and compensates them with the floating-point formulas of the
// datasheet (section 8.1). Read allocates nothing.
//
// # Usage
//
//	tx := func(w, r []byte) error { return bus.Tx(ctx, bme280.AddrPrimary, w, r) }
//	var c bme280.Chip
//	if err := c.Init(tx); err != nil { ... }
//	r, err := c.Read(tx) // r.TemperatureC, r.PressureHPa, r.HumidityPct
//
// [hal.I2C]: https://pkg.go.dev/github.com/perch-edge/perch/hal#I2C
package bme280

import (
	"encoding/binary"
	"errors"
)

// I2C addresses: SDO to GND gives AddrPrimary, SDO to VDDIO gives AddrSecondary.
const (
	AddrPrimary   = 0x76
	AddrSecondary = 0x77
)

// ChipID is the value of the BME280's id register.
const ChipID = 0x60

// Registers (datasheet, section 5.3).
const (
	regCalib0   = 0x88 // T1..T3, P1..P9, (0xA0 unused), H1: 26 bytes
	regID       = 0xD0
	regReset    = 0xE0
	regCalib26  = 0xE1 // H2..H6: 7 bytes
	regCtrlHum  = 0xF2
	regCtrlMeas = 0xF4
	regData     = 0xF7 // press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb: 8 bytes

	resetWord = 0xB6
	osrsHx1   = 0x01        // ctrl_hum: humidity oversampling x1
	measX1    = 1<<5 | 1<<2 // ctrl_meas: temperature and pressure oversampling x1, sleep mode
	modeForce = 0x01        // ctrl_meas mode bits: forced
)

// Sentinel errors.
var (
	ErrChipID  = errors.New("bme280: wrong chip id")        // the id register does not read ChipID
	ErrNotInit = errors.New("bme280: chip not initialised") // Read before a successful Init
)

// Tx is one combined I2C transaction with the chip: write w, then read len(r) bytes into r. The
// caller binds the bus and the address. Either slice may be empty.
type Tx func(w, r []byte) error

// Reading is one compensated measurement, clamped to the sensor's range.
type Reading struct {
	TemperatureC float64 // -40..85 °C
	PressureHPa  float64 // 300..1100 hPa
	HumidityPct  float64 // 0..100 %RH
}

// Chip is the driver state of one BME280: its calibration and preallocated buffers. The zero
// value must be initialised with [Chip.Init] before [Chip.Read]. A Chip is not safe for
// concurrent use.
type Chip struct {
	cal   calibration
	ready bool
	w     [2]byte
	data  [8]byte
}

// Init checks the chip id, soft-resets the chip, reads its calibration (two burst reads) and sets
// oversampling x1 for humidity, temperature and pressure, leaving the chip in sleep mode. A chip
// that answers with another id gives an error matching [ErrChipID]; errors of tx are returned
// wrapped. Init may be called again, for example after the chip was power-cycled.
func (c *Chip) Init(tx Tx) error {
	c.ready = false
	var id [1]byte
	if err := tx([]byte{regID}, id[:]); err != nil {
		return wrap("read chip id", err)
	}
	if id[0] != ChipID {
		return chipIDError(id[0])
	}
	if err := tx([]byte{regReset, resetWord}, nil); err != nil {
		return wrap("soft reset", err)
	}
	var cal [26 + 7]byte
	if err := tx([]byte{regCalib0}, cal[:26]); err != nil {
		return wrap("read calibration", err)
	}
	if err := tx([]byte{regCalib26}, cal[26:]); err != nil {
		return wrap("read calibration", err)
	}
	c.cal.decode(&cal)
	// ctrl_hum only takes effect with the following write to ctrl_meas.
	if err := tx([]byte{regCtrlHum, osrsHx1, regCtrlMeas, measX1}, nil); err != nil {
		return wrap("configure", err)
	}
	c.ready = true
	return nil
}

// Read triggers a forced measurement, reads the data registers 0xF7..0xFE in one burst and
// compensates them. On a real chip a measurement at oversampling x1 takes up to 10 ms, and the data
// registers keep the previous values until it ends, so a caller that reads at once gets the
// previous measurement. Errors of tx are returned wrapped. Read allocates nothing.
func (c *Chip) Read(tx Tx) (Reading, error) {
	if !c.ready {
		return Reading{}, ErrNotInit
	}
	c.w[0], c.w[1] = regCtrlMeas, measX1|modeForce
	if err := tx(c.w[:2], nil); err != nil {
		return Reading{}, wrap("start measurement", err)
	}
	c.w[0] = regData
	if err := tx(c.w[:1], c.data[:]); err != nil {
		return Reading{}, wrap("read data", err)
	}
	b := &c.data
	adcP := int32(b[0])<<12 | int32(b[1])<<4 | int32(b[2])>>4
	adcT := int32(b[3])<<12 | int32(b[4])<<4 | int32(b[5])>>4
	adcH := int32(b[6])<<8 | int32(b[7])
	return c.cal.compensate(adcT, adcP, adcH), nil
}

// calibration holds the chip's trimming parameters (datasheet, section 4.2.2).
type calibration struct {
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

// decode fills c from registers 0x88..0xA1 (b[0:26]) and 0xE1..0xE7 (b[26:33]).
func (c *calibration) decode(b *[33]byte) {
	le := binary.LittleEndian
	s16 := func(i int) int16 { return int16(le.Uint16(b[i:])) }
	c.T1, c.T2, c.T3 = le.Uint16(b[0:]), s16(2), s16(4)
	c.P1, c.P2, c.P3, c.P4, c.P5 = le.Uint16(b[6:]), s16(8), s16(10), s16(12), s16(14)
	c.P6, c.P7, c.P8, c.P9 = s16(16), s16(18), s16(20), s16(22)
	c.H1 = b[25]
	h := b[26:]
	c.H2 = int16(le.Uint16(h[0:]))
	c.H3 = h[2]
	c.H4 = int16(int8(h[3]))<<4 | int16(h[4]&0x0F) // 0xE4 = H4[11:4], 0xE5[3:0] = H4[3:0]
	c.H5 = int16(int8(h[5]))<<4 | int16(h[4]>>4)   // 0xE6 = H5[11:4], 0xE5[7:4] = H5[3:0]
	c.H6 = int8(h[6])
}

// compensate turns raw ADC values into a Reading with the floating-point formulas of the
// datasheet, section 8.1, clamped to the sensor's range as in Bosch's BME280 API. The simulated
// chip in hal/sim inverts the same formulas; keep the two identical.
func (c *calibration) compensate(adcT, adcP, adcH int32) Reading {
	// Temperature, and t_fine, which carries it into the other two.
	var1 := (float64(adcT)/16384 - float64(c.T1)/1024) * float64(c.T2)
	var2 := float64(adcT)/131072 - float64(c.T1)/8192
	var2 = var2 * var2 * float64(c.T3)
	tFine := int32(var1 + var2)
	r := Reading{TemperatureC: clamp((var1+var2)/5120, -40, 85)}

	// Pressure, in Pa.
	var1 = float64(tFine)/2 - 64000
	var2 = var1 * var1 * float64(c.P6) / 32768
	var2 += var1 * float64(c.P5) * 2
	var2 = var2/4 + float64(c.P4)*65536
	var1 = (float64(c.P3)*var1*var1/524288 + float64(c.P2)*var1) / 524288
	var1 = (1 + var1/32768) * float64(c.P1)
	p := 30000.0 // a zero var1 (invalid calibration) would divide by zero
	if var1 != 0 {
		p = 1048576 - float64(adcP)
		p = (p - var2/4096) * 6250 / var1
		var1 = float64(c.P9) * p * p / 2147483648
		var2 = p * float64(c.P8) / 32768
		p += (var1 + var2 + float64(c.P7)) / 16
	}
	r.PressureHPa = clamp(p, 30000, 110000) / 100

	// Relative humidity, in %.
	h := float64(tFine) - 76800
	h = (float64(adcH) - (float64(c.H4)*64 + float64(c.H5)/16384*h)) *
		(float64(c.H2) / 65536 * (1 + float64(c.H6)/67108864*h*(1+float64(c.H3)/67108864*h)))
	h *= 1 - float64(c.H1)*h/524288
	r.HumidityPct = clamp(h, 0, 100)
	return r
}

func clamp(v, lo, hi float64) float64 {
	switch {
	case v < lo:
		return lo
	case v > hi:
		return hi
	}
	return v
}

// opError wraps an error of the Tx with what the driver was doing. It does what
// fmt.Errorf("bme280: %s: %w") would, without pulling fmt (and reflection) into the Wasm module.
type opError struct {
	op  string
	err error
}

func wrap(op string, err error) error { return &opError{op, err} }

func (e *opError) Error() string { return "bme280: " + e.op + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

// chipIDError reports the id a chip answered with; it matches ErrChipID.
type chipIDError byte

func (e chipIDError) Error() string {
	const hex = "0123456789abcdef"
	return "bme280: chip id 0x" + string([]byte{hex[e>>4], hex[e&15]}) + ", want 0x60"
}

func (e chipIDError) Unwrap() error { return ErrChipID }
