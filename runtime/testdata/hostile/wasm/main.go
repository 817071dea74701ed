//go:build wasip1

// Command wasm is a test-only driver module that misbehaves on purpose, for the supervisor's
// hostile-module tests. Its config picks the misbehaviour and when it starts:
//
//	{"mode": "spin", "after": 2}
//
// It behaves (one reading per poll, series "heartbeat") for the first `after` polls, then:
// spin (an endless loop), bomb (allocates until memory runs out), trap (a panic), exit (calls
// proc_exit), emitflood (emits past its quota), logflood (logs past its quota),
// badptr:<function> (passes a pointer outside its memory to that host function: log, emit,
// config, state_get, state_set, state_delete, i2c_read, i2c_write, spi_transfer, gpio_read,
// uart_read, uart_write), badrecord (emits bytes that do not decode), undeclared (emits an
// alert, which its manifest does not declare), or ok (never misbehaves).
package main

import (
	"os"
	"strings"

	"github.com/perch-edge/perch/sdk/abi"
	perch "github.com/perch-edge/perch/sdk/go"
)

var cfg struct {
	Mode  string `json:"mode"`
	After int    `json:"after"`
}

var polls int

func init() {
	perch.Register(perch.Module{
		Init: func() error { return perch.Config(&cfg) },
		Poll: poll,
	})
}

const bad = 0xfffffff0 // past the end of any memory this module can have

//go:wasmimport perch:log/v1 write
func rawLog(level, ptr, n uint32) uint32

//go:wasmimport perch:io/v1 emit
func rawEmit(ptr, n uint32) uint32

//go:wasmimport perch:config/v1 get
func rawConfig(ptr, capacity, lenPtr uint32) uint32

//go:wasmimport perch:state/v1 get
func rawStateGet(kp, kn, bp, bc, lp uint32) uint32

//go:wasmimport perch:state/v1 set
func rawStateSet(kp, kn, vp, vn uint32) uint32

//go:wasmimport perch:state/v1 delete
func rawStateDelete(kp, kn uint32) uint32

//go:wasmimport perch:hal/v1 i2c_read
func rawI2CRead(bus, addr, reg, bp, bn uint32) uint32

//go:wasmimport perch:hal/v1 i2c_write
func rawI2CWrite(bus, addr, p, n uint32) uint32

//go:wasmimport perch:hal/v1 spi_transfer
func rawSPI(bus, cs, tx, rx, n uint32) uint32

//go:wasmimport perch:hal/v1 gpio_read
func rawGPIORead(line, out uint32) uint32

//go:wasmimport perch:hal/v1 uart_read
func rawUARTRead(pp, pn, bp, bc, lp uint32) uint32

//go:wasmimport perch:hal/v1 uart_write
func rawUARTWrite(pp, pn, p, n uint32) uint32

var sink [][]byte

func poll(max int, out *perch.Out) error {
	polls++
	if polls <= cfg.After || cfg.Mode == "ok" {
		out.Reading(0, "heartbeat", "polls", float64(polls))
		return nil
	}
	mode, fn, _ := strings.Cut(cfg.Mode, ":")
	switch mode {
	case "spin":
		for i := 0; ; i++ {
			if i < 0 {
				break
			}
		}
	case "bomb":
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case "trap":
		var m map[string]int
		m["boom"]++
	case "exit":
		os.Exit(3)
	case "emitflood":
		var b abi.Builder
		for i := 0; i < 1000; i++ {
			b.Begin(abi.KindReading, 0, "", "flood")
			b.Field("i", float64(i))
			b.End()
		}
		for i := 0; i < 100; i++ {
			rawEmit(uint32(uintptrOf(b.Buf)), uint32(len(b.Buf)))
		}
	case "logflood":
		for i := 0; i < 100000; i++ {
			perch.Log(abi.LevelInfo, "flooding the log with a line of text")
		}
	case "badrecord":
		junk := []byte{9, 0, 0, 0, 1, 0, 0, 0, 0}
		rawEmit(uint32(uintptrOf(junk)), uint32(len(junk)))
	case "undeclared":
		out.Alert(0, "heartbeat", "warning", "not mine to raise")
	case "badptr":
		badPointer(fn)
	}
	return nil
}

func badPointer(fn string) {
	port := []byte("/dev/ttyS0")
	pp, pn := uint32(uintptrOf(port)), uint32(len(port))
	switch fn {
	case "log":
		rawLog(0, bad, 64)
	case "emit":
		rawEmit(bad, 64)
	case "config":
		rawConfig(bad, 4096, bad)
	case "state_get":
		rawStateGet(bad, 8, bad, 8, bad)
	case "state_set":
		rawStateSet(bad, 8, bad, 8)
	case "state_delete":
		rawStateDelete(bad, 8)
	case "i2c_read":
		rawI2CRead(1, 0x76, 0xd0, bad, 8)
	case "i2c_write":
		rawI2CWrite(1, 0x76, bad, 8)
	case "spi_transfer":
		rawSPI(0, 0, bad, bad, 8)
	case "gpio_read":
		rawGPIORead(17, bad)
	case "uart_read":
		rawUARTRead(pp, pn, bad, 64, bad)
	case "uart_write":
		rawUARTWrite(pp, pn, bad, 8)
	}
}

func main() {}
