package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
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

// windowSwapConfig feeds the same readings to two window filters: w, whose binary the test
// swaps, and w2, which runs untouched and is the control.
const windowSwapConfig = `site: test
device: sim-01
devices:
  - {name: env0, backend: sim, type: bme280, bus: 1, address: 0x76}
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    deadline: 2s
    poll: 5ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: w
    wasm: ../../build/modules/window.wasm
    deadline: 2s
    inputs: [env]
    config: {window: 100ms}
  - name: w2
    wasm: ../../build/modules/window.wasm
    deadline: 2s
    inputs: [env]
    config: {window: 100ms}
`

// collector keeps the batches modules emit (runtime.Options.OnRecords), by module. It is safe
// for concurrent use.
type collector struct {
	mu  sync.Mutex
	out map[string][]byte
}

func (c *collector) onRecords(module string, batch []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out == nil {
		c.out = map[string][]byte{}
	}
	c.out[module] = append(c.out[module], batch...)
}

func (c *collector) get(module string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.out[module]...)
}

// summaryLines renders a window's summaries without their source (the module's name), exactly
// (every float64 bit), one a line.
func summaryLines(t *testing.T, batch []byte) []string {
	t.Helper()
	var lines []string
	it := abi.Iter{Buf: batch}
	for it.Next() {
		r := &it.Rec
		if r.Kind != abi.KindSummary {
			t.Fatalf("a %v record from a window", r.Kind)
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "t=%d series=%s", r.TimeNS, r.Series)
		r.Fields(func(name []byte, v float64) { fmt.Fprintf(&sb, " %s=%x", name, math.Float64bits(v)) })
		r.Tags(func(k, v []byte) { fmt.Fprintf(&sb, " %s:%s", k, v) })
		lines = append(lines, sb.String())
	}
	if it.Err() != nil {
		t.Fatal(it.Err())
	}
	return lines
}

// TestIntegrationSwapWindowHandoff hot-swaps the window filter under load, again and again, in
// the middle of its windows (100 ms windows of readings every 5 ms), alternating two versions
// as an update and its rollback would: the swapped filter's summaries are exactly those of an
// identical filter that is never swapped, and every reading before the last closed window is
// counted in them: no reading lost, no window cut short.
func TestIntegrationSwapWindowHandoff(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	perchtest.Built(t, "bme280")
	bin, man := moduleFiles(t, "window")
	cfg := parseTestConfig(t, "swap.yaml", windowSwapConfig)
	var col collector
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{OnRecords: col.onRecords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	const swaps = 20
	var gaps []time.Duration
	var handed []int
	for i := range swaps {
		time.Sleep(time.Duration(23+7*(i%5)) * time.Millisecond) // not a multiple of the window
		m := *man
		m.Version = []string{"0.2.0", "0.1.0"}[i%2] // the update, then its rollback
		rep, err := rt.Swap(ctx, "w", bin, &m)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Started || rep.HandoffErr != nil || rep.Handoff == 0 {
			t.Fatalf("swap %d: %+v", i, rep)
		}
		gaps = append(gaps, rep.Gap)
		handed = append(handed, rep.Handoff)
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, want := summaryLines(t, col.get("w")), summaryLines(t, col.get("w2"))
	if len(want) < 10 {
		t.Fatalf("only %d summaries from the control", len(want))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the swapped window's %d summaries differ from the control's %d:\nswapped:\n%s\ncontrol:\n%s",
			len(got), len(want), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Every reading before the end of the last closed window is in a summary.
	var lastEnd int64
	var counted float64
	it := abi.Iter{Buf: col.get("w")}
	for it.Next() {
		lastEnd = it.Rec.TimeNS
		c, _ := it.Rec.Field("temperature_c_count")
		counted += c
	}
	readings := 0
	it = abi.Iter{Buf: col.get("env")}
	for it.Next() {
		if it.Rec.TimeNS < lastEnd {
			readings++
		}
	}
	if readings == 0 || float64(readings) != counted {
		t.Errorf("%d readings before %d, %v counted in the swapped window's summaries", readings, lastEnd, counted)
	}
	db := rt.Store().DB()
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.swapped' AND module = 'w' AND fields LIKE '%"handoff":"restored"%'`); n != swaps {
		t.Errorf("%d module.swapped events with the state restored, want %d", n, swaps)
	}
	t.Logf("%d summaries, %d readings through %d swaps; handoff bytes %v; gaps %v", len(got), readings, swaps, handed, gaps)
}

// handoffGuest builds the handoff test guest (runtime/internal/wasm/testdata/handoff: a
// pass-through filter whose snapshot and restore misbehave as its config says) into a temporary
// folder with a manifest beside it, and returns its path and binary.
func handoffGuest(t *testing.T) (string, []byte, *config.Manifest) {
	t.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang is needed to build the handoff test guest (run `make deps`): %v", err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "handoff.wasm")
	cmd := exec.Command(clang, "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-mbulk-memory", "-std=c11",
		"-Wall", "-Wextra", "-Werror", "-I../sdk/c", "-Wl,--strip-all", "-o", out, "internal/wasm/testdata/handoff/handoff.c")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the handoff guest: %v\n%s", err, b)
	}
	manifest := "name: handoff\nversion: 0.1.0\nabi: 1\nkind: filter\nemits: [reading]\ndescription: test guest\nneeds: {}\n"
	if err := os.WriteFile(config.ManifestPath(out), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	man, err := config.LoadManifest(config.ManifestPath(out))
	if err != nil {
		t.Fatal(err)
	}
	return out, bin, man
}

// TestIntegrationSwapHandoffFails: a snapshot that hangs or traps, one over the size limit, and
// a restore that refuses the snapshot or traps never stop a swap: the new binary starts fresh,
// a module.handoff_failed event says why, and no reading is lost.
func TestIntegrationSwapHandoffFails(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	perchtest.Built(t, "bme280")
	path, bin, man := handoffGuest(t)
	scaleBin, scaleMan := moduleFiles(t, "scale")
	for _, tc := range []struct {
		name, cfg, want string
		toScale         bool // swap to the scale filter, which has no perch_restore
	}{
		{"snapshot hangs", `{snapshot: hang}`, "perch_snapshot: deadline", false},
		{"snapshot traps", `{snapshot: trap}`, "perch_snapshot: trap", false},
		{"snapshot too big", `{snapshot: too_big}`, "snapshot too big", false},
		{"restore refuses", `{restore: refuse}`, "perch_restore failed: module f: perch_restore returned perch: EINVAL", false},
		{"restore traps", `{restore: trap}`, "perch_restore failed: module f: perch_restore: trap", false},
		{"the new binary has no perch_restore", `{}`, "module f: wasm: the module does not export perch_restore", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(swapConfig, "../../build/modules/scale.wasm", path, 1)
			text = strings.Replace(text, "{factor: 1}", tc.cfg, 1)
			cfg := parseTestConfig(t, "swap.yaml", text)
			rt, err := runtime.New(context.Background(), cfg, runtime.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rt.Close() })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- rt.Run(ctx) }()
			time.Sleep(100 * time.Millisecond)
			m, to := *man, bin
			if tc.toScale {
				m, to = *scaleMan, scaleBin
			}
			m.Version = "0.2.0"
			rep, err := rt.Swap(ctx, "f", to, &m)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Started || rep.Handoff != 0 || rep.HandoffErr == nil || !strings.Contains(rep.HandoffErr.Error(), tc.want) {
				t.Errorf("swap: %+v, want started fresh with an error saying %q", rep, tc.want)
			}
			time.Sleep(100 * time.Millisecond)
			if h, _ := rt.Health("f"); !h.Up || h.Faults != 0 || h.Version != "0.2.0" {
				t.Errorf("health after the swap: %+v", h)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// Both binaries pass their input through: every reading the driver emitted came out.
			in, _ := rt.Health("env")
			out, _ := rt.Health("f")
			if in.RecordsOut < 5 || out.RecordsOut != in.RecordsOut {
				t.Errorf("the driver emitted %d readings, the filter %d", in.RecordsOut, out.RecordsOut)
			}
			db := rt.Store().DB()
			var msg string
			if err := db.QueryRow(`SELECT message FROM events WHERE kind = 'module.handoff_failed' AND module = 'f'`).Scan(&msg); err != nil {
				t.Fatalf("no module.handoff_failed event: %v", err)
			}
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "starts fresh") {
				t.Errorf("event %q", msg)
			}
			if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.swapped' AND module = 'f' AND fields LIKE '%"handoff":"failed"%'`); n != 1 {
				t.Errorf("%d module.swapped events saying the handoff failed, want 1", n)
			}
		})
	}
}
