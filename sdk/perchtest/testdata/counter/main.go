//go:build wasip1

// Command counter is a test guest of sdk/perchtest, written with the Go SDK: a filter that
// counts the readings it sees, emits the count after every batch (series "count", field n),
// and hands the count to its next binary on a hot swap as "CNT1" and a little-endian u64.
// Config: {"format": "CNT1"} changes the format it writes and reads (to test refusals).
package main

import (
	"encoding/binary"
	"fmt"

	"github.com/perch-edge/perch/sdk/abi"
	perch "github.com/perch-edge/perch/sdk/go"
)

var (
	n   uint64
	cfg struct {
		Format string `json:"format"`
	}
)

func init() {
	perch.Register(perch.Module{
		Init: func() error {
			cfg.Format = "CNT1"
			return perch.Config(&cfg)
		},
		Process: func(in *abi.Iter, out *perch.Out) error {
			for in.Next() {
				if in.Rec.Kind == abi.KindReading {
					n++
				}
			}
			out.Reading(0, "count", "n", float64(n))
			return in.Err()
		},
		Snapshot: func() ([]byte, error) {
			return binary.LittleEndian.AppendUint64([]byte(cfg.Format), n), nil
		},
		Restore: func(snap []byte) error {
			if len(snap) != len(cfg.Format)+8 || string(snap[:len(cfg.Format)]) != cfg.Format {
				return fmt.Errorf("not a %s snapshot (%d bytes)", cfg.Format, len(snap))
			}
			n = binary.LittleEndian.Uint64(snap[len(cfg.Format):])
			return nil
		},
	})
}

func main() {}
