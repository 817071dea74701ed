package runtime_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
)

// TestIntegrationLinuxBackend runs the bme280 driver on a device of backend linux whose bus does
// not exist on this machine: the runtime starts, the driver's calls reach hal/linux and come back
// as ENODEV (module.fault events, since the driver's init needs the chip), and nothing crashes.
func TestIntegrationLinuxBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	doc := `site: test
device: box
devices:
  - {name: env0, backend: linux, type: bme280, bus: 97, address: 0x76}
modules:
  - name: env
    wasm: ` + filepath.Join(moduleDir(t), "bme280.wasm") + `
    poll: 50ms
    grants: {i2c: [{bus: 97, address: 0x76}]}
    config: {bus: 97, address: 0x76}
`
	db := runFor(t, parseTestConfig(t, "linux.yaml", doc), 700*time.Millisecond, runtime.Options{}).Store().DB()
	// The driver's init finds no chip: a fault at start-up, retried with backoff.
	if n := count(t, db, `SELECT count(*) FROM events WHERE module = 'env' AND kind IN ('module.fault', 'module.error')
		AND message LIKE '%ENODEV%'`); n < 1 {
		t.Errorf("events with ENODEV: %d, want at least 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM readings`); n != 0 {
		t.Errorf("%d readings from a bus that does not exist", n)
	}
}

// moduleDir is build/modules at the repository root.
func moduleDir(t *testing.T) string {
	dir, err := filepath.Abs(filepath.Join("..", "build", "modules"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
