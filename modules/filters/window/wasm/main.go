//go:build wasip1

// Command wasm is the window filter as a Perch Wasm module: package window's logic behind the
// Go SDK's exports. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o build/modules/window.wasm ./modules/filters/window/wasm
package main

import (
	"github.com/perch-edge/perch/modules/filters/window"
	"github.com/perch-edge/perch/sdk/abi"
	perch "github.com/perch-edge/perch/sdk/go"
)

var w *window.Window

func init() {
	perch.Register(perch.Module{
		Init: func() error {
			var cfg window.Config
			if err := perch.Config(&cfg); err != nil {
				return err
			}
			var err error
			w, err = window.New(cfg)
			return err
		},
		Process: func(in *abi.Iter, out *perch.Out) error { return w.Process(in, out.Builder()) },
	})
}

func main() {}
