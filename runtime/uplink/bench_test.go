package uplink

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

// BenchmarkAlertLatency measures the time from an alert handed to the recorder (Store.Write) to
// its PUBLISH written on the connection to a mosquitto on loopback, one alert at a time: the
// group commit (synchronous=FULL), the outbox read and paho's send. It reports p50 and p99 for
// two commit intervals.
func BenchmarkAlertLatency(b *testing.B) {
	for _, interval := range []time.Duration{time.Millisecond, store.DefaultCommitInterval} {
		b.Run(fmt.Sprintf("commit_interval=%v", interval), func(b *testing.B) {
			br := mqtttest.Start(b, "")
			cfg := testConfig(br.URL())
			st, err := store.Open(context.Background(), store.Options{
				Path: filepath.Join(b.TempDir(), "perch.db"), Upstream: Upstream(cfg), CommitInterval: interval,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			written := make(chan int64, 16)
			up, err := newUplink(cfg, st, Options{written: func(id int64) { written <- id }})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); up.Run(ctx) }()
			defer func() { cancel(); <-done }()
			send := func() time.Duration {
				start := time.Now()
				batch := abi.Append(nil, abi.KindAlert, start.UnixNano(), "threshold", "overheat",
					[]abi.Field{{Name: "temperature_c", Value: 31.5}}, []abi.Tag{{Key: "severity", Value: "critical"}})
				if err := st.Write(batch); err != nil {
					b.Fatal(err)
				}
				select {
				case <-written:
				case <-time.After(10 * time.Second):
					b.Fatal("no PUBLISH")
				}
				return time.Since(start)
			}
			send() // connected
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lat = append(lat, send())
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
		})
	}
}
