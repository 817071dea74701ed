package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/api"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// sse is a client of the live stream: it reads events on a goroutine, with the time each
// arrived.
type sse struct {
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
	mu     sync.Mutex
	counts map[string]int // events received, by name
}

type sseEvent struct {
	name, data string
	at         time.Time
	err        error // the stream ended
}

// openStream opens base+path with token (none if empty) and checks that it is an event stream.
func openStream(t testing.TB, base, path, token string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sse{resp: resp, events: make(chan sseEvent, 1<<16), cancel: cancel, counts: map[string]int{}}
	go func() {
		rd := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				s.events <- sseEvent{err: err}
				close(s.events)
				return
			}
			switch line = strings.TrimSuffix(line, "\n"); {
			case line == "":
				if ev.name != "" {
					ev.at = time.Now()
					s.mu.Lock()
					s.counts[ev.name]++
					s.mu.Unlock()
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sse) close() { s.cancel(); s.resp.Body.Close() }

// count returns how many events named name have arrived.
func (s *sse) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[name]
}

// next returns the next event named one of names, skipping others, or fails the test after d.
func (s *sse) next(t testing.TB, d time.Duration, names ...string) sseEvent {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok || ev.err != nil {
				t.Fatalf("the stream ended waiting for %v: %v", names, ev.err)
			}
			if slices.Contains(names, ev.name) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event in %v", names, d)
		}
	}
}

// TestStreamHTTP runs the stream's HTTP side against a hub fed by hand: the token (header or
// access_token), bad queries, events, a client too slow to read told how much it lost, and
// shutdown ending open streams.
func TestStreamHTTP(t *testing.T) {
	hub := api.NewHub(api.HubOptions{Buffer: 16})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- api.ServeListener(ctx, ln, "s3cret", nil, hub) }()
	base := "http://" + ln.Addr().String()

	for path, want := range map[string]int{
		"/api/v1/stream":                                 http.StatusUnauthorized,
		"/api/v1/stream?access_token=wrong":              http.StatusUnauthorized,
		"/api/v1/stream?access_token=s3cret&kinds=x":     http.StatusBadRequest,
		"/api/v1/stream?access_token=s3cret&max_rate=-2": http.StatusBadRequest,
	} {
		if code, body := get(t, base, path, ""); code != want {
			t.Errorf("%s: %d %q, want %d", path, code, body, want)
		}
	}

	// Through the query parameter, as the page does.
	s := openStream(t, base, "/api/v1/stream?access_token=s3cret&kinds=alert,score", "")
	waitClients(t, hub, 1)
	batch := abi.Append(nil, abi.KindReading, 1, "env", "environment", []abi.Field{{Name: "t", Value: 1}}, nil)
	batch = abi.Append(batch, abi.KindScore, 2, "model", "environment", []abi.Field{{Name: "score", Value: 0.5}, {Name: "threshold", Value: 0.9}}, nil)
	batch = abi.Append(batch, abi.KindAlert, 3, "env-hot", "environment", []abi.Field{{Name: "value", Value: 31}},
		[]abi.Tag{{Key: "state", Value: "raised"}, {Key: "message", Value: "too hot"}})
	hub.Publish("env-hot", batch)
	ev := s.next(t, time.Minute, "reading", "score", "alert")
	var score struct {
		Kind, Module, Source string
		Fields               map[string]float64
	}
	if err := json.Unmarshal([]byte(ev.data), &score); ev.name != "score" || err != nil || score.Kind != "score" ||
		score.Module != "env-hot" || score.Source != "model" || score.Fields["threshold"] != 0.9 {
		t.Errorf("first event %s %s (%v), want the score", ev.name, ev.data, err)
	}
	ev = s.next(t, time.Minute, "reading", "score", "alert")
	var al struct{ Tags map[string]string }
	if err := json.Unmarshal([]byte(ev.data), &al); ev.name != "alert" || err != nil || al.Tags["message"] != "too hot" {
		t.Errorf("second event %s %s (%v), want the alert", ev.name, ev.data, err)
	}

	// A client that does not read: once its 16-event buffer is full, events for it are
	// dropped, and Publish goes on, also after the socket buffers between the two are full (200k
	// dropped events are 50 MB, far more than they hold). When it reads again it is told how
	// many it lost.
	s.close()
	waitClients(t, hub, 0)
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/stream?kinds=alert HTTP/1.1\r\nHost: perch\r\nAuthorization: Bearer s3cret\r\n\r\n")
	waitClients(t, hub, 1)
	var big []byte
	pad := strings.Repeat("x", 200)
	for range 100 {
		big = abi.Append(big, abi.KindAlert, 4, "env-hot", "environment", nil, []abi.Tag{{Key: "message", Value: pad}})
	}
	start := time.Now()
	for hub.Stats().Dropped < 200000 {
		hub.Publish("env-hot", big)
	}
	st := hub.Stats()
	t.Logf("%d events queued and %d dropped in %v", st.Sent, st.Dropped, time.Since(start))
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	rd := bufio.NewReader(conn)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the slow client's stream: %v", err)
		}
		if line == "event: dropped\n" {
			break
		}
	}
	line, _ := rd.ReadString('\n')
	var d struct{ Dropped, Total uint64 }
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil || d.Dropped == 0 || d.Total < d.Dropped {
		t.Errorf("dropped event %q: %v", line, err)
	}

	// Shutdown ends the open stream at once (the client has stopped reading again).
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("ServeListener did not return after its context ended")
	}
}

// waitClients waits until hub has n clients.
func waitClients(t testing.TB, hub *api.Hub, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); hub.Stats().Clients != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d stream clients, want %d", hub.Stats().Clients, n)
		}
	}
}

// hotReadings are two readings of the test pipeline's series from source "probe", 30 °C
// apart from the rule's hold-off; cool is one reading back under the limit. Injected into
// env-hot (the threshold rule), the first raises an alert and the second clears it. The probe
// source keeps its own state in the rule, away from the simulated driver's readings.
func hotReadings(now int64) []byte {
	b := abi.Append(nil, abi.KindReading, now, "probe", "environment", []abi.Field{{Name: "temperature_c", Value: 40}}, nil)
	return abi.Append(b, abi.KindReading, now+int64(300*time.Millisecond), "probe", "environment", []abi.Field{{Name: "temperature_c", Value: 40}}, nil)
}

func coolReading(now int64) []byte {
	return abi.Append(nil, abi.KindReading, now, "probe", "environment", []abi.Field{{Name: "temperature_c", Value: 20}}, nil)
}

// runPipeline runs the test pipeline (../testdata/pipeline.yaml) with its records going to a
// new hub, serves the API with it, and returns the runtime, the hub and the API's base URL.
func runPipeline(t testing.TB) (*runtime.Runtime, *api.Hub, string) {
	perchtest.Built(t, "threshold")
	hub := api.NewHub(api.HubOptions{})
	rt := newRuntimeOpts(t, runtime.Options{OnRecords: hub.Publish})
	base := serveHub(t, rt, "", hub)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for deadline := time.Now().Add(time.Minute); !rt.Metrics().Ready; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pipeline did not start in a minute")
		}
	}
	return rt, hub, base
}

// TestIntegrationStreamAlert: an alert raised by the real threshold rule in the running test
// pipeline, from readings injected into it, reaches a stream client; so do the simulated
// driver's readings and the modules' health, and /metrics counts the stream.
func TestIntegrationStreamAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a pipeline")
	}
	rt, _, base := runPipeline(t)
	s := openStream(t, base, "/api/v1/stream?kinds=alert,reading,health&max_rate=5", "")

	ev := s.next(t, time.Minute, "health")
	var h struct {
		Modules []struct{ Name, Health string }
	}
	if err := json.Unmarshal([]byte(ev.data), &h); err != nil || len(h.Modules) != 3 || h.Modules[2].Name != "env-hot" || h.Modules[2].Health != "ok" {
		t.Errorf("health %s: %v", ev.data, err)
	}
	// The simulated driver's readings (the rate cap itself is TestStreamFilter's).
	for range 3 {
		ev = s.next(t, time.Minute, "reading")
		var r struct {
			Module, Series string
			Fields         map[string]float64
		}
		if err := json.Unmarshal([]byte(ev.data), &r); err != nil || r.Module != "env" || r.Series != "environment" || r.Fields["temperature_c"] == 0 {
			t.Fatalf("reading %s: %v", ev.data, err)
		}
	}

	now := time.Now().UnixNano()
	if err := rt.Inject(t.Context(), "env-hot", hotReadings(now)); err != nil {
		t.Fatal(err)
	}
	ev = s.next(t, time.Minute, "alert")
	var a struct {
		Module, Series string
		Time           string
		Fields         map[string]float64
		Tags           map[string]string
	}
	if err := json.Unmarshal([]byte(ev.data), &a); err != nil {
		t.Fatal(err)
	}
	if a.Module != "env-hot" || a.Series != "environment" || a.Tags["state"] != "raised" || a.Tags["source"] != "probe" ||
		a.Tags["message"] != "too hot" || a.Fields["value"] != 40 || a.Fields["threshold"] != 30 {
		t.Errorf("alert %s", ev.data)
	}
	if want := time.Unix(0, now+int64(300*time.Millisecond)).UTC().Format(time.RFC3339Nano); a.Time != want {
		t.Errorf("alert time %s, want the second reading's, %s", a.Time, want)
	}
	if err := rt.Inject(t.Context(), "env-hot", coolReading(now+int64(time.Second))); err != nil {
		t.Fatal(err)
	}
	ev = s.next(t, time.Minute, "alert")
	if !strings.Contains(ev.data, `"state":"cleared"`) {
		t.Errorf("second alert %s, want cleared", ev.data)
	}

	// Health is sent on connect and on change only: the modules stayed ok through at least one
	// check (every 2 s) while their counters moved.
	time.Sleep(2500 * time.Millisecond)
	if n := s.count("health"); n != 1 {
		t.Errorf("%d health events, want 1: nothing changed", n)
	}

	// /metrics counts the stream's clients and events: at least the 3 readings and 2 alerts.
	code, text := get(t, base, "/metrics", "")
	samples, types, err := parseProm(text)
	if code != 200 || err != nil {
		t.Fatalf("/metrics: %d %v\n%s", code, err, text)
	}
	got := map[string]float64{}
	for _, s := range samples {
		got[s.name] = s.value
	}
	if types["perch_stream_clients"] != "gauge" || got["perch_stream_clients"] != 1 ||
		types["perch_stream_events_total"] != "counter" || got["perch_stream_events_total"] < 5 ||
		types["perch_stream_dropped_events_total"] != "counter" {
		t.Errorf("stream metrics: types %v, values %v", types, got)
	}
}

// BenchmarkStreamAlertLatency measures the time from injecting readings into the running test
// pipeline's threshold rule to the alert they cause arriving at a stream client over HTTP
// (the rule's Wasm call, recording, the hub, the SSE write and the client's read), and reports
// its p50 and p99. Each iteration alternates raising and clearing the alert.
func BenchmarkStreamAlertLatency(b *testing.B) {
	rt, _, base := runPipeline(b)
	s := openStream(b, base, "/api/v1/stream?kinds=alert", "")
	var lat []time.Duration
	now := time.Now().UnixNano()
	i := 0
	for b.Loop() {
		now += int64(time.Second)
		batch, want := coolReading(now), `"state":"cleared"`
		if i%2 == 0 {
			batch, want = hotReadings(now), `"state":"raised"`
		}
		i++
		start := time.Now()
		if err := rt.Inject(b.Context(), "env-hot", batch); err != nil {
			b.Fatal(err)
		}
		ev := s.next(b, time.Minute, "alert")
		if !strings.Contains(ev.data, want) {
			b.Fatalf("alert %s, want %s", ev.data, want)
		}
		lat = append(lat, ev.at.Sub(start))
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
