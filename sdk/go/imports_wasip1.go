//go:build wasip1

package perch

// The perch:*/v1 host functions. Every one returns an errno (0 = OK) except now_ns. Buffers are
// passed as *byte (the address of their first byte, 0 for an empty slice) and strings as
// (ptr, len) pairs, both of which go:wasmimport accepts since Go 1.24; the host copies what it
// reads before returning and never keeps a pointer.

//go:wasmimport perch:io/v1 emit
func hostEmit(ptr *byte, n uint32) uint32

//go:wasmimport perch:io/v1 save
func hostSave(ptr *byte, n uint32) uint32

//go:wasmimport perch:log/v1 write
func hostLogWrite(level int32, msg string) uint32

//go:wasmimport perch:clock/v1 now_ns
func hostNow() int64

//go:wasmimport perch:config/v1 get
func hostConfigGet(buf *byte, bufCap uint32, n *uint32) uint32

//go:wasmimport perch:state/v1 get
func hostStateGet(key string, buf *byte, bufCap uint32, n *uint32) uint32

//go:wasmimport perch:state/v1 set
func hostStateSet(key string, val *byte, n uint32) uint32

//go:wasmimport perch:state/v1 delete
func hostStateDelete(key string) uint32

//go:wasmimport perch:hal/v1 i2c_read
func hostI2CRead(bus, addr, reg int32, buf *byte, n uint32) uint32

//go:wasmimport perch:hal/v1 i2c_write
func hostI2CWrite(bus, addr int32, buf *byte, n uint32) uint32

//go:wasmimport perch:hal/v1 spi_transfer
func hostSPITransfer(bus, cs int32, tx, rx *byte, n uint32) uint32

//go:wasmimport perch:hal/v1 gpio_read
func hostGPIORead(line int32, level *byte) uint32

//go:wasmimport perch:hal/v1 gpio_write
func hostGPIOWrite(line int32, level int32) uint32

//go:wasmimport perch:hal/v1 uart_read
func hostUARTRead(port string, buf *byte, bufCap uint32, n *uint32) uint32

//go:wasmimport perch:hal/v1 uart_write
func hostUARTWrite(port string, buf *byte, n uint32) uint32
