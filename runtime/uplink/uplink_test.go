package uplink

import (
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
)

// fakeClient records what the uplink publishes: the unit-test seam in place of paho.
type fakeClient struct {
	mu   sync.Mutex
	pubs []message
}

type doneToken struct{ paho.Token }

func (doneToken) Wait() bool                     { return true }
func (doneToken) WaitTimeout(time.Duration) bool { return true }
func (doneToken) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
func (doneToken) Error() error { return nil }

func (f *fakeClient) Connect() paho.Token { return doneToken{} }
func (f *fakeClient) Disconnect(uint)     {}
func (f *fakeClient) Publish(topic string, _ byte, retained bool, payload any) paho.Token {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pubs = append(f.pubs, message{topic: topic, payload: payload.([]byte), retained: retained})
	return doneToken{}
}
func (f *fakeClient) Subscribe(string, byte, paho.MessageHandler) paho.Token { return doneToken{} }

// fakeMessage is an incoming message.
type fakeMessage struct {
	paho.Message
	topic   string
	payload []byte
}

func (m fakeMessage) Topic() string   { return m.topic }
func (m fakeMessage) Payload() []byte { return m.payload }

func newTestUplink(t *testing.T, opts Options) *Uplink {
	t.Helper()
	u, err := newUplink(&config.Config{Site: "lab", Device: "box1", Uplink: config.Uplink{Broker: "tcp://127.0.0.1:1"}},
		nopOutbox{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCommands(t *testing.T) {
	u := newTestUplink(t, Options{Version: "v9"})
	f := &fakeClient{}
	for _, c := range []struct{ name, payload string }{
		{"ping", `{"request_id":7}`}, {"status", ``}, {"format-disk", `{}`}, {"ping", `not json`},
	} {
		u.command(f, fakeMessage{topic: testPrefix + "cmd/" + c.name, payload: []byte(c.payload)})
	}
	want := []struct {
		topic string
		ok    bool
		has   string
	}{
		{"cmd/ping/reply", true, `"request_id":7`},
		{"cmd/status/reply", true, `"version":"v9"`},
		{"cmd/format-disk/reply", false, `unknown command \"format-disk\"`},
		{"cmd/ping/reply", true, `"ok":true`},
	}
	if len(f.pubs) != len(want) {
		t.Fatalf("%d replies", len(f.pubs))
	}
	for i, w := range want {
		p := f.pubs[i]
		var v struct {
			OK bool `json:"ok"`
		}
		if err := json.Unmarshal(p.payload, &v); err != nil {
			t.Fatal(err)
		}
		if p.topic != testPrefix+w.topic || v.OK != w.ok || !strings.Contains(string(p.payload), w.has) || p.retained {
			t.Errorf("reply %d: %s %s", i, p.topic, p.payload)
		}
	}
}

func TestDesiredState(t *testing.T) {
	level := new(slog.LevelVar)
	u := newTestUplink(t, Options{LogLevel: level})
	f := &fakeClient{}
	for _, tc := range []struct{ payload, applied, refused string }{
		{`{"log_level":"warn"}`, `"applied":{"log_level":"warn"}`, `"refused":{}`},
		{`{"log_level":"loud","modules":[]}`, `"applied":{}`, `"log_level":"want one of debug, info, warn, error","modules":"not a setting`},
		{`[1,2]`, `"applied":{}`, `"*":"payload is not a JSON object`},
	} {
		f.pubs = nil
		u.desired(f, fakeMessage{topic: testPrefix + TopicStateDesired, payload: []byte(tc.payload)})
		if len(f.pubs) != 1 {
			t.Fatalf("%s: %d reports", tc.payload, len(f.pubs))
		}
		p := f.pubs[0]
		if p.topic != testPrefix+TopicStateReported || !p.retained || !strings.Contains(string(p.payload), tc.applied) ||
			!strings.Contains(string(p.payload), tc.refused) || !strings.Contains(string(p.payload), `"state":{"log_level":"warn"}`) {
			t.Errorf("%s: reported %s", tc.payload, p.payload)
		}
	}
	if level.Level() != slog.LevelWarn {
		t.Errorf("level %v", level.Level())
	}
	// Without a LevelVar the setting is refused.
	u = newTestUplink(t, Options{})
	f.pubs = nil
	u.desired(f, fakeMessage{topic: testPrefix + TopicStateDesired, payload: []byte(`{"log_level":"debug"}`)})
	if !strings.Contains(string(f.pubs[0].payload), "not adjustable") {
		t.Errorf("reported %s", f.pubs[0].payload)
	}
}

func TestEncoder(t *testing.T) {
	e := newEncoder(testPrefix, config.RawReadings{Enabled: true, MaxPerSecond: 2})
	now := time.Unix(1000, 0)
	n := 0
	for i := 0; i < 10; i++ {
		if e.allow(now) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("burst allowed %d, want 2", n)
	}
	if !e.allow(now.Add(600 * time.Millisecond)) {
		t.Error("refill")
	}
}

func TestBudgetCursor(t *testing.T) {
	u := newTestUplink(t, Options{})
	u.cfg.DailyBudgetBytes = 1000
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := store.OutboxCursor{1, 2, 3, 4}
	held := func(c store.OutboxCursor) (n int) {
		for _, v := range c {
			if v == math.MaxInt64 {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		sent int64
		held int
	}{{0, 0}, {799, 0}, {800, 2}, {999, 2}, {1000, 3}, {5000, 3}} {
		u.sentToday = tc.sent
		got := u.budgetCursor(c, now)
		if held(got) != tc.held || got[0] != 1 {
			t.Errorf("sent %d: cursor %v, want %d priorities held", tc.sent, got, tc.held)
		}
	}
	// A new day starts from zero.
	if got := u.budgetCursor(c, now.Add(24*time.Hour)); held(got) != 0 || u.sentToday != 0 {
		t.Errorf("next day: %v, sent %d", got, u.sentToday)
	}
}
