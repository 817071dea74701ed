package perch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unsafe"

	"github.com/perch-edge/perch/sdk/abi"
)

// errno turns a host function's result into nil or an [abi.Errno]. Errnos are small numbers, so
// boxing one in an error does not allocate.
func errno(r uint32) error {
	if r == 0 {
		return nil
	}
	return abi.Errno(r)
}

// ptr returns the address of b's first byte, or nil for an empty slice.
func ptr(b []byte) *byte {
	if len(b) == 0 {
		return nil
	}
	return unsafe.SliceData(b)
}

// scratch is reused by the functions that read a variable-length result from the host.
var scratch []byte

// readVar calls get with a buffer and its capacity until the result fits, growing the buffer
// when the host answers ENOSPC with the length it needs. The result aliases scratch.
func readVar(get func(buf *byte, bufCap uint32, n *uint32) uint32) ([]byte, error) {
	if scratch == nil {
		scratch = make([]byte, 1024)
	}
	for range 4 { // a value can change between calls; do not loop forever
		var n uint32
		r := get(ptr(scratch), uint32(len(scratch)), &n)
		switch abi.Errno(r) {
		case abi.OK:
			if int64(n) > int64(len(scratch)) {
				return nil, abi.EFAULT
			}
			return scratch[:n], nil
		case abi.ENOSPC:
			if int64(n) <= int64(len(scratch)) || n > maxBuffer {
				return nil, abi.ENOSPC
			}
			scratch = make([]byte, n)
		default:
			return nil, abi.Errno(r)
		}
	}
	return nil, abi.ENOSPC
}

// Config reads the module's configuration (the config: block of its pipeline entry, as JSON)
// into v with encoding/json. Decoding is strict: a key that v does not have is an error, and
// every error names the offending field. An empty configuration leaves v as it is.
func Config(v any) error {
	b, err := readVar(hostConfigGet)
	if err != nil {
		return fmt.Errorf("perch: config: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return decodeConfig(b, v)
}

func decodeConfig(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return &fieldError{field: te.Field, msg: fmt.Sprintf("a JSON %s cannot be a %s", te.Value, te.Type), err: err}
	}
	return fmt.Errorf("perch: config: %w", err)
}

// fieldError is a configuration field of the wrong type. It unwraps to encoding/json's error.
type fieldError struct {
	field, msg string
	err        error
}

func (e *fieldError) Error() string { return fmt.Sprintf("perch: config field %q: %s", e.field, e.msg) }
func (e *fieldError) Unwrap() error { return e.err }

// Log writes msg to the host's log at the given level ([abi.LevelDebug] to [abi.LevelError]).
// The host attributes it to the module and may drop messages past the module's log quota. Log
// does not allocate.
func Log(level int32, msg string) { hostLogWrite(level, msg) }

// Logf formats with fmt.Sprintf and logs the result. It allocates.
func Logf(level int32, format string, args ...any) { Log(level, fmt.Sprintf(format, args...)) }

// Now returns the host's clock in nanoseconds since the Unix epoch.
func Now() int64 { return hostNow() }

// StateGet returns a copy of the value stored under key, or [abi.ENOENT] if there is none.
func StateGet(key string) ([]byte, error) {
	b, err := readVar(func(buf *byte, bufCap uint32, n *uint32) uint32 {
		return hostStateGet(key, buf, bufCap, n)
	})
	if err != nil {
		return nil, err
	}
	return append([]byte{}, b...), nil
}

// StateSet stores v under key. The host may refuse with EQUOTA when the module's state is full.
func StateSet(key string, v []byte) error {
	return errno(hostStateSet(key, ptr(v), uint32(len(v))))
}

// StateDelete removes key; deleting a missing key is not an error.
func StateDelete(key string) error { return errno(hostStateDelete(key)) }

// I2CRead writes the register number reg to the device at the 7-bit address addr on the bus,
// then reads len(buf) bytes into buf, as one transaction.
func I2CRead(bus, addr, reg int, buf []byte) error {
	return errno(hostI2CRead(int32(bus), int32(addr), int32(reg), ptr(buf), uint32(len(buf))))
}

// I2CWrite writes data to the device at the 7-bit address addr on the bus.
func I2CWrite(bus, addr int, data []byte) error {
	return errno(hostI2CWrite(int32(bus), int32(addr), ptr(data), uint32(len(data))))
}

// SPITransfer clocks out tx and clocks in rx at the same time on the SPI port (bus, chip select
// cs). tx and rx must have the same length; they may be the same slice.
func SPITransfer(bus, cs int, tx, rx []byte) error {
	if len(tx) != len(rx) {
		return abi.EINVAL
	}
	return errno(hostSPITransfer(int32(bus), int32(cs), ptr(tx), ptr(rx), uint32(len(tx))))
}

// GPIORead returns the level of a GPIO line: true for high.
func GPIORead(line int) (bool, error) {
	var level byte
	if err := errno(hostGPIORead(int32(line), &level)); err != nil {
		return false, err
	}
	return level != 0, nil
}

// GPIOWrite drives a GPIO output line high (true) or low.
func GPIOWrite(line int, high bool) error {
	var level int32
	if high {
		level = 1
	}
	return errno(hostGPIOWrite(int32(line), level))
}

// UARTRead reads into buf the bytes that have arrived on the serial port (such as
// "/dev/ttyUSB0", as named in the module's grant) and returns how many; 0 when none have.
func UARTRead(port string, buf []byte) (int, error) {
	var n uint32
	if err := errno(hostUARTRead(port, ptr(buf), uint32(len(buf)), &n)); err != nil {
		return 0, err
	}
	if int64(n) > int64(len(buf)) {
		return 0, abi.EFAULT
	}
	return int(n), nil
}

// UARTWrite sends data on the serial port.
func UARTWrite(port string, data []byte) error {
	return errno(hostUARTWrite(port, ptr(data), uint32(len(data))))
}
