package config_test

import (
	"strings"
	"testing"
	"time"
)

func TestSources(t *testing.T) {
	dir := testDir(t)
	cfg, err := parse(dir, `site: s
device: d
sources:
  - name: site-sensors
    broker: tcp://127.0.0.1:1883
    topics: ["sensors/+/temperature", "plant/#"]
  - name: meters
    broker: mqtt://10.0.0.2:1883
    topics: [meters/main]
    series: power
    format: value
    client_id: box-meters
    batch_max_records: 10
    batch_wait: 1s
    record: false
modules:
  - name: hot
    wasm: thr.wasm
    inputs: [site-sensors, meters]
`)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sources[0]
	if s.Series != "site-sensors" || s.Format != "json" || s.ClientID != "perch-s-d-site-sensors" ||
		s.BatchMaxRecords != 256 || s.BatchWait.D() != 50*time.Millisecond || !s.Recorded() {
		t.Errorf("defaults: %+v", s)
	}
	s = cfg.Sources[1]
	if s.Series != "power" || s.Format != "value" || s.ClientID != "box-meters" || s.BatchMaxRecords != 10 ||
		s.BatchWait.D() != time.Second || s.Recorded() {
		t.Errorf("explicit: %+v", s)
	}
	if cfg.Source("meters") != &cfg.Sources[1] || cfg.Source("hot") != nil {
		t.Error("Source: wrong lookup")
	}
}

func TestSourceErrors(t *testing.T) {
	dir := testDir(t)
	const ok = "    broker: tcp://x:1\n    topics: [a]\n"
	for _, tc := range []struct{ yaml, want string }{
		{"sources:\n  - name: Bad\n" + ok, `perch.yaml:4: sources[0].name: want a lowercase name`},
		{"sources:\n  - name: a\n" + ok + "  - name: a\n" + ok, `sources[1].name: duplicate source "a"`},
		{"sources:\n  - name: a\n    topics: [a]\n", "perch.yaml:4: sources[0].broker: required"},
		{"sources:\n  - name: a\n    broker: ws://x:1\n    topics: [a]\n", "sources[0].broker: want tcp://, mqtt://, tls://"},
		{"sources:\n  - name: a\n" + ok + "    tls: {ca_file: ca.pem}\n", `sources[0].tls: the broker "tcp://x:1" is not a tls:// URL`},
		{"sources:\n  - name: a\n    broker: tls://x:1\n    topics: [a]\n    tls: {cert_file: nope.pem}\n", "sources[0].tls: cert_file and key_file go together"},
		{"sources:\n  - name: a\n    broker: tls://x:1\n    topics: [a]\n    tls: {ca_file: nope.pem}\n", "sources[0].tls.ca_file: stat"},
		{"sources:\n  - name: a\n    broker: tcp://x\n    topics: [a]\n", "sources[0].broker: want a host and a port"},
		{"sources:\n  - name: a\n    broker: tcp://x:1\n", "sources[0].topics: at least one topic filter"},
		{"sources:\n  - name: a\n    broker: tcp://x:1\n    topics: [a/#/b]\n", "sources[0].topics[0]: \"a/#/b\": # must be the last level"},
		{"sources:\n  - name: a\n    broker: tcp://x:1\n    topics: [a/b+]\n", "a wildcard must be a whole level"},
		{"sources:\n  - name: a\n    broker: tcp://x:1\n    topics: [\"\"]\n", "sources[0].topics[0]: empty topic filter"},
		{"sources:\n  - name: a\n" + ok + "    format: csv\n", `sources[0].format: want json or value, got "csv"`},
		{"sources:\n  - name: a\n" + ok + "    batch_max_records: -1\n", "sources[0].batch_max_records: want 1 to 4096"},
		{"sources:\n  - name: a\n" + ok + "    bogus: 1\n", "field bogus not found"},
		{"sources:\n  - name: hot\n" + ok + "modules:\n  - name: hot\n    wasm: thr.wasm\n    inputs: [x]\n",
			`sources[0].name: "hot" is also a module's name`},
		{"modules:\n  - name: hot\n    wasm: thr.wasm\n    inputs: [nope]\n", `modules[0].inputs[0]: unknown module "nope"`},
	} {
		_, err := parse(dir, "site: s\ndevice: d\n"+tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
