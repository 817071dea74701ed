package scale_test

import (
	"context"
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// BenchmarkScale: one reading of three fields through the C module; ns/op is per record.
func BenchmarkScale(b *testing.B) {
	m := perchtest.Load(b, perchtest.Options{Wasm: perchtest.Built(b, "scale"), Config: map[string]any{"factor": 1.8, "offset": 32}})
	var bb abi.Builder
	const n = 256
	for i := range n {
		bb.Begin(abi.KindReading, int64(i+1)*1e6, "env", "environment")
		bb.Field("temperature_c", 22)
		bb.Field("pressure_hpa", 1013.25)
		bb.Field("humidity_pct", 45)
		bb.End()
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += n {
		if _, err := m.Raw().Process(ctx, bb.Buf); err != nil {
			b.Fatal(err)
		}
	}
}
