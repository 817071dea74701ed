package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/uplink"
)

// TestIntegrationActuateCommand drives the relay actuator from upstream through a real
// mosquitto: cmd/actuate {"module": "fan", "state": "on"} reaches the fan actuator through the
// uplink and Runtime.Inject, the simulated relay on line 22 goes on and the reply on
// cmd/actuate/reply says ok; "off" switches it off. The second actuator ("other", on line 23)
// is not in uplink.commands.actuate: a command for it is refused with the reason and its relay
// is never written. Every command is an uplink.command event in the recorder, and goes upstream.
func TestIntegrationActuateCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs mosquitto and Wasm modules")
	}
	mods, err := filepath.Abs("../build/modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"bme280.wasm", "relay.wasm"} {
		if _, err := os.Stat(filepath.Join(mods, m)); err != nil {
			t.Skipf("%v: run `make modules` first", err)
		}
	}
	b := mqtttest.Start(t, "")
	dir := t.TempDir()
	// The bme280 driver only feeds the actuators' input (they ignore its readings): the relays
	// move only on commands.
	text := fmt.Sprintf(`site: test
device: box
store: {path: %[1]q}
engine: {cache_dir: %[2]q}
devices:
  - {name: env0, backend: sim, type: bme280, bus: 1, address: 0x76}
  - {name: fan, backend: sim, type: relay, line: 22}
  - {name: other, backend: sim, type: relay, line: 23}
modules:
  - name: env
    wasm: %[3]s/bme280.wasm
    deadline: 2s
    poll: 1s
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: fan
    wasm: %[3]s/relay.wasm
    deadline: 2s
    inputs: [env]
    grants:
      gpio: [{line: 22, mode: out}]
    config: {line: 22, source: uplink}
  - name: other
    wasm: %[3]s/relay.wasm
    deadline: 2s
    inputs: [env]
    grants:
      gpio: [{line: 23, mode: out}]
    config: {line: 23}
uplink:
  broker: %[4]s
  client_id: perch-test-cmd-%[5]d
  summaries: {batch: 0} # one message per event: the test reads the events' JSON
  commands:
    actuate: [fan]
`, filepath.Join(dir, "perch.db"), filepath.Join(dir, "cache"), mods, b.URL(), time.Now().UnixNano())
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(t.Context(), cfg, Options{Uplink: uplink.Options{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	fan, other := rt.SimDevice("fan").(*sim.Relay), rt.SimDevice("other").(*sim.Relay)

	// The operator's side: replies, the status and the events.
	prefix := uplink.Prefix("test", "box")
	var (
		mu      sync.Mutex
		got     = map[string][]string{} // topic -> payloads
		arrived = make(chan struct{}, 1)
	)
	op := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID(fmt.Sprintf("operator-%d", time.Now().UnixNano())).
		SetOrderMatters(false))
	if tok := op.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("operator: %v", tok.Error())
	}
	defer op.Disconnect(100)
	for _, topic := range []string{"cmd/actuate/reply", uplink.TopicStatus, uplink.TopicEvents} {
		tok := op.Subscribe(prefix+topic, 1, func(_ paho.Client, m paho.Message) {
			mu.Lock()
			got[strings.TrimPrefix(m.Topic(), prefix)] = append(got[strings.TrimPrefix(m.Topic(), prefix)], string(m.Payload()))
			mu.Unlock()
			select {
			case arrived <- struct{}{}:
			default:
			}
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", topic, tok.Error())
		}
	}
	waitFor := func(what, topic, has string) string {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			mu.Lock()
			for _, p := range got[topic] {
				if strings.Contains(p, has) {
					mu.Unlock()
					return p
				}
			}
			mu.Unlock()
			select {
			case <-arrived:
			case <-time.After(20 * time.Millisecond):
			case <-deadline:
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("timed out waiting for %s: %s has %q", what, topic, got[topic])
			}
		}
	}
	waitLevel := func(r *sim.Relay, want bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); r.Level() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("relay level %v, want %v", r.Level(), want)
			}
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	// The uplink subscribes to cmd/+ before it publishes its status.
	waitFor("the uplink online", uplink.TopicStatus, `"state":"online"`)

	command := func(payload string) {
		t.Helper()
		if tok := op.Publish(prefix+"cmd/actuate", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	type reply struct {
		RequestID string `json:"request_id"`
		Command   string `json:"command"`
		OK        bool   `json:"ok"`
		Error     string `json:"error"`
	}
	replyTo := func(id string) reply {
		t.Helper()
		var r reply
		if err := json.Unmarshal([]byte(waitFor("the reply to "+id, "cmd/actuate/reply", `"request_id":"`+id+`"`)), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	command(`{"request_id": "r1", "module": "fan", "state": "on", "message": "operator: cool down"}`)
	if r := replyTo("r1"); !r.OK || r.Command != "actuate" || r.Error != "" {
		t.Errorf("reply to on: %+v", r)
	}
	waitLevel(fan, true)
	command(`{"request_id": "r2", "module": "fan", "state": "off"}`)
	if r := replyTo("r2"); !r.OK {
		t.Errorf("reply to off: %+v", r)
	}
	waitLevel(fan, false)
	command(`{"request_id": "r3", "module": "other", "state": "on"}`)
	if r := replyTo("r3"); r.OK || !strings.Contains(r.Error, `module "other" may not be actuated from upstream`) {
		t.Errorf("reply to a module not in the allow-list: %+v", r)
	}
	command(`{"request_id": "r4", "module": "fan", "state": "spin"}`)
	if r := replyTo("r4"); r.OK || !strings.Contains(r.Error, `bad payload: state`) {
		t.Errorf("reply to a bad state: %+v", r)
	}
	// The command events go upstream like any event.
	waitFor("the refused command's event upstream", uplink.TopicEvents, `"request_id":"r3"`)

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ch := fan.Changes(); len(ch) != 2 || !ch[0].Level || ch[1].Level || fan.Writes() != 2 {
		t.Errorf("fan relay changes %v after %d writes, want on then off", ch, fan.Writes())
	}
	if other.Writes() != 0 {
		t.Errorf("the relay of a module not in the allow-list was written %d times", other.Writes())
	}

	db := rt.Store().DB()
	count := func(query string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM events WHERE kind = 'actuator' AND module = 'fan'
		AND json_extract(tags, '$.alert_source') = 'uplink' AND json_extract(tags, '$.alert_series') = 'command'`); n != 2 {
		t.Errorf("actuator events for the commands: %d, want 2", n)
	}
	rows, err := db.Query(`SELECT module, json_extract(fields, '$.state'), json_extract(fields, '$.request_id'),
		json_extract(fields, '$.ok') FROM events WHERE kind = 'uplink.command' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var audit []string
	for rows.Next() {
		var module, state, id string
		var ok bool
		if err := rows.Scan(&module, &state, &id, &ok); err != nil {
			t.Fatal(err)
		}
		audit = append(audit, fmt.Sprintf("%s %s %s %v", id, module, state, ok))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"r1 fan on true", "r2 fan off true", "r3 other on false", "r4 fan spin false"}
	if fmt.Sprint(audit) != fmt.Sprint(want) {
		t.Errorf("uplink.command events %q, want %q", audit, want)
	}
	if n := count(`SELECT count(*) FROM events WHERE kind IN ('module.fault', 'module.error')`); n != 0 {
		t.Errorf("%d fault or error events", n)
	}
}
