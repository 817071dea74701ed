package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/config"
)

func TestUplinkDefaults(t *testing.T) {
	dir := testDir(t)
	cfg, err := parse(dir, "site: s\ndevice: d\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Uplink.Enabled() {
		t.Error("no uplink section, but Enabled")
	}
	cfg, err = parse(dir, "site: s\ndevice: d\nuplink:\n  broker: tcp://127.0.0.1:1883\n")
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Uplink
	if !u.Enabled() || u.ClientID != "perch-s-d" || u.Keepalive.D() != 30*time.Second ||
		u.InFlight != 32 || u.Heartbeat.D() != 5*time.Minute || u.OutboxMaxBytes != 64<<20 ||
		u.RawReadings.Enabled || u.RawReadings.MaxPerSecond != 1 || config.TLSBroker(u.Broker) ||
		u.Summaries.Batch.D() != time.Minute || !u.Summaries.Compress || u.Summaries.Digits != 6 {
		t.Errorf("defaults: %+v", u)
	}
}

// TestUplinkSummaryBatchDefaults: summaries are batched every 60s and compressed unless the
// config says otherwise; `batch: 0` keeps one message per summary.
func TestUplinkSummaryBatchDefaults(t *testing.T) {
	dir := testDir(t)
	for _, tc := range []struct {
		yaml     string
		batch    time.Duration
		compress bool
	}{
		{"", time.Minute, true},
		{"  summaries: {digits: 4}\n", time.Minute, true},
		{"  summaries: {batch: 0}\n", 0, false},
		{"  summaries:\n    batch: 0s\n", 0, false},
		{"  summaries: {compress: false}\n", time.Minute, false},
		{"  summaries: {batch: 5m}\n", 5 * time.Minute, true},
		{"  summaries: {batch: 10s, compress: false}\n", 10 * time.Second, false},
	} {
		cfg, err := parse(dir, "site: s\ndevice: d\nuplink:\n  broker: tcp://127.0.0.1:1883\n"+tc.yaml)
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if s := cfg.Uplink.Summaries; s.Batch.D() != tc.batch || s.Compress != tc.compress {
			t.Errorf("%q: %+v, want batch %v compress %v", tc.yaml, s, tc.batch, tc.compress)
		}
	}
}

func TestUplinkTLS(t *testing.T) {
	dir := testDir(t)
	for _, f := range []string{"ca.pem", "box.pem", "box.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := parse(dir, `site: s
device: d
uplink:
  broker: tls://broker:8883
  client_id: box
  keepalive: 10s
  in_flight: 8
  heartbeat: 5s
  outbox_max_bytes: 1000000
  raw_readings: {enabled: true, max_per_second: 2.5}
  summaries: {batch: 60s, compress: true, digits: 4}
  tls: {ca_file: ca.pem, cert_file: box.pem, key_file: box.key}
`)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Uplink
	if u.TLS.CAFile != filepath.Join(dir, "ca.pem") || !config.TLSBroker(u.Broker) || u.InFlight != 8 ||
		!u.RawReadings.Enabled || u.RawReadings.MaxPerSecond != 2.5 ||
		u.Summaries.Batch.D() != time.Minute || !u.Summaries.Compress || u.Summaries.Digits != 4 {
		t.Errorf("%+v", u)
	}
}

func TestUplinkErrors(t *testing.T) {
	dir := testDir(t)
	for _, tc := range []struct{ yaml, want string }{
		{"uplink:\n  in_flight: 3\n", "perch.yaml:3: uplink.broker: required"},
		{"uplink:\n  broker: http://x:1\n", "uplink.broker: want tcp://"},
		{"uplink:\n  broker: tcp://x\n", "want a host and a port"},
		{"uplink:\n  broker: tcp://x:1\n  tls: {ca_file: ca.pem}\n", "uplink.tls: the broker"},
		{"uplink:\n  broker: tls://x:1\n  tls: {cert_file: c.pem}\n", "cert_file and key_file go together"},
		{"uplink:\n  broker: tls://x:1\n  tls: {ca_file: missing.pem}\n", "perch.yaml:5: uplink.tls.ca_file:"},
		{"uplink:\n  broker: tcp://x:1\n  in_flight: -1\n", "uplink.in_flight: want 1 to 65535"},
		{"uplink:\n  broker: tcp://x:1\n  keepalive: 10ms\n", "uplink.keepalive: at least 1s"},
		{"uplink:\n  broker: tcp://x:1\n  outbox_max_bytes: -5\n", "uplink.outbox_max_bytes: must not be negative"},
		{"uplink:\n  broker: tcp://x:1\n  bogus: 1\n", "field bogus not found"},
		{"uplink:\n  broker: tcp://x:1\n  daily_budget_bytes: -1\n", "uplink.daily_budget_bytes: must not be negative"},
		{"uplink:\n  broker: tcp://x:1\n  summaries: {batch: 10ms}\n", "uplink.summaries.batch: want 0 (no batching) or 1s to 24h"},
		{"uplink:\n  broker: tcp://x:1\n  summaries: {batch: 25h}\n", "uplink.summaries.batch: want 0"},
		{"uplink:\n  broker: tcp://x:1\n  summaries: {batch: 0, compress: true}\n", "perch.yaml:5: uplink.summaries.compress: compresses batches"},
		{"uplink:\n  broker: tcp://x:1\n  summaries: {digits: 18}\n", "uplink.summaries.digits: want 1 to 17"},
		{"uplink:\n  broker: tcp://x:1\n  summaries: {digits: -1}\n", "uplink.summaries.digits: want 1 to 17"},
	} {
		_, err := parse(dir, "site: s\ndevice: d\n"+tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// TestUplinkCommands checks uplink.commands.actuate: the modules cmd/actuate may drive must be
// modules of the config that take input (never a driver), each listed once; every error names
// the file, the line and the field.
func TestUplinkCommands(t *testing.T) {
	dir := testDir(t)
	const head = `site: s
device: d
modules:
  - name: env
    wasm: /MODDIR/bme.wasm
    poll: 1s
    grants: {i2c: [{bus: 1, address: 0x76}], state: true}
  - name: hot
    wasm: /MODDIR/thr.wasm
    inputs: [env]
uplink:
  broker: tcp://127.0.0.1:1883
`
	cfg, err := parse(dir, head)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Uplink.Commands.CanActuate("hot") {
		t.Error("no commands section, but hot may be actuated: want deny by default")
	}
	cfg, err = parse(dir, head+"  commands: {actuate: [hot]}\n")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Uplink.Commands.CanActuate("hot") || cfg.Uplink.Commands.CanActuate("env") {
		t.Errorf("allow-list %v", cfg.Uplink.Commands.Actuate)
	}
	for _, c := range []struct{ yaml, want string }{
		{"  commands:\n    actuate: [nothing]\n", `perch.yaml:14: uplink.commands.actuate[0]: unknown module "nothing"`},
		{"  commands:\n    actuate:\n      - hot\n      - env\n", `perch.yaml:16: uplink.commands.actuate[1]: module "env" is a driver and takes no input`},
		{"  commands:\n    actuate:\n      - hot\n      - hot\n", `perch.yaml:16: uplink.commands.actuate[1]: module "hot" is listed twice`},
		{"  commands:\n    actuate: hot\n", "perch.yaml:14:"},
		{"  commands:\n    reboot: [hot]\n", "field reboot not found"},
	} {
		_, err := parse(dir, head+c.yaml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}
