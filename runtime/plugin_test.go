package runtime_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
)

// pluginConfig reads a BME280 served by the example plugin provider (%s: its path), next to a
// simulated ADXL345 and a window filter. Paths are relative to runtime/testdata.
const pluginConfig = `site: test
device: sim-01
devices:
  - name: env0
    backend: plugin
    type: bme280
    bus: 1
    address: 0x76
    command: %s
    args: [-i2c-delay, 5ms]
  - name: accel
    backend: sim
    type: adxl345
    bus: 0
    cs: 0
    signals:
      z: {value: -1}
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    poll: 50ms
    deadline: 1s
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: env-window
    wasm: ../../build/modules/window.wasm
    inputs: [env]
    config: {window: 500ms}
  - name: vibration
    wasm: ../../build/modules/adxl345.wasm
    poll: 50ms
    grants:
      spi: [{bus: 0, cs: 0}]
    config: {bus: 0, cs: 0, series: vibration}
`

// childPID returns the pid of this process's child running bin.
func childPID(t *testing.T, bin string) int {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		if exe, _ := os.Readlink(filepath.Join(d, "exe")); exe == bin {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	t.Fatalf("no child process runs %s", bin)
	return 0
}

// TestIntegrationPluginProviderKill9 runs a pipeline whose BME280 lives in a plugin provider
// process, kills that process with SIGKILL mid-run, and checks that the driver reported the
// failure as module.error events with ENODEV, that readings resumed after the restart, and that
// the simulated device's driver and the filter never stopped.
func TestIntegrationPluginProviderKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	bin := filepath.Join(t.TempDir(), "simprovider")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/perch-edge/perch/hal/plugin/example/simprovider").CombinedOutput(); err != nil {
		t.Fatalf("building the example provider: %v\n%s", err, out)
	}
	abs, err := filepath.Abs(filepath.Join("testdata", "plugin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(abs, []byte(fmt.Sprintf(pluginConfig, bin)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	pid := childPID(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	killed := make(chan time.Time, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		killed <- time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	if err := rt.Run(ctx); err != nil {
		t.Fatal(err)
	}
	killedAt := <-killed
	db := rt.Store().DB()
	killNS, startNS := killedAt.UnixNano(), start.UnixNano()

	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env' AND time_ns < ?`, killNS); n < 10 {
		t.Errorf("bme280 readings before the kill: %d", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env' AND time_ns > ?`, killNS); n < 3 {
		t.Errorf("bme280 readings after the kill: %d, want them to resume", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'env' AND abs(json_extract(fields, '$.temperature_c') - 21.5) > 0.01`); n != 0 {
		t.Errorf("%d bme280 readings off 21.5 °C", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = 'env'
		AND json_extract(fields, '$.errno') = 'ENODEV'`); n < 1 {
		t.Errorf("no module.error event with ENODEV from env")
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = 'env'
		AND json_extract(fields, '$.errno') != 'ENODEV'`); n != 0 {
		t.Errorf("%d module.error events from env with another errno", n)
	}
	t.Logf("env: %d readings before the kill, %d after, %d ENODEV errors",
		count(t, db, `SELECT count(*) FROM readings WHERE source = 'env' AND time_ns < ?`, killNS),
		count(t, db, `SELECT count(*) FROM readings WHERE source = 'env' AND time_ns > ?`, killNS),
		count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.error' AND module = 'env'`))
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault' OR (kind = 'module.error' AND module != 'env')`); n != 0 {
		t.Errorf("%d module faults or errors outside env", n)
	}
	// The rest never stopped: no gap of more than 1s in the vibration readings (polled every
	// 50ms, while the provider is down for about a second), and the
	// window summarised on both sides of the kill.
	var gap int64
	if err := db.QueryRow(`SELECT coalesce(max(time_ns - prev), 0) FROM (SELECT time_ns, lag(time_ns) OVER (ORDER BY time_ns) AS prev
		FROM readings WHERE source = 'vibration' AND time_ns > ?)`, startNS).Scan(&gap); err != nil {
		t.Fatal(err)
	}
	if gap > int64(time.Second) {
		t.Errorf("vibration readings stopped for %v", time.Duration(gap))
	}
	if n := count(t, db, `SELECT count(*) FROM readings WHERE source = 'vibration' AND time_ns > ?`, killNS); n < 20 {
		t.Errorf("vibration readings after the kill: %d", n)
	}
	if n := count(t, db, `SELECT count(*) FROM summaries WHERE source = 'env-window'`); n < 4 {
		t.Errorf("env-window summaries: %d", n)
	}
}

// TestPluginDeviceConfig checks what a plugin device must and must not have.
func TestPluginDeviceConfig(t *testing.T) {
	for _, c := range []struct{ name, dev, want string }{
		{"ok", "backend: plugin\n    command: /usr/lib/perch/prov\n    args: [-v]", ""},
		{"no command", "backend: plugin", "devices[0].command: a plugin device needs the provider's command"},
		{"signals", "backend: plugin\n    command: /p\n    signals: {temperature: {value: 1}}", "devices[0].signals.temperature: signals are scripted for backend sim"},
		{"faults", "backend: plugin\n    command: /p\n    faults: [{kind: nack, at: 1s}]", "devices[0].faults: faults are scripted for backend sim"},
		{"sim with command", "backend: sim\n    command: /p", "devices[0].command: command and args are for backend plugin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := "site: t\ndevice: d\ndevices:\n  - name: env0\n    type: bme280\n    bus: 1\n    address: 0x76\n    " + c.dev + "\n"
			_, err := config.Parse("/x/perch.yaml", []byte(doc))
			switch {
			case c.want == "" && err != nil:
				t.Errorf("error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
