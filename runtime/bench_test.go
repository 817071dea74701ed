package runtime_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/modules/drivers/bme280"
	"github.com/perch-edge/perch/modules/filters/window"
	"github.com/perch-edge/perch/modules/rules/threshold"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The pipeline benchmarks run driver -> window (filter) and driver -> threshold (rule), as in
// the demo, in one goroutine, so ns/op is the CPU cost of one record through all three stages
// on one core (records/s per core = 1e9 / ns/op) and allocs/op is allocations per record. The
// Wasm and native variants run the same logic packages; the native one calls them directly.

const benchBatch = 256 // records per poll

var (
	benchWindow    = map[string]any{"window": "10s"}
	benchThreshold = map[string]any{"series": "environment", "field": "temperature_c", "above": 30.0, "hysteresis": 1.0}
)

func benchHAL(b *testing.B) *sim.Provider {
	p := sim.NewProvider()
	sig := sim.Signals{Temperature: sim.Signal{Value: 22}, Pressure: sim.Signal{Value: 1013.25}, Humidity: sim.Signal{Value: 45}}
	if err := p.AttachI2C(1, 0x76, sim.NewBME280(sig, nil)); err != nil {
		b.Fatal(err)
	}
	return p
}

// stage and poller are what both variants of a pipeline stage look like to the benchmark.
type (
	stage interface {
		Process(ctx context.Context, in []byte) ([]byte, error)
	}
	poller interface {
		Poll(ctx context.Context, max int) ([]byte, error)
	}
	pipeline struct {
		drv          poller
		filter, rule stage
	}
)

func wasmStages(b *testing.B) pipeline {
	load := func(name string, cfg any, grants config.Grants, h hal.Provider) *perchtest.Module {
		// A generous deadline: a benchmark on a busy machine must not fail on a descheduled call.
		return perchtest.Load(b, perchtest.Options{Wasm: perchtest.Built(b, name), Config: cfg, Grants: grants, HAL: h, Deadline: 5 * time.Second})
	}
	d := load("bme280", map[string]any{"bus": 1, "address": 0x76}, config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x76}}}, benchHAL(b))
	return pipeline{d.Raw(), load("window", benchWindow, config.Grants{}, nil).Raw(), load("threshold", benchThreshold, config.Grants{}, nil).Raw()}
}

// nativeDriver is the bme280 driver as a native stage over the same simulated bus.
type nativeDriver struct {
	chip bme280.Chip
	tx   bme280.Tx
	b    abi.Builder
}

func newNativeDriver(b *testing.B) *nativeDriver {
	bus, err := benchHAL(b).I2CBus(1)
	if err != nil {
		b.Fatal(err)
	}
	d := &nativeDriver{}
	ctx := context.Background()
	d.tx = func(w, r []byte) error { return bus.Tx(ctx, 0x76, w, r) }
	if err := d.chip.Init(d.tx); err != nil {
		b.Fatal(err)
	}
	return d
}

func (d *nativeDriver) Poll(_ context.Context, max int) ([]byte, error) {
	d.b.Buf = d.b.Buf[:0]
	for range max {
		r, err := d.chip.Read(d.tx)
		if err != nil {
			return nil, err
		}
		d.b.Begin(abi.KindReading, time.Now().UnixNano(), "env", "environment")
		d.b.Field("temperature_c", r.TemperatureC)
		d.b.Field("pressure_hpa", r.PressureHPa)
		d.b.Field("humidity_pct", r.HumidityPct)
		d.b.End()
	}
	return d.b.Buf, nil
}

// nativeStage runs a logic package's Process as a stage.
type nativeStage struct {
	fn func(in *abi.Iter, out *abi.Builder) error
	b  abi.Builder
}

func (s *nativeStage) Process(_ context.Context, in []byte) ([]byte, error) {
	s.b.Buf = s.b.Buf[:0]
	it := abi.Iter{Buf: in}
	err := s.fn(&it, &s.b)
	return s.b.Buf, err
}

func nativeStages(b *testing.B) pipeline {
	w, err := window.New(window.Config{Window: "10s"})
	if err != nil {
		b.Fatal(err)
	}
	above := 30.0
	th, err := threshold.New(threshold.Config{Series: "environment", Field: "temperature_c", Above: &above, Hysteresis: 1})
	if err != nil {
		b.Fatal(err)
	}
	return pipeline{newNativeDriver(b), &nativeStage{fn: w.Process}, &nativeStage{fn: th.Process}}
}

func runPipeline(b *testing.B, p pipeline) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += benchBatch {
		out, err := p.drv.Poll(ctx, benchBatch)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.filter.Process(ctx, out); err != nil {
			b.Fatal(err)
		}
		if _, err := p.rule.Process(ctx, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkPipeline: one record through bme280 driver (over the simulated I2C bus), window
// filter and threshold rule.
func BenchmarkPipeline(b *testing.B) {
	b.Run("wasm", func(b *testing.B) { runPipeline(b, wasmStages(b)) })
	b.Run("native", func(b *testing.B) { runPipeline(b, nativeStages(b)) })
}

// readingsBatch makes a batch of n readings one millisecond apart.
func readingsBatch(n int) []byte {
	var bb abi.Builder
	for i := range n {
		bb.Begin(abi.KindReading, int64(i)*1e6, "env", "environment")
		bb.Field("temperature_c", 22+float64(i%10)*0.1)
		bb.Field("pressure_hpa", 1013.25)
		bb.Field("humidity_pct", 45)
		bb.End()
	}
	return bb.Buf
}

// advance moves every record's time in the batch on by d ns, so that windows keep closing.
func advance(batch []byte, d int64) {
	it := abi.Iter{Buf: batch}
	for it.Next() {
		off := it.Off + 8
		binary.LittleEndian.PutUint64(batch[off:], uint64(it.Rec.TimeNS+d))
	}
}

func runStages(b *testing.B, p pipeline) {
	ctx := context.Background()
	in := readingsBatch(benchBatch)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += benchBatch {
		advance(in, benchBatch*1e6)
		if _, err := p.filter.Process(ctx, in); err != nil {
			b.Fatal(err)
		}
		if _, err := p.rule.Process(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkStages: one record through the window filter and the threshold rule, without the
// driver and its simulated device: the cost of the Wasm boundary and the guest code alone.
func BenchmarkStages(b *testing.B) {
	b.Run("wasm", func(b *testing.B) { runStages(b, wasmStages(b)) })
	b.Run("native", func(b *testing.B) { runStages(b, nativeStages(b)) })
}

// BenchmarkStart measures a warm start of the demo-shaped test pipeline: from runtime.New to the
// first record the driver emitted being recorded, with the compilation cache already on disk.
func BenchmarkStart(b *testing.B) {
	cfg, err := config.Load("testdata/pipeline.yaml")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	start := func(i int) time.Duration {
		cfg.Store.Path = filepath.Join(dir, fmt.Sprintf("perch-%d.db", i))
		first := make(chan struct{})
		var once sync.Once
		t0 := time.Now()
		rt, err := runtime.New(context.Background(), cfg, runtime.Options{OnRecords: func(module string, _ []byte) {
			if module == "env" {
				once.Do(func() { close(first) })
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- rt.Run(ctx) }()
		<-first
		took := time.Since(t0)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		rt.Close()
		return took
	}
	start(-1) // fills the compilation cache
	b.ResetTimer()
	var total time.Duration
	for i := range b.N {
		total += start(i)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/start")
}
