// Package abi holds the names, error numbers and record encoding of the Perch module ABI v1,
// shared by the host (runtime) and the guests (sdk/go). It imports only the standard library's
// encoding/binary and math so that it compiles for every target, wasip1 included.
//
// # Overview
//
// A module imports host functions from modules named perch:<capability>/v1 (see the Module*
// constants) and exports the functions named by the Export* constants. Every host function
// returns an [Errno]; records cross the boundary as a batch of binary records (see [Append] and
// [Iter]). The full specification is sdk/ABI.md.
package abi

// Version is the ABI version this package describes. A guest exports [ExportABIVersion]
// returning it.
const Version = 1

// Import module names, one per capability.
const (
	ModuleLog    = "perch:log/v1"
	ModuleIO     = "perch:io/v1"
	ModuleClock  = "perch:clock/v1"
	ModuleConfig = "perch:config/v1"
	ModuleState  = "perch:state/v1"
	ModuleHAL    = "perch:hal/v1"
	ModuleInfer  = "perch:infer/v1"
)

// Host function names, by import module.
const (
	FuncLogWrite = "write" // perch:log/v1

	FuncEmit = "emit" // perch:io/v1
	FuncSave = "save" // perch:io/v1, only during perch_snapshot

	FuncNow = "now_ns" // perch:clock/v1

	FuncConfigGet = "get" // perch:config/v1

	FuncStateGet    = "get"    // perch:state/v1
	FuncStateSet    = "set"    // perch:state/v1
	FuncStateDelete = "delete" // perch:state/v1

	FuncI2CRead     = "i2c_read"     // perch:hal/v1
	FuncI2CWrite    = "i2c_write"    // perch:hal/v1
	FuncSPITransfer = "spi_transfer" // perch:hal/v1
	FuncGPIORead    = "gpio_read"    // perch:hal/v1
	FuncGPIOWrite   = "gpio_write"   // perch:hal/v1
	FuncUARTRead    = "uart_read"    // perch:hal/v1
	FuncUARTWrite   = "uart_write"   // perch:hal/v1

	FuncInferOpen = "open"  // perch:infer/v1
	FuncInfer     = "infer" // perch:infer/v1
)

// Guest export names.
const (
	ExportMemory     = "memory"
	ExportABIVersion = "perch_abi_version" // () -> i32
	ExportBuffer     = "perch_buffer"      // (size i32) -> ptr i32
	ExportInit       = "perch_init"        // () -> errno
	ExportProcess    = "perch_process"     // (ptr, len i32) -> errno
	ExportPoll       = "perch_poll"        // (max i32) -> errno
	ExportSnapshot   = "perch_snapshot"    // () -> errno; optional: hands state to perch:io/v1 save
	ExportRestore    = "perch_restore"     // (ptr, len i32) -> errno; optional: takes a snapshot back
)

// MaxSnapshot is the most bytes a module may save during one perch_snapshot call (the state it
// hands to the next binary on a hot swap).
const MaxSnapshot = 1 << 20

// Log levels for perch:log/v1 write, matching log/slog's numeric levels.
const (
	LevelDebug int32 = -4
	LevelInfo  int32 = 0
	LevelWarn  int32 = 4
	LevelError int32 = 8
)

// Errno is the result of every host function and of the guest exports that return one.
// Zero means success.
type Errno uint32

// Error numbers. They are part of ABI v1: never renumber one.
const (
	OK        Errno = 0
	EPERM     Errno = 1  // the module was not granted this device, key or capability
	EINVAL    Errno = 2  // an argument is out of range or malformed
	EFAULT    Errno = 3  // a pointer and length fall outside the module's memory
	ENOSPC    Errno = 4  // the output buffer is too small; the needed length was written
	EIO       Errno = 5  // the device failed (bus error, corrupt frame)
	ETIMEDOUT Errno = 6  // the device did not answer in time
	ENODEV    Errno = 7  // no such device, or it is disconnected
	EQUOTA    Errno = 8  // a per-call quota (records, bytes) is exhausted
	ENOENT    Errno = 9  // no such state key
	ENOSYS    Errno = 10 // the host does not implement this function
	ENACK     Errno = 11 // an I2C device did not acknowledge
)

var errnoNames = [...]string{
	OK: "OK", EPERM: "EPERM", EINVAL: "EINVAL", EFAULT: "EFAULT", ENOSPC: "ENOSPC", EIO: "EIO",
	ETIMEDOUT: "ETIMEDOUT", ENODEV: "ENODEV", EQUOTA: "EQUOTA", ENOENT: "ENOENT", ENOSYS: "ENOSYS",
	ENACK: "ENACK",
}

// String returns the errno's symbolic name, such as "EPERM".
func (e Errno) String() string {
	if int(e) < len(errnoNames) && errnoNames[e] != "" {
		return errnoNames[e]
	}
	return "errno(" + itoa(uint32(e)) + ")"
}

// Error makes Errno an error.
func (e Errno) Error() string { return "perch: " + e.String() }

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// Exit codes with which the host closes a guest that broke a rule. They show up in the
// recorder's events as the fault reason.
const (
	ExitBadPointer uint32 = 0xbad0 + iota // a pointer and length outside the module's memory
	ExitEmitQuota                         // emitted more records or bytes than its quota in one call
	ExitLogQuota                          // logged more bytes than its quota
	ExitBadRecord                         // emitted a batch that does not decode
)
