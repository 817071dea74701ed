package plugin

import (
	"context"
	"sync"

	"github.com/perch-edge/perch/hal"
)

// Mux is a [hal.Provider] that sends each device to the provider it is routed to, and every
// other device to Fallback: so that one runtime can read simulated devices and devices of
// several out-of-process providers. I2C is routed by bus and address (one bus may mix
// providers), SPI by bus and chip select, GPIO by line, UART by port.
//
// Route before use; after that a Mux is safe for concurrent use. The zero value routes nothing
// and has no Fallback: its unrouted devices fail with an error wrapping [hal.ErrNoDevice] (I2C
// transactions with [hal.ErrNACK], as on an empty bus).
type Mux struct {
	Fallback hal.Provider

	mu   sync.RWMutex
	i2c  map[I2CAddr]hal.Provider
	spi  map[SPIPort]hal.Provider
	gpio map[int]hal.Provider
	uart map[string]hal.Provider
}

// RouteI2C sends transactions to addr on bus to p.
func (m *Mux) RouteI2C(bus int, addr uint16, p hal.Provider) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.i2c == nil {
		m.i2c = map[I2CAddr]hal.Provider{}
	}
	m.i2c[I2CAddr{bus, addr}] = p
}

// RouteSPI sends chip select cs on bus to p.
func (m *Mux) RouteSPI(bus, cs int, p hal.Provider) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.spi == nil {
		m.spi = map[SPIPort]hal.Provider{}
	}
	m.spi[SPIPort{bus, cs}] = p
}

// RouteGPIO sends line to p.
func (m *Mux) RouteGPIO(line int, p hal.Provider) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gpio == nil {
		m.gpio = map[int]hal.Provider{}
	}
	m.gpio[line] = p
}

// RouteUART sends the port named name to p.
func (m *Mux) RouteUART(name string, p hal.Provider) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.uart == nil {
		m.uart = map[string]hal.Provider{}
	}
	m.uart[name] = p
}

func route[K comparable](m *Mux, routes map[K]hal.Provider, k K) hal.Provider {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if p, ok := routes[k]; ok {
		return p
	}
	return m.Fallback
}

// I2CBus implements [hal.Provider]: the bus routes each transaction by its address.
func (m *Mux) I2CBus(bus int) (hal.I2C, error) { return muxBus{m, bus}, nil }

// SPIPort implements [hal.Provider].
func (m *Mux) SPIPort(bus, cs int) (hal.SPI, error) {
	if p := route(m, m.spi, SPIPort{bus, cs}); p != nil {
		return p.SPIPort(bus, cs)
	}
	return nil, hal.ErrNoDevice
}

// GPIOLine implements [hal.Provider].
func (m *Mux) GPIOLine(line int) (hal.GPIO, error) {
	if p := route(m, m.gpio, line); p != nil {
		return p.GPIOLine(line)
	}
	return nil, hal.ErrNoDevice
}

// UARTPort implements [hal.Provider].
func (m *Mux) UARTPort(name string) (hal.UART, error) {
	if p := route(m, m.uart, name); p != nil {
		return p.UARTPort(name)
	}
	return nil, hal.ErrNoDevice
}

type muxBus struct {
	m   *Mux
	bus int
}

func (b muxBus) Tx(ctx context.Context, addr uint16, w, r []byte) error {
	p := route(b.m, b.m.i2c, I2CAddr{b.bus, addr})
	if p == nil {
		return hal.ErrNACK
	}
	bus, err := p.I2CBus(b.bus)
	if err != nil {
		return err
	}
	return bus.Tx(ctx, addr, w, r)
}

var _ hal.Provider = (*Mux)(nil)
