package runtime

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		ok            bool
		levels        string
	}{
		{"a/b", "a/b", true, ""},
		{"a/b", "a/c", false, ""},
		{"a/b", "a/b/c", false, ""},
		{"a/+/c", "a/x/c", true, "x"},
		{"a/+/c", "a/x/d", false, ""},
		{"a/+/+", "a/x/y", true, "x y"},
		{"a/#", "a/x/y", true, "x/y"},
		{"a/#", "a", true, ""},
		{"#", "x/y", true, "x/y"},
		{"+/+", "x", false, ""},
	} {
		levels, ok := matchTopic(tc.filter, tc.topic)
		if ok != tc.ok || ok && strings.Join(levels, " ") != tc.levels {
			t.Errorf("matchTopic(%q, %q) = %q, %v; want %q, %v", tc.filter, tc.topic, levels, ok, tc.levels, tc.ok)
		}
	}
}

// TestSourceRecord: the conversion of a message into a reading, and the messages refused.
func TestSourceRecord(t *testing.T) {
	jsonSrc := &source{cfg: &config.Source{Name: "s", Series: "temp", Format: config.SourceFormatJSON,
		Topics: []string{"sensors/+/temperature", "plant/#"}}}
	valueSrc := &source{cfg: &config.Source{Name: "v", Series: "power", Format: config.SourceFormatValue,
		Topics: []string{"meter"}}}
	for _, tc := range []struct {
		src     *source
		topic   string
		payload string
		want    string // "source series fields tags", or "error: ..." (a part of it)
	}{
		{jsonSrc, "sensors/kitchen/temperature", `{"temperature_c": 21.5, "battery": 3, "ok": true, "unit": "C", "x": null, "y": [1], "z": {"a": 1}}`,
			"s/kitchen temp battery=3 ok=1 temperature_c=21.5 unit=C topic=sensors/kitchen/temperature"},
		{jsonSrc, "plant/a/b", ` 42 `, "s/a/b temp value=42 topic=plant/a/b"},
		{jsonSrc, "plant/a", `{"v": -1e3, "topic": "spoofed"}`, "s/a temp v=-1000 topic=plant/a"},
		{jsonSrc, "plant/a", `{"v": 1e999}`, "s/a temp v=+Inf topic=plant/a"},
		{valueSrc, "meter", "230.5\n", "v power value=230.5 topic=meter"},
		{jsonSrc, "plant/a", `{}`, "error: no numeric field"},
		{jsonSrc, "plant/a", `{"unit": "C"}`, "error: no numeric field"},
		{jsonSrc, "plant/a", `hello`, "error: not JSON"},
		{jsonSrc, "plant/a", ``, "error: not a JSON object"},
		{jsonSrc, "plant/a", `{"a": 1} {"b": 2}`, "error: data after it"},
		{jsonSrc, "plant/a", `[1, 2]`, "error: not a JSON object or number"},
		{jsonSrc, "plant/a", `{"a": 1`, "error: not a JSON object"},
		{valueSrc, "meter", `{"a": 1}`, "error: not a number"},
		{valueSrc, "meter", ``, "error: not a number"},
	} {
		rec, err := tc.src.record(tc.topic, []byte(tc.payload), 7)
		var got string
		if err != nil {
			got = "error: " + err.Error()
		} else {
			it := abi.Iter{Buf: rec}
			if !it.Next() || it.Rec.Kind != abi.KindReading || it.Rec.TimeNS != 7 {
				t.Fatalf("%q: bad record %x", tc.payload, rec)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "%s %s", it.Rec.Source, it.Rec.Series)
			it.Rec.Fields(func(n []byte, v float64) { fmt.Fprintf(&b, " %s=%v", n, v) })
			it.Rec.Tags(func(k, v []byte) { fmt.Fprintf(&b, " %s=%s", k, v) })
			got = b.String()
			if it.Next() || it.Err() != nil {
				t.Errorf("%q: more than one record, or %v", tc.payload, it.Err())
			}
		}
		if strings.HasPrefix(tc.want, "error: ") && !strings.Contains(got, strings.TrimPrefix(tc.want, "error: ")) ||
			!strings.HasPrefix(tc.want, "error: ") && got != tc.want {
			t.Errorf("%s %q:\n got %s\nwant %s", tc.topic, tc.payload, got, tc.want)
		}
	}
}

// testBroker is a mosquitto started by a test on a free loopback port.
type testBroker struct {
	t    *testing.T
	conf string
	port int
	cmd  *exec.Cmd
	log  bytes.Buffer
}

const mosquittoPath = "/usr/sbin/mosquitto"

func startTestBroker(t *testing.T) *testBroker {
	t.Helper()
	if _, err := os.Stat(mosquittoPath); err != nil {
		t.Skipf("no mosquitto: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBroker{t: t, port: l.Addr().(*net.TCPAddr).Port, conf: filepath.Join(t.TempDir(), "mosquitto.conf")}
	l.Close()
	text := fmt.Sprintf("persistence false\nlog_dest stderr\nlog_type error\nlistener %d 127.0.0.1\nallow_anonymous true\n", b.port)
	if err := os.WriteFile(b.conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *testBroker) url() string { return "tcp://127.0.0.1:" + strconv.Itoa(b.port) }

func (b *testBroker) start() {
	b.t.Helper()
	b.cmd = exec.Command(mosquittoPath, "-c", b.conf)
	b.cmd.Stdout, b.cmd.Stderr = &b.log, &b.log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto did not start: %v\n%s", err, b.log.String())
		}
	}
}

// stop kills the broker, as abruptly as an outage.
func (b *testBroker) stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
		b.cmd = nil
	}
}

// TestIntegrationSource: devices publish to the site's mosquitto; the source turns their messages
// into readings that reach the recorder and a threshold rule downstream, which raises an alert.
// Bad messages are counted in one rate-limited event. The broker starts after the runtime, and
// later goes down and comes back: the source connects, reconnects, subscribes again and keeps
// feeding the pipeline.
func TestIntegrationSource(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs mosquitto and a Wasm module")
	}
	thr, err := filepath.Abs("../build/modules/threshold.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(thr); err != nil {
		t.Skipf("%v: run `make modules` first", err)
	}
	b := startTestBroker(t)
	dir := t.TempDir()
	text := fmt.Sprintf(`site: test
device: box
store: {path: %q}
engine: {cache_dir: %q}
sources:
  - name: site-sensors
    broker: %s
    topics: ["sensors/+/temperature"]
    series: temperature
    client_id: perch-test-%d
    batch_wait: 10ms
modules:
  - name: too-hot
    wasm: %q
    inputs: [site-sensors]
    config: {series: temperature, field: temperature_c, above: 30, hysteresis: 1, severity: critical, message: attic too hot}
`, filepath.Join(dir, "perch.db"), filepath.Join(dir, "cache"), b.url(), time.Now().UnixNano(), thr)
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(t.Context(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	st, db := rt.Store(), rt.Store().DB()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	b.stop() // the broker comes up after the runtime: the source retries its first connection
	go func() { done <- rt.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	b.start()

	count := func(query string, args ...any) int {
		t.Helper()
		if err := st.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRow(query, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	waitCount := func(what string, want int, query string, args ...any) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); count(query, args...) < want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %d, want %d", what, count(query, args...), want)
			}
		}
	}
	connected := `SELECT count(*) FROM events WHERE kind = 'source.connected' AND module = 'site-sensors'`
	waitCount("the source to subscribe", 1, connected)

	pub := paho.NewClient(paho.NewClientOptions().AddBroker(b.url()).SetClientID(fmt.Sprintf("dev-%d", time.Now().UnixNano())).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	publish := func(topic, payload string) {
		t.Helper()
		if tok := pub.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	for i := range 5 {
		publish("sensors/kitchen/temperature", fmt.Sprintf(`{"temperature_c": %v, "battery_v": 3.1, "unit": "C"}`, 21+float64(i)/10))
	}
	publish("sensors/attic/temperature", `{"temperature_c": 35}`)
	publish("sensors/garage/temperature", `not json`) // bad
	publish("sensors/garage/temperature", `{}`)       // bad: no number
	publish("other/topic", `{"temperature_c": 99}`)   // not subscribed
	publish("sensors/attic/temperature", `{"temperature_c": 36}`)

	readings := `SELECT count(*) FROM readings WHERE series = 'temperature' AND source LIKE 'site-sensors/%'`
	waitCount("7 readings", 7, readings)
	waitCount("the alert", 1, `SELECT count(*) FROM alerts WHERE source = 'too-hot'`)
	var src, tags, fields string
	if err := db.QueryRow(`SELECT json_extract(tags, '$.source'), tags, fields FROM alerts WHERE source = 'too-hot'`).Scan(&src, &tags, &fields); err != nil {
		t.Fatal(err)
	}
	if src != "site-sensors/attic" || !strings.Contains(tags, `"state":"raised"`) || !strings.Contains(tags, `"severity":"critical"`) ||
		!strings.Contains(fields, `"value":35`) {
		t.Errorf("alert from %s: tags %s fields %s", src, tags, fields)
	}
	if n := count(`SELECT count(*) FROM readings WHERE source = 'site-sensors/kitchen' AND json_extract(fields, '$.battery_v') = 3.1
		AND json_extract(tags, '$.unit') = 'C' AND json_extract(tags, '$.topic') = 'sensors/kitchen/temperature'`); n != 5 {
		t.Errorf("kitchen readings with their fields and tags: %d, want 5", n)
	}
	if n := count(`SELECT count(*) FROM readings WHERE json_extract(fields, '$.temperature_c') = 99`); n != 0 {
		t.Errorf("%d readings from a topic not subscribed", n)
	}
	waitCount("the bad-message event", 1, `SELECT count(*) FROM events WHERE kind = 'source.bad_message'`)
	if got := rt.srcs[0].bad.Load(); got != 2 {
		t.Errorf("bad messages counted: %d, want 2", got)
	}
	if n := count(`SELECT count(*) FROM events WHERE kind = 'source.bad_message'`); n != 1 {
		t.Errorf("bad-message events: %d, want 1 (rate-limited)", n)
	}

	// The broker goes down and comes back (without persistence: the subscription is gone).
	b.stop()
	waitCount("the disconnection", 1, `SELECT count(*) FROM events WHERE kind = 'source.disconnected'`)
	b.start()
	waitCount("the source to subscribe again", 2, connected)
	publish("sensors/cellar/temperature", `12.5`)
	waitCount("a reading after the reconnection", 1, `SELECT count(*) FROM readings WHERE source = 'site-sensors/cellar'
		AND json_extract(fields, '$.value') = 12.5`)

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var health sql.NullInt64
	if err := db.QueryRow(`SELECT quarantined FROM module_health WHERE module = 'too-hot'`).Scan(&health); err != nil || health.Int64 != 0 {
		t.Errorf("too-hot health: %v %v", health, err)
	}
}
