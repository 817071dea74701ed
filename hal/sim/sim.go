// Package sim is the simulated backend of [hal]: register-level device models behind in-memory
// buses, driven by scripted signals, with hooks for injecting faults.
//
// # Overview
//
// A [Provider] implements [hal.Provider]. Devices are attached to it where they sit on the
// wire: an [I2CDevice] on a bus at an address ([Provider.AttachI2C]), an [SPIDevice] on a bus
// and chip select ([Provider.AttachSPI]), a [GPIODevice] on a line ([Provider.AttachGPIO]) and a
// [UARTDevice] on a named port ([Provider.AttachUART]). An I2C transaction to an address with no
// device fails with an error wrapping [hal.ErrNACK], as on a real bus; an SPI port, GPIO line or
// UART port with nothing attached does not exist (its errors wrap [hal.ErrNoDevice]).
//
// The device models speak their chips' real protocols:
//
//   - [BME280]: the Bosch temperature, pressure and humidity sensor on I2C, at the register
//     level (chip id, soft reset, calibration data, control and ADC data registers). It
//     computes raw ADC values by inverting the datasheet's compensation formulas, so a driver
//     that compensates them reads back the values of its [Signals].
//   - [ADXL345]: the Analog Devices accelerometer on SPI (mode 3, R/W and MB bits in the address
//     byte) or I2C (0x53 or 0x1D): DEVID, BW_RATE, POWER_CTL, INT_SOURCE (DATA_READY),
//     DATA_FORMAT (range, FULL_RES, justify), offsets and the data registers, sampled at the
//     output data rate from three signals in g.
//   - [Button]: a GPIO input (button or limit switch) whose level follows a signal; [Relay]: a
//     GPIO output that records its level and the times it changed.
//   - [PMS5003]: the Plantower particulate sensor on a UART: one 32-byte frame per second of
//     simulated time, arriving byte by byte at 9600 baud, with its commands (active and passive
//     mode, sleep).
//
// A [Signal] describes a physical quantity over time (constant, sine, ramp, step, noise, spike,
// or a sum of those) and decodes from JSON or YAML configuration.
//
// # Faults
//
// Every model but the BME280 (which has [BME280.InjectNACK]; wrap it with [FaultyI2C] for the
// rest) has a [Faults] set: turn a fault on and off by hand with [Faults.Inject], or script it
// with [Faults.Script] and [Fault] values decoded from configuration
// (faults: [{kind: nack, at: 5s, for: 2s}]). The kinds, and what they do:
//
//	kind        I2C (BME280, ADXL345)   SPI (ADXL345)     GPIO (Button, Relay)   UART (PMS5003)
//	nack        hal.ErrNACK             -                 -                      -
//	timeout     hal.ErrTimeout          hal.ErrTimeout    hal.ErrTimeout         hal.ErrTimeout, no frames
//	stuck       values freeze           values freeze     level freezes          frames repeat their values
//	disconnect  hal.ErrNoDevice         hal.ErrNoDevice   hal.ErrNoDevice        hal.ErrNoDevice, no frames
//	corrupt     hal.ErrCorrupt          hal.ErrCorrupt    -                      frames with a bad checksum
//
// # Usage
//
//	var p sim.Provider
//	dev := sim.NewBME280(sim.Signals{
//		Temperature: sim.Signal{Shape: "sine", Mean: 21, Amplitude: 3, Period: sim.Duration(time.Hour)},
//		Pressure:    sim.Signal{Value: 1013.25},
//		Humidity:    sim.Signal{Value: 45},
//	}, time.Now)
//	if err := p.AttachI2C(1, 0x76, dev); err != nil { ... }
//	bus, _ := p.I2CBus(1) // then bus.Tx(ctx, 0x76, w, r)
//
//	acc := sim.NewADXL345(sim.ADXL345Signals{Z: sim.Signal{Value: 1}}, time.Now)
//	_ = p.AttachSPI(0, 0, acc.SPI())
//	acc.Faults().Inject(sim.FaultTimeout, true) // SPI transfers now fail with hal.ErrTimeout
package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/perch-edge/perch/hal"
)

// ErrAddrInUse is returned (wrapped) by the Attach methods of [Provider] when the address, chip
// select, line or port already has a device.
var ErrAddrInUse = errors.New("sim: address in use")

// I2CDevice is a simulated device on an I2C bus, seen from the device's side: it receives the
// bytes the controller writes (w) and fills the bytes the controller reads (r) in one combined
// transaction. Implementations must be safe for concurrent use; the bus calls Tx with its own
// lock held, so one bus never runs two transactions at once.
type I2CDevice interface {
	Tx(ctx context.Context, w, r []byte) error
}

// SPIDevice is a simulated device on an SPI bus behind one chip select, seen from the device's
// side: the chip select is asserted for the whole call, w is what the controller clocks out
// (MOSI) and r receives what the device clocks back (MISO); len(w) == len(r). The port calls Tx
// with its own lock held.
type SPIDevice interface {
	Tx(ctx context.Context, w, r []byte) error
}

// GPIODevice is what a simulated GPIO line is connected to: Read samples the line's level and
// Write drives it. Implementations must be safe for concurrent use.
type GPIODevice interface {
	Read(ctx context.Context) (bool, error)
	Write(ctx context.Context, level bool) error
}

// UARTDevice is the device at the far end of a simulated serial port: Read returns the bytes it
// has sent that have arrived since the last Read (0, nil when none have), Write sends it bytes.
// Implementations must be safe for concurrent use.
type UARTDevice interface {
	Read(ctx context.Context, p []byte) (int, error)
	Write(ctx context.Context, p []byte) (int, error)
}

// Provider is the simulated [hal.Provider]. The zero value is ready to use and has no devices. It
// is safe for concurrent use.
type Provider struct {
	mu    sync.Mutex
	buses map[int]*i2cBus
	spi   map[[2]int]*spiPort
	gpio  map[int]*gpioLine
	uart  map[string]*uartPort
}

// NewProvider returns an empty Provider; it is the same as new(Provider).
func NewProvider() *Provider { return new(Provider) }

// bus returns bus n, creating it if needed.
func (p *Provider) bus(n int) *i2cBus {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buses == nil {
		p.buses = make(map[int]*i2cBus)
	}
	b := p.buses[n]
	if b == nil {
		b = &i2cBus{n: n, devs: make(map[uint16]I2CDevice)}
		p.buses[n] = b
	}
	return b
}

// AttachI2C puts dev on I2C bus bus (>= 0) at the 7-bit address addr (0x00..0x7f). It fails with
// an error wrapping [ErrAddrInUse] if the address already has a device, and with one wrapping
// [hal.ErrInvalid] for a bad bus, address or nil device.
func (p *Provider) AttachI2C(bus int, addr uint16, dev I2CDevice) error {
	switch {
	case bus < 0:
		return fmt.Errorf("sim: i2c bus %d: %w", bus, hal.ErrInvalid)
	case addr > 0x7f:
		return fmt.Errorf("sim: i2c address 0x%x is not 7-bit: %w", addr, hal.ErrInvalid)
	case dev == nil:
		return fmt.Errorf("sim: i2c bus %d address 0x%02x: nil device: %w", bus, addr, hal.ErrInvalid)
	}
	b := p.bus(bus)
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.devs[addr]; ok {
		return fmt.Errorf("sim: i2c bus %d address 0x%02x: %w", bus, addr, ErrAddrInUse)
	}
	b.devs[addr] = dev
	return nil
}

// I2CBus returns I2C bus n (>= 0). A bus with no devices is still a bus: its transactions fail
// with an error wrapping [hal.ErrNACK]. Every call for the same n returns the same bus.
func (p *Provider) I2CBus(n int) (hal.I2C, error) {
	if n < 0 {
		return nil, fmt.Errorf("sim: i2c bus %d: %w", n, hal.ErrNoDevice)
	}
	return p.bus(n), nil
}

// AttachSPI puts dev on SPI bus bus (>= 0) behind chip select cs (>= 0). It fails with an error
// wrapping [ErrAddrInUse] if the chip select already has a device, and with one wrapping
// [hal.ErrInvalid] for a bad bus, chip select or nil device.
func (p *Provider) AttachSPI(bus, cs int, dev SPIDevice) error {
	if bus < 0 || cs < 0 || dev == nil {
		return fmt.Errorf("sim: spi %d.%d: bad bus, chip select or nil device: %w", bus, cs, hal.ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.spi[[2]int{bus, cs}]; ok {
		return fmt.Errorf("sim: spi %d.%d: %w", bus, cs, ErrAddrInUse)
	}
	if p.spi == nil {
		p.spi = make(map[[2]int]*spiPort)
	}
	p.spi[[2]int{bus, cs}] = &spiPort{bus: bus, cs: cs, dev: dev}
	return nil
}

// AttachGPIO connects dev to GPIO line line (>= 0). It fails with an error wrapping
// [ErrAddrInUse] if the line already has a device, and with one wrapping [hal.ErrInvalid] for a
// negative line or nil device.
func (p *Provider) AttachGPIO(line int, dev GPIODevice) error {
	if line < 0 || dev == nil {
		return fmt.Errorf("sim: gpio line %d: bad line or nil device: %w", line, hal.ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.gpio[line]; ok {
		return fmt.Errorf("sim: gpio line %d: %w", line, ErrAddrInUse)
	}
	if p.gpio == nil {
		p.gpio = make(map[int]*gpioLine)
	}
	p.gpio[line] = &gpioLine{n: line, dev: dev}
	return nil
}

// AttachUART connects dev to the serial port named port (any non-empty name, such as
// "/dev/ttyS0"). It fails with an error wrapping [ErrAddrInUse] if the port already has a
// device, and with one wrapping [hal.ErrInvalid] for an empty name or nil device.
func (p *Provider) AttachUART(port string, dev UARTDevice) error {
	if port == "" || dev == nil {
		return fmt.Errorf("sim: uart %q: empty name or nil device: %w", port, hal.ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.uart[port]; ok {
		return fmt.Errorf("sim: uart %q: %w", port, ErrAddrInUse)
	}
	if p.uart == nil {
		p.uart = make(map[string]*uartPort)
	}
	p.uart[port] = &uartPort{name: port, dev: dev}
	return nil
}

// SPIPort returns the port of chip select cs on SPI bus bus, or an error wrapping
// [hal.ErrNoDevice] if no device is attached there. Every call for the same pair returns the
// same port.
func (p *Provider) SPIPort(bus, cs int) (hal.SPI, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.spi[[2]int{bus, cs}]; s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("sim: spi %d.%d: %w", bus, cs, hal.ErrNoDevice)
}

// GPIOLine returns GPIO line n, or an error wrapping [hal.ErrNoDevice] if nothing is attached to
// it. Every call for the same n returns the same line.
func (p *Provider) GPIOLine(n int) (hal.GPIO, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.gpio[n]; l != nil {
		return l, nil
	}
	return nil, fmt.Errorf("sim: gpio line %d: %w", n, hal.ErrNoDevice)
}

// UARTPort returns the serial port named name, or an error wrapping [hal.ErrNoDevice] if nothing
// is attached to it. Every call for the same name returns the same port.
func (p *Provider) UARTPort(name string) (hal.UART, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.uart[name]; u != nil {
		return u, nil
	}
	return nil, fmt.Errorf("sim: uart %q: %w", name, hal.ErrNoDevice)
}

// i2cBus is one simulated I2C bus. Its lock serialises transactions, like the wire does.
type i2cBus struct {
	n    int
	mu   sync.Mutex
	devs map[uint16]I2CDevice
}

// Tx implements [hal.I2C]. Device errors come back wrapped with the bus and address.
func (b *i2cBus) Tx(ctx context.Context, addr uint16, w, r []byte) error {
	if addr > 0x7f {
		return fmt.Errorf("sim: i2c address 0x%x is not 7-bit: %w", addr, hal.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	dev := b.devs[addr]
	if dev == nil {
		return fmt.Errorf("sim: i2c bus %d address 0x%02x: %w", b.n, addr, hal.ErrNACK)
	}
	if err := dev.Tx(ctx, w, r); err != nil {
		return fmt.Errorf("sim: i2c bus %d address 0x%02x: %w", b.n, addr, err)
	}
	return nil
}

// spiPort is one simulated SPI chip select. Its lock serialises transfers.
type spiPort struct {
	bus, cs int
	mu      sync.Mutex
	dev     SPIDevice
}

// Tx implements [hal.SPI]. Device errors come back wrapped with the bus and chip select.
func (s *spiPort) Tx(ctx context.Context, w, r []byte) error {
	if len(w) != len(r) {
		return fmt.Errorf("sim: spi %d.%d: %d bytes out, %d in: %w", s.bus, s.cs, len(w), len(r), hal.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.dev.Tx(ctx, w, r); err != nil {
		return fmt.Errorf("sim: spi %d.%d: %w", s.bus, s.cs, err)
	}
	return nil
}

// gpioLine is one simulated GPIO line.
type gpioLine struct {
	n   int
	dev GPIODevice
}

// Read implements [hal.GPIO].
func (l *gpioLine) Read(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	v, err := l.dev.Read(ctx)
	if err != nil {
		return false, fmt.Errorf("sim: gpio line %d: %w", l.n, err)
	}
	return v, nil
}

// Write implements [hal.GPIO].
func (l *gpioLine) Write(ctx context.Context, level bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.dev.Write(ctx, level); err != nil {
		return fmt.Errorf("sim: gpio line %d: %w", l.n, err)
	}
	return nil
}

// uartPort is one simulated serial port.
type uartPort struct {
	name string
	dev  UARTDevice
}

// Read implements [hal.UART].
func (u *uartPort) Read(ctx context.Context, p []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := u.dev.Read(ctx, p)
	if err != nil {
		return n, fmt.Errorf("sim: uart %q: %w", u.name, err)
	}
	return n, nil
}

// Write implements [hal.UART].
func (u *uartPort) Write(ctx context.Context, p []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := u.dev.Write(ctx, p)
	if err != nil {
		return n, fmt.Errorf("sim: uart %q: %w", u.name, err)
	}
	return n, nil
}

// Interface guards.
var (
	_ hal.Provider = (*Provider)(nil)
	_ hal.I2C      = (*i2cBus)(nil)
	_ hal.SPI      = (*spiPort)(nil)
	_ hal.GPIO     = (*gpioLine)(nil)
	_ hal.UART     = (*uartPort)(nil)
	_ I2CDevice    = (*BME280)(nil)
	_ I2CDevice    = (*faultyI2C)(nil)
	_ GPIODevice   = (*Button)(nil)
	_ GPIODevice   = (*Relay)(nil)
	_ UARTDevice   = (*PMS5003)(nil)
)
