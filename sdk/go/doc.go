// Package perch is the Go guest library for Perch modules: it implements the module side of ABI v1
// (see package [github.com/perch-edge/perch/sdk/abi] and sdk/ABI.md) so that a module is a plain
// Go package plus a few lines of main.
//
// # Overview
//
// A module is a WebAssembly reactor built with the standard Go toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o mod.wasm ./path/to/main
//
// The host calls _initialize (which runs the Go init functions, where the module calls
// [Register]), then perch_abi_version and perch_init, then repeatedly perch_process (filters and
// rules: a batch of records in) or perch_poll (drivers: produce up to max records). This package
// provides those exports and perch_buffer; the module provides a [Module] with the functions they
// call.
//
// A module that keeps state in memory (a partial window, a raised alert) can hand it to its next
// binary on a hot swap: set [Module.Snapshot] to return it as bytes of a format of your own and
// [Module.Restore] to take them back (perch_snapshot and perch_restore; sdk/ABI.md, State
// handoff). Without them the next binary starts fresh.
//
// Records a module produces go into an [Out]. Everything written to it during one call is emitted
// to the host at the end of that call, as one batch. The SDK reuses its input and output buffers
// across calls, so the per-record path allocates nothing once the buffers have grown to the size
// of the largest batch.
//
// The host functions are wrapped as ordinary Go functions: [Config], [Log], [Logf], [Now],
// [StateGet], [StateSet], [StateDelete], and the device calls [I2CRead], [I2CWrite],
// [SPITransfer], [GPIORead], [GPIOWrite], [UARTRead] and [UARTWrite]. They return nil or an
// [abi.Errno] (an error), such as [abi.EPERM] for a device the deployment did not grant.
//
// Built for any target other than wasip1, the package compiles with stubs: host functions return
// [abi.ENOSYS] ([Now] returns the local clock), so module logic can be unit-tested natively.
//
// A module instance is single-threaded: the host never calls it concurrently, and none of the
// functions here are safe for concurrent use from goroutines the module starts.
//
// # Usage
//
// A filter that converts a Celsius field to Fahrenheit:
//
//	//go:build wasip1
//
//	package main
//
//	import (
//		"github.com/perch-edge/perch/sdk/abi"
//		perch "github.com/perch-edge/perch/sdk/go"
//	)
//
//	type config struct {
//		Field string `json:"field"`
//	}
//
//	var cfg config
//
//	func init() {
//		perch.Register(perch.Module{
//			Init: func() error { return perch.Config(&cfg) },
//			Process: func(in *abi.Iter, out *perch.Out) error {
//				for in.Next() {
//					r := &in.Rec
//					if v, ok := r.Field(cfg.Field); ok && r.Kind == abi.KindReading {
//						out.Reading(r.TimeNS, perch.Str(r.Series), cfg.Field, v*1.8+32)
//					}
//				}
//				return in.Err()
//			},
//		})
//	}
//
//	func main() {}
//
// [Str] passes the input's series through without copying it into a new string.
//
// Module logic is easiest to test when it lives in its own package that takes an *abi.Iter and
// writes to an *abi.Builder, with the wasm main adapting it through [Out.Builder]; `perch module
// new` scaffolds a module laid out that way.
package perch
