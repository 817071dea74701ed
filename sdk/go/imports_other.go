//go:build !wasip1

package perch

import (
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// Native stubs of the host functions, so that module code compiles and can be unit-tested
// outside Wasm. Every one fails with ENOSYS, except the clock, which reads the local one.

const enosys = uint32(abi.ENOSYS)

func hostEmit(*byte, uint32) uint32                             { return enosys }
func hostSave(*byte, uint32) uint32                             { return enosys }
func hostLogWrite(int32, string) uint32                         { return enosys }
func hostNow() int64                                            { return time.Now().UnixNano() }
func hostConfigGet(*byte, uint32, *uint32) uint32               { return enosys }
func hostStateGet(string, *byte, uint32, *uint32) uint32        { return enosys }
func hostStateSet(string, *byte, uint32) uint32                 { return enosys }
func hostStateDelete(string) uint32                             { return enosys }
func hostI2CRead(int32, int32, int32, *byte, uint32) uint32     { return enosys }
func hostI2CWrite(int32, int32, *byte, uint32) uint32           { return enosys }
func hostSPITransfer(int32, int32, *byte, *byte, uint32) uint32 { return enosys }
func hostGPIORead(int32, *byte) uint32                          { return enosys }
func hostGPIOWrite(int32, int32) uint32                         { return enosys }
func hostUARTRead(string, *byte, uint32, *uint32) uint32        { return enosys }
func hostUARTWrite(string, *byte, uint32) uint32                { return enosys }
