// Package sim is the simulated backend of [hal]: register-level device models behind in-memory
// buses, driven by scripted signals, with hooks for injecting faults.
//
// # Overview
//
// A [Provider] implements [hal.Provider]. Only I2C is simulated so far: devices that implement
// [I2CDevice] are attached to a bus at an address with [Provider.AttachI2C], and a transaction to
// an address with no device fails with an error wrapping [hal.ErrNACK], as on a real bus. SPI
// ports, GPIO lines and UART ports do not exist yet (their errors wrap [hal.ErrNoDevice]).
//
// [BME280] models the Bosch BME280 temperature, pressure and humidity sensor at the register
// level: chip id, soft reset, calibration data, control registers and the ADC data registers. It
// computes raw ADC values by inverting the datasheet's compensation formulas, so a driver that
// compensates them reads back the values of its [Signals].
//
// A [Signal] describes a physical quantity over time (constant, sine, ramp, step, noise, spike,
// or a sum of those) and decodes from JSON or YAML configuration.
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
package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/perch-edge/perch/hal"
)

// ErrAddrInUse is returned (wrapped) by [Provider.AttachI2C] when the address already has a
// device.
var ErrAddrInUse = errors.New("sim: address in use")

// I2CDevice is a simulated device on an I2C bus, seen from the device's side: it receives the
// bytes the controller writes (w) and fills the bytes the controller reads (r) in one combined
// transaction. Implementations must be safe for concurrent use; the bus calls Tx with its own
// lock held, so one bus never runs two transactions at once.
type I2CDevice interface {
	Tx(ctx context.Context, w, r []byte) error
}

// Provider is the simulated [hal.Provider]. The zero value is ready to use and has no devices. It
// is safe for concurrent use.
type Provider struct {
	mu    sync.Mutex
	buses map[int]*i2cBus
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

// SPIPort always fails with an error wrapping [hal.ErrNoDevice]: SPI is not simulated yet.
func (p *Provider) SPIPort(bus, cs int) (hal.SPI, error) {
	return nil, fmt.Errorf("sim: spi %d.%d: %w", bus, cs, hal.ErrNoDevice)
}

// GPIOLine always fails with an error wrapping [hal.ErrNoDevice]: GPIO is not simulated yet.
func (p *Provider) GPIOLine(line int) (hal.GPIO, error) {
	return nil, fmt.Errorf("sim: gpio line %d: %w", line, hal.ErrNoDevice)
}

// UARTPort always fails with an error wrapping [hal.ErrNoDevice]: UARTs are not simulated yet.
func (p *Provider) UARTPort(name string) (hal.UART, error) {
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

// Interface guards.
var (
	_ hal.Provider = (*Provider)(nil)
	_ hal.I2C      = (*i2cBus)(nil)
	_ I2CDevice    = (*BME280)(nil)
)
