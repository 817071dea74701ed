package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

const testPrefix = "perch/lab/box1/"

// rig is a store and an uplink running against a broker.
type rig struct {
	t    *testing.T
	path string // the database
	cfg  *config.Config
	st   *store.Store
	up   *Uplink
	stop func()
}

func testConfig(brokerURL string) *config.Config {
	return &config.Config{Site: "lab", Device: "box1", Uplink: config.Uplink{
		Broker: brokerURL, ClientID: "perch-test", InFlight: 8,
		Keepalive: config.Duration(5 * time.Second), Heartbeat: config.Duration(time.Hour),
		RawReadings: config.RawReadings{MaxPerSecond: 1},
	}}
}

// newRig opens a store with the uplink's hook and starts the uplink; both stop at test end.
func newRig(t *testing.T, cfg *config.Config, opts Options) *rig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "perch.db")
	st, err := store.Open(context.Background(), store.Options{
		Path: path, Upstream: Upstream(cfg),
		CommitInterval: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if opts.BackoffMin == 0 {
		opts.BackoffMin, opts.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
	}
	opts.ConnectTimeout = 3 * time.Second
	up, err := New(cfg, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		up.Run(ctx)
	}()
	var once sync.Once
	r := &rig{t: t, path: path, cfg: cfg, st: st, up: up}
	r.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			st.Close()
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *rig) write(kind abi.Kind, series string, n float64) {
	r.t.Helper()
	b := abi.Append(nil, kind, time.Now().UnixNano(), "rule", series,
		[]abi.Field{{Name: "n", Value: n}}, []abi.Tag{{Key: "severity", Value: "critical"}})
	if err := r.st.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// waitEmpty waits until the outbox is empty.
func (r *rig) waitEmpty(timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if err := r.st.Flush(context.Background()); err != nil {
			r.t.Fatal(err)
		}
		s, err := r.st.OutboxStats(context.Background())
		if err != nil {
			r.t.Fatal(err)
		}
		if s.Rows == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("outbox not drained: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type outMsg struct {
	ID     int64              `json:"id"`
	Time   string             `json:"time"`
	Kind   string             `json:"kind"`
	Source string             `json:"source"`
	Series string             `json:"series"`
	Fields map[string]float64 `json:"fields"`
	Tags   map[string]string  `json:"tags"`
}

func decode(t testing.TB, m message) outMsg {
	t.Helper()
	var o outMsg
	if err := json.Unmarshal(m.payload, &o); err != nil {
		t.Fatalf("%s: %s: %v", m.topic, m.payload, err)
	}
	return o
}

func count(msgs []message, topic string, pred func(message) bool) int {
	n := 0
	for _, m := range msgs {
		if m.topic == topic && (pred == nil || pred(m)) {
			n++
		}
	}
	return n
}

func isState(state string) func(message) bool {
	return func(m message) bool { return strings.Contains(string(m.payload), `"state":"`+state+`"`) }
}

func TestIntegrationTopics(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, "perch/#", nil)
	r := newRig(t, testConfig(b.URL()), Options{Version: "test-1"})
	sub.waitFor(10*time.Second, "status online", func(ms []message) bool {
		return count(ms, testPrefix+TopicStatus, isState("online")) > 0
	})
	r.write(abi.KindSummary, "temp_1m", 1)
	r.write(abi.KindAlert, "overheat", 2)
	r.write(abi.KindReading, "temp", 3) // not sent: raw readings are off
	r.write(abi.KindScore, "ae", 4)     // never sent
	r.write(abi.KindEvent, "door.opened", 5)
	msgs := sub.waitFor(10*time.Second, "alert, summary and event", func(ms []message) bool {
		return count(ms, testPrefix+TopicAlerts, nil) == 1 && count(ms, testPrefix+TopicSummaries, nil) == 1 &&
			count(ms, testPrefix+TopicEvents, nil) == 1
	})
	r.waitEmpty(10 * time.Second)
	for _, m := range msgs {
		if m.topic == testPrefix+TopicReadings {
			t.Errorf("raw reading sent: %s", m.payload)
		}
		if m.topic != testPrefix+TopicAlerts {
			continue
		}
		o := decode(t, m)
		if o.ID <= 0 || o.Kind != "alert" || o.Series != "overheat" || o.Source != "rule" ||
			o.Fields["n"] != 2 || o.Tags["severity"] != "critical" {
			t.Errorf("alert = %+v", o)
		}
		if _, err := time.Parse(time.RFC3339Nano, o.Time); err != nil {
			t.Errorf("time: %v", err)
		}
	}
	s, _ := r.st.OutboxStats(context.Background())
	if s.RowsPublished != 3 || s.BytesPublished == 0 || s.BytesIngested == 0 {
		t.Errorf("stats %+v", s)
	}
	// The status carries version and backlog.
	for _, m := range msgs {
		if m.topic == testPrefix+TopicStatus {
			var st Status
			json.Unmarshal(m.payload, &st)
			if st.Version != "test-1" || st.Backlog == nil {
				t.Errorf("status %s", m.payload)
			}
		}
	}
}

// TestIntegrationLastWill: a connection killed hard makes the broker publish the last will,
// offline; the uplink reconnects and says online again.
func TestIntegrationLastWill(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, testPrefix+TopicStatus, nil)
	r := newRig(t, testConfig(b.URL()), Options{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	sub.waitFor(10*time.Second, "online", func(ms []message) bool { return count(ms, testPrefix+TopicStatus, isState("online")) > 0 })
	r.up.KillConnection()
	sub.waitFor(10*time.Second, "offline (last will)", func(ms []message) bool {
		return count(ms, testPrefix+TopicStatus, isState("offline")) > 0
	})
	sub.waitFor(10*time.Second, "online again", func(ms []message) bool {
		last := ms[len(ms)-1]
		return count(ms, testPrefix+TopicStatus, isState("online")) >= 2 && isState("online")(last)
	})
	// A clean stop says offline too.
	r.stop()
	sub.waitFor(10*time.Second, "offline at stop", func(ms []message) bool {
		return isState("offline")(ms[len(ms)-1])
	})
}

// checkOrder checks that msgs, on topic, hold the ids want in order, where a repeated id is a
// duplicate of the same message and everything else comes in increasing order.
func checkOrder(t *testing.T, msgs []message, topic string, want []int64) (dups int) {
	t.Helper()
	seen := map[int64]string{}
	var got []int64
	for _, m := range msgs {
		if m.topic != topic {
			continue
		}
		o := decode(t, m)
		if prev, ok := seen[o.ID]; ok {
			dups++
			if prev != string(m.payload) {
				t.Errorf("id %d sent with two payloads:\n%s\n%s", o.ID, prev, m.payload)
			}
			continue
		}
		if len(got) > 0 && o.ID < got[len(got)-1] {
			t.Errorf("id %d after %d: out of order", o.ID, got[len(got)-1])
		}
		seen[o.ID] = string(m.payload)
		got = append(got, o.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %d ids, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	return dups
}

// TestIntegrationBrokerOutage: alerts keep coming while the broker is down; after it is back,
// every alert committed to the outbox arrives, in order.
func TestIntegrationBrokerOutage(t *testing.T) {
	// The broker keeps the subscriber's session across its restart, so that it queues what the
	// uplink publishes before the subscriber is back.
	b := mqtttest.Start(t, "")
	b.Persist = true
	b.Restart()
	sub := subscribe(t, b, testPrefix+TopicAlerts, nil)
	r := newRig(t, testConfig(b.URL()), Options{})
	var ids []int64
	for i := range 300 {
		if i == 50 {
			b.StopGracefully()
		}
		if i == 250 {
			b.Start()
		}
		r.write(abi.KindAlert, "a", float64(i))
		if i%10 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	r.st.Flush(context.Background())
	rows, err := r.st.DB().Query("SELECT id FROM alerts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	r.waitEmpty(30 * time.Second)
	defer func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", b.Log())
			sub.mu.Lock()
			seen := map[int64]bool{}
			for _, m := range sub.msgs {
				seen[int64(decode(t, m).Fields["n"])] = true
			}
			sub.mu.Unlock()
			for i := range 300 {
				if !seen[int64(i)] {
					t.Logf("missing n=%d", i)
				}
			}
		}
	}()
	msgs := sub.waitFor(30*time.Second, "300 alerts", func(ms []message) bool {
		seen := map[string]bool{}
		for _, m := range ms {
			seen[string(m.payload)] = true
		}
		return len(seen) >= 300
	})
	// The outbox ids of alerts are not the alerts table's ids: compare the order of "n" instead.
	var want []int64
	for i := range ids {
		want = append(want, int64(i))
	}
	var byN []message
	for _, m := range msgs {
		o := decode(t, m)
		byN = append(byN, message{topic: m.topic, payload: fmt.Appendf(nil, `{"id":%d,"x":%d}`, int64(o.Fields["n"]), o.ID)})
	}
	dups := checkOrder(t, byN, testPrefix+TopicAlerts, want)
	checkOrder(t, msgs, testPrefix+TopicAlerts, idsOf(t, msgs))
	t.Logf("%d alerts, %d duplicates", len(want), dups)
}

// idsOf returns the distinct ids of msgs in increasing order.
func idsOf(t *testing.T, msgs []message) []int64 {
	seen := map[int64]bool{}
	var out []int64
	for _, m := range msgs {
		o := decode(t, m)
		if !seen[o.ID] {
			seen[o.ID] = true
			out = append(out, o.ID)
		}
	}
	for i := 1; i < len(out); i++ {
		if out[i] < out[i-1] {
			return nil // checkOrder reports it
		}
	}
	return out
}

// TestIntegrationAlertFirst: with a backlog of summaries and events, a new alert is sent before
// them.
func TestIntegrationAlertFirst(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, testPrefix+"#", nil)
	cfg := testConfig(b.URL())
	cfg.Uplink.Broker = "tcp://127.0.0.1:1" // nothing listens: the backlog builds up
	r := newRig(t, cfg, Options{})
	for i := range 200 {
		r.write(abi.KindEvent, "e", float64(i))
		r.write(abi.KindSummary, "s", float64(i))
	}
	r.write(abi.KindAlert, "late", 0)
	r.st.Flush(context.Background())
	r.stop()
	// The same database, now with a broker.
	st, err := store.Open(context.Background(), store.Options{Path: r.path, Upstream: Upstream(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	up, err := New(testConfig(b.URL()), st, Options{BackoffMin: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); up.Run(ctx) }()
	defer func() { cancel(); <-done }()
	msgs := sub.waitFor(20*time.Second, "the backlog", func(ms []message) bool {
		return count(ms, testPrefix+TopicEvents, nil) >= 200
	})
	var order []string
	for _, m := range msgs {
		if m.topic != testPrefix+TopicStatus {
			order = append(order, strings.TrimPrefix(m.topic, testPrefix))
		}
	}
	if order[0] != TopicAlerts || order[1] != TopicSummaries || order[len(order)-1] != TopicEvents {
		t.Errorf("order: %v ... %v", order[:3], order[len(order)-1])
	}
}

func TestIntegrationCommands(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, testPrefix+"#", nil)
	level := new(slog.LevelVar)
	r := newRig(t, testConfig(b.URL()), Options{LogLevel: level})
	sub.waitFor(10*time.Second, "online", func(ms []message) bool { return count(ms, testPrefix+TopicStatus, isState("online")) > 0 })
	// What the update agent journaled goes up in the status: the last step per target.
	for _, st := range []store.UpdateStep{{Target: "deployments/pumps", Kind: "deployment", Release: 3, Step: "skipped"},
		{Target: "modules/f", Kind: "module", Version: "0.2.0", Release: 2, Step: "swapped"},
		{Target: "modules/f", Kind: "module", Version: "0.2.0", Release: 2, Step: "committed"}} {
		if err := r.st.Journal(context.Background(), st); err != nil {
			t.Fatal(err)
		}
	}
	pub := func(topic, payload string) {
		tok := sub.client.Publish(testPrefix+topic, 1, false, payload)
		tok.Wait()
		if tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	pub("cmd/ping", `{"request_id":"r1"}`)
	pub("cmd/status", ``)
	pub("cmd/reboot", `{}`)
	pub(TopicStateDesired, `{"log_level":"debug","sample_rate":5}`)
	msgs := sub.waitFor(10*time.Second, "replies", func(ms []message) bool {
		return count(ms, testPrefix+"cmd/ping/reply", nil) == 1 && count(ms, testPrefix+"cmd/status/reply", nil) == 1 &&
			count(ms, testPrefix+"cmd/reboot/reply", nil) == 1 && count(ms, testPrefix+TopicStateReported, nil) == 1
	})
	for _, m := range msgs {
		var v map[string]any
		json.Unmarshal(m.payload, &v)
		switch strings.TrimPrefix(m.topic, testPrefix) {
		case "cmd/ping/reply":
			if v["ok"] != true || v["request_id"] != "r1" {
				t.Errorf("ping: %s", m.payload)
			}
		case "cmd/status/reply":
			if v["ok"] != true || v["status"] == nil {
				t.Errorf("status: %s", m.payload)
			}
			var reply struct{ Status Status }
			json.Unmarshal(m.payload, &reply)
			if u := reply.Status.Updates; len(u) != 2 || u[0].Target != "modules/f" || u[0].Step != "committed" ||
				u[0].Release != 2 || u[1].Step != "skipped" || u[1].Time.IsZero() {
				t.Errorf("status updates %+v", u)
			}
		case "cmd/reboot/reply":
			if v["ok"] != false || !strings.Contains(fmt.Sprint(v["error"]), "unknown command") {
				t.Errorf("reboot: %s", m.payload)
			}
		case TopicStateReported:
			applied, _ := v["applied"].(map[string]any)
			refused, _ := v["refused"].(map[string]any)
			if applied["log_level"] != "debug" || refused["sample_rate"] == nil {
				t.Errorf("reported: %s", m.payload)
			}
		}
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("log level %v", level.Level())
	}
}

// TestIntegrationDailyBudget: past the daily budget only alerts go; the rest waits.
func TestIntegrationDailyBudget(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, testPrefix+"#", nil)
	cfg := testConfig(b.URL())
	cfg.Uplink.DailyBudgetBytes = 3000
	r := newRig(t, cfg, Options{})
	sub.waitFor(10*time.Second, "online", func(ms []message) bool { return count(ms, testPrefix+TopicStatus, isState("online")) > 0 })
	for i := range 40 {
		r.write(abi.KindEvent, "e", float64(i))
		r.write(abi.KindSummary, "s", float64(i))
	}
	for i := range 5 {
		r.write(abi.KindAlert, "a", float64(i))
	}
	msgs := sub.waitFor(10*time.Second, "5 alerts", func(ms []message) bool { return count(ms, testPrefix+TopicAlerts, nil) == 5 })
	time.Sleep(300 * time.Millisecond)
	r.write(abi.KindAlert, "late", 0)
	msgs = sub.waitFor(10*time.Second, "the late alert", func(ms []message) bool { return count(ms, testPrefix+TopicAlerts, nil) == 6 })
	// Alerts always go; the rest stops near the budget (it may overshoot by what was in flight
	// when the budget ran out).
	var sent, rest int
	for _, m := range msgs {
		if m.topic != testPrefix+TopicStatus {
			sent += len(m.payload)
			if m.topic != testPrefix+TopicAlerts {
				rest += len(m.payload)
			}
		}
	}
	s, e := count(msgs, testPrefix+TopicSummaries, nil), count(msgs, testPrefix+TopicEvents, nil)
	if s == 0 || s == 40 || e == 40 || rest > 3000+1500 {
		t.Errorf("sent %d bytes (%d not alerts): %d summaries, %d events", sent, rest, s, e)
	}
	var st store.OutboxStats
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st, _ = r.st.OutboxStats(context.Background()); st.Backlog[store.PriorityAlert].Rows == 0 {
			break
		}
	}
	if st.Backlog[store.PriorityAlert].Rows != 0 || st.Rows == 0 {
		t.Errorf("backlog %+v", st.Backlog)
	}
	t.Logf("sent %d bytes: 6 alerts, %d summaries, %d events; %d rows wait", sent, s, e, st.Rows)
}
