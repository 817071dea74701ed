package perch_test

import (
	"github.com/perch-edge/perch/sdk/abi"
	perch "github.com/perch-edge/perch/sdk/go"
)

// A filter that re-emits each reading's "temp" field in Fahrenheit. In a real module this init
// function is in package main, built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared.
func ExampleRegister() {
	var cfg struct {
		Field string `json:"field"`
	}
	perch.Register(perch.Module{
		Init: func() error { return perch.Config(&cfg) },
		Process: func(in *abi.Iter, out *perch.Out) error {
			for in.Next() {
				r := &in.Rec
				if v, ok := r.Field(cfg.Field); ok && r.Kind == abi.KindReading {
					out.Begin(abi.KindReading, r.TimeNS, perch.Str(r.Series))
					out.Field(cfg.Field, v*1.8+32)
					out.Tag("unit", "F")
					out.End()
				}
			}
			return in.Err()
		},
	})
}
