package runtime_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// swapConfig is a driver polled every 10 ms feeding a pass-through filter, f, whose binary the
// tests swap while readings flow.
const swapConfig = `site: test
device: sim-01
devices:
  - {name: env0, backend: sim, type: bme280, bus: 1, address: 0x76}
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    deadline: 2s
    poll: 10ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: f
    wasm: ../../build/modules/scale.wasm
    deadline: 500ms
    inputs: [env]
    config: {factor: 1}
`

// moduleFiles reads a built module and its manifest.
func moduleFiles(t testing.TB, name string) ([]byte, *config.Manifest) {
	t.Helper()
	perchtest.Built(t, name)
	path := filepath.Join("..", "build", "modules", name+".wasm")
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	man, err := config.LoadManifest(config.ManifestPath(path))
	if err != nil {
		t.Fatal(err)
	}
	return bin, man
}

// TestIntegrationSwapUnderLoad swaps a filter's binary again and again while a driver feeds it:
// every reading the driver emitted comes out of the filter, none lost, and the module's health
// tells about the binary it runs.
func TestIntegrationSwapUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	perchtest.Built(t, "bme280")
	bin, man := moduleFiles(t, "scale")
	cfg := parseTestConfig(t, "swap.yaml", swapConfig)
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var gaps []time.Duration
	for i := range 20 {
		time.Sleep(50 * time.Millisecond)
		m := *man
		m.Version = "0.1." + string(rune('a'+i))
		rep, err := rt.Swap(ctx, "f", bin, &m)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Started || rep.NewVersion != m.Version {
			t.Fatalf("swap %d: %+v", i, rep)
		}
		gaps = append(gaps, rep.Gap)
	}
	h, err := rt.Health("f")
	if err != nil || !h.Up || h.Swaps != 20 || h.Faults != 0 || h.Version != "0.1.t" {
		t.Errorf("health %+v, %v", h, err)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db := rt.Store().DB()
	in := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env'`)
	out := count(t, db, `SELECT count(*) FROM readings WHERE source = 'f'`)
	if in < 50 || out != in {
		t.Errorf("the driver emitted %d readings, the filter %d", in, out)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.swapped' AND module = 'f'`); n != 20 {
		t.Errorf("%d module.swapped events, want 20", n)
	}
	t.Logf("%d readings through 20 swaps; gaps %v", in, gaps)
}

// TestIntegrationSwapRefused: a binary that does not compile, of another kind, or needing
// more than the module is granted is refused, and the old binary keeps running.
func TestIntegrationSwapRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	perchtest.Built(t, "bme280")
	bin, man := moduleFiles(t, "scale")
	cfg := parseTestConfig(t, "swap.yaml", swapConfig)
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rt.Run(ctx)
	driver := *man
	driver.Kind = config.KindDriver
	needy := *man
	needy.Needs.State = true
	for _, tc := range []struct {
		name string
		bin  []byte
		man  *config.Manifest
	}{
		{"garbage", []byte("\x00asm\x01\x00\x00\x00garbage"), man},
		{"another kind", bin, &driver},
		{"needs more than granted", bin, &needy},
	} {
		if _, err := rt.Swap(ctx, "f", tc.bin, tc.man); !errors.Is(err, runtime.ErrSwapRefused) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
	if _, err := rt.Swap(ctx, "nope", bin, man); !errors.Is(err, runtime.ErrSwapRefused) {
		t.Errorf("unknown module: err = %v", err)
	}
	if h, _ := rt.Health("f"); h.Swaps != 0 || h.Version != man.Version {
		t.Errorf("health after refused swaps: %+v", h)
	}
}
