package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// BenchmarkWrite measures group-committed rows per second, from Write to durable (the timed part
// ends with a Flush), for batches of 1, 10 and 100 readings of two fields and a tag each. The
// readings ring is at its default size, so the steady state also deletes as many as it inserts.
func BenchmarkWrite(b *testing.B) {
	for _, perBatch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("rows_per_batch=%d", perBatch), func(b *testing.B) {
			st := openTest(b, Options{})
			ts := time.Now().UnixNano()
			var batch []byte
			for i := 0; i < perBatch; i++ {
				batch = abi.Append(batch, abi.KindReading, ts+int64(i), "bme280", "climate",
					[]abi.Field{{Name: "temperature_c", Value: 21.5}, {Name: "humidity_pct", Value: 40.25}},
					[]abi.Tag{{Key: "room", Value: "lab"}})
			}
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := st.Write(batch); err != nil {
					b.Fatal(err)
				}
			}
			if err := st.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(b.N*perBatch)/float64(st.Stats().Commits), "rows/commit")
		})
	}
}
