//go:build wasip1

// Command wasm is the threshold rule as a Perch Wasm module: package threshold's logic behind the
// Go SDK's exports. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o build/modules/threshold.wasm ./modules/rules/threshold/wasm
package main

import (
	"github.com/perch-edge/perch/modules/rules/threshold"
	"github.com/perch-edge/perch/sdk/abi"
	perch "github.com/perch-edge/perch/sdk/go"
)

var th *threshold.Threshold

func init() {
	perch.Register(perch.Module{
		Init: func() error {
			var cfg threshold.Config
			if err := perch.Config(&cfg); err != nil {
				return err
			}
			var err error
			th, err = threshold.New(cfg)
			return err
		},
		Process: func(in *abi.Iter, out *perch.Out) error { return th.Process(in, out.Builder()) },
	})
}

func main() {}
