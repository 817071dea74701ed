//go:build wasip1

package perch

// The guest exports of ABI v1. go:wasmexport works from a non-main package (Go 1.24+), so a
// module gets them by importing this package.

//go:wasmexport perch_abi_version
func exportABIVersion() int32 { return abiVersion() }

//go:wasmexport perch_buffer
func exportBuffer(size int32) uint32 { return uint32(buffer(size)) }

//go:wasmexport perch_init
func exportInit() uint32 { return uint32(initModule()) }

//go:wasmexport perch_process
func exportProcess(ptr, n uint32) uint32 { return uint32(process(uintptr(ptr), n)) }

//go:wasmexport perch_poll
func exportPoll(limit int32) uint32 { return uint32(poll(limit)) }

//go:wasmexport perch_snapshot
func exportSnapshot() uint32 { return uint32(snapshot()) }

//go:wasmexport perch_restore
func exportRestore(ptr, n uint32) uint32 { return uint32(restore(uintptr(ptr), n)) }
