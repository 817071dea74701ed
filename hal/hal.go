// Package hal defines the hardware abstraction through which Perch modules reach devices: I2C
// buses, SPI ports, GPIO lines and UART ports. Backends implement [Provider]: hal/sim (simulated
// devices), and in later packages hal/linux, hal/replay and hal/plugin.
//
// # Overview
//
// Every operation takes the caller's context and returns one of the sentinel errors below (or
// wraps one) for the faults a module must tell apart; the runtime maps them to ABI errnos.
// Implementations must be safe for concurrent use.
package hal

import (
	"context"
	"errors"
)

// Sentinel errors. Backends wrap them with %w so that errors.Is works.
var (
	ErrNACK     = errors.New("hal: no acknowledge")   // an I2C device did not ACK
	ErrTimeout  = errors.New("hal: bus timeout")      // the device did not answer in time
	ErrNoDevice = errors.New("hal: no such device")   // no such bus, port or line, or it is gone
	ErrIO       = errors.New("hal: I/O error")        // anything else the bus reported
	ErrCorrupt  = errors.New("hal: corrupt frame")    // a frame failed its checksum
	ErrInvalid  = errors.New("hal: invalid argument") // a length or value out of range
)

// I2C is one I2C bus.
type I2C interface {
	// Tx writes w to the device at the 7-bit address addr and then reads len(r) bytes into r,
	// as one combined transaction with a repeated start. Either of w and r may be empty.
	Tx(ctx context.Context, addr uint16, w, r []byte) error
}

// SPI is one SPI port (a bus and a chip select).
type SPI interface {
	// Tx clocks out w and clocks in r at the same time; len(w) must equal len(r).
	Tx(ctx context.Context, w, r []byte) error
}

// GPIO is one GPIO line.
type GPIO interface {
	// Read returns the line's level.
	Read(ctx context.Context) (bool, error)
	// Write drives the line (an output) to the level.
	Write(ctx context.Context, level bool) error
}

// UART is one serial port.
type UART interface {
	// Read reads up to len(p) bytes that have arrived; it returns 0, nil when none have.
	Read(ctx context.Context, p []byte) (int, error)
	// Write sends p.
	Write(ctx context.Context, p []byte) (int, error)
}

// Provider opens the devices of one backend. Opening the same bus twice returns handles to the
// same bus. A Provider is safe for concurrent use.
type Provider interface {
	I2CBus(bus int) (I2C, error)
	SPIPort(bus, cs int) (SPI, error)
	GPIOLine(line int) (GPIO, error)
	UARTPort(name string) (UART, error)
}
