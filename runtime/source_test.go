package runtime

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
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
	b := mqtttest.Start(t, "")
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
`, filepath.Join(dir, "perch.db"), filepath.Join(dir, "cache"), b.URL(), time.Now().UnixNano(), thr)
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
	b.Stop() // the broker comes up after the runtime: the source retries its first connection
	go func() { done <- rt.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	b.Start()

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

	pub := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID(fmt.Sprintf("dev-%d", time.Now().UnixNano())).
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
	b.Stop()
	waitCount("the disconnection", 1, `SELECT count(*) FROM events WHERE kind = 'source.disconnected'`)
	b.Start()
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

// TestIntegrationSourceMutualTLS: a source reaches a site broker that requires client
// certificates, with its own certificate; a source with a certificate from another CA is refused
// and says so in an event, and the rest of the runtime runs.
func TestIntegrationSourceMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs mosquitto")
	}
	m := mqtttest.StartMutualTLS(t)
	box, boxKey := m.CA.Issue(t, m.Dir, "box", false, time.Now().Add(time.Hour))
	dev, devKey := m.CA.Issue(t, m.Dir, "device", false, time.Now().Add(time.Hour))
	foreign, foreignKey := mqtttest.NewCA(t, "someone else").Issue(t, m.Dir, "intruder", false, time.Now().Add(time.Hour))
	dir := t.TempDir()
	text := fmt.Sprintf(`site: test
device: box
store: {path: %q}
sources:
  - name: secure
    broker: %[2]s
    tls: {ca_file: %[3]q, cert_file: %[4]q, key_file: %[5]q}
    topics: ["sensors/#"]
    client_id: perch-test-secure-%[6]d
    batch_wait: 10ms
  - name: intruder
    broker: %[2]s
    tls: {ca_file: %[3]q, cert_file: %[7]q, key_file: %[8]q}
    topics: ["sensors/#"]
    client_id: perch-test-intruder-%[6]d
`, filepath.Join(dir, "perch.db"), m.URL(), m.CAFile, box, boxKey, time.Now().UnixNano(), foreign, foreignKey)
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(t.Context(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	count := func(query string) int {
		t.Helper()
		if err := rt.Store().Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := rt.Store().DB().QueryRow(query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	wait := func(what, query string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); count(query) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	wait("the secure source to subscribe", `SELECT count(*) FROM events WHERE kind = 'source.connected' AND module = 'secure'`)

	tc, err := config.TLS{CAFile: m.CAFile, CertFile: dev, KeyFile: devKey}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(m.URL()).SetTLSConfig(tc).
		SetClientID(fmt.Sprintf("dev-%d", time.Now().UnixNano())))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	if tok := pub.Publish("sensors/cellar", 1, false, `{"temperature_c": 12.5}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	wait("the reading over TLS", `SELECT count(*) FROM readings WHERE source = 'secure/cellar' AND json_extract(fields, '$.temperature_c') = 12.5`)
	if n := count(`SELECT count(*) FROM events WHERE kind = 'source.connected' AND module = 'intruder'`); n != 0 {
		t.Errorf("the source with another CA's certificate connected")
	}
	if n := count(`SELECT count(*) FROM readings WHERE source LIKE 'intruder/%'`); n != 0 {
		t.Errorf("%d readings through the source with another CA's certificate", n)
	}
}
