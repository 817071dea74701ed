package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/api"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
)

// sample is one parsed sample line: name{labels} value.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseProm parses the Prometheus text format 0.0.4: every line is a HELP or TYPE comment or a
// sample. It returns the samples and the TYPE of each family.
func parseProm(text string) ([]sample, map[string]string, error) {
	var out []sample
	types := map[string]string{}
	helps := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if strings.HasPrefix(line, "# ") {
			f := strings.SplitN(line[2:], " ", 3)
			if len(f) < 3 || (f[0] != "HELP" && f[0] != "TYPE") {
				return nil, nil, fmt.Errorf("line %d: bad comment %q", ln, line)
			}
			if f[0] == "TYPE" {
				switch f[2] {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, nil, fmt.Errorf("line %d: bad type %q", ln, f[2])
				}
				if _, dup := types[f[1]]; dup {
					return nil, nil, fmt.Errorf("line %d: second TYPE for %s", ln, f[1])
				}
				types[f[1]] = f[2]
			} else {
				helps[f[1]] = true
			}
			continue
		}
		s := sample{labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			return nil, nil, fmt.Errorf("line %d: bad sample %q", ln, line)
		}
		s.name, line = line[:i], line[i:]
		if line[0] == '{' {
			line = line[1:]
			for line[0] != '}' {
				eq := strings.Index(line, `="`)
				if eq <= 0 {
					return nil, nil, fmt.Errorf("line %d: bad label in %q", ln, sc.Text())
				}
				name := line[:eq]
				line = line[eq+2:]
				var v strings.Builder
				for {
					if line == "" {
						return nil, nil, fmt.Errorf("line %d: unterminated label value", ln)
					}
					c := line[0]
					line = line[1:]
					if c == '"' {
						break
					}
					if c == '\\' && line != "" {
						c, line = line[0], line[1:]
						if c == 'n' {
							c = '\n'
						}
					}
					v.WriteByte(c)
				}
				s.labels[name] = v.String()
				if line != "" && line[0] == ',' {
					line = line[1:]
				}
				if line == "" {
					return nil, nil, fmt.Errorf("line %d: unterminated labels", ln)
				}
			}
			line = line[1:]
		}
		if line == "" || line[0] != ' ' {
			return nil, nil, fmt.Errorf("line %d: no value in %q", ln, sc.Text())
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %v", ln, err)
		}
		s.value = v
		family := s.name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(s.name, suf); ok && types[base] == "histogram" {
				family = base
			}
		}
		if types[family] == "" || !helps[family] {
			return nil, nil, fmt.Errorf("line %d: sample %s before its HELP and TYPE", ln, s.name)
		}
		out = append(out, s)
	}
	return out, types, sc.Err()
}

func TestParseProm(t *testing.T) {
	for _, bad := range []string{"x", "# FOO x y", "# TYPE a counter\n# HELP a h\na{b=\"c} 1", "a 1", "# TYPE a counter\n# HELP a h\na one"} {
		if _, _, err := parseProm(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	s, _, err := parseProm("# HELP a h\n# TYPE a gauge\na{b=\"q\\\"\\n\",c=\"\"} 1.5\n")
	if err != nil || len(s) != 1 || s[0].labels["b"] != "q\"\n" || s[0].value != 1.5 {
		t.Errorf("%v %+v", err, s)
	}
}

// get fetches path from base with token (none if empty) and returns the status and body.
func get(t *testing.T, base, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
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
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// serve starts the API for rt on 127.0.0.1:0 and returns its base URL.
func serve(t testing.TB, rt *runtime.Runtime, token string) string {
	return serveHub(t, rt, token, nil)
}

// serveHub is serve with the live stream of hub.
func serveHub(t testing.TB, rt *runtime.Runtime, token string, hub *api.Hub) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.ServeListener(ctx, ln, token, rt, hub) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

func newRuntime(t testing.TB) *runtime.Runtime {
	t.Helper()
	return newRuntimeOpts(t, runtime.Options{})
}

// newRuntimeOpts loads ../testdata/pipeline.yaml with its recorder and cache in a temporary
// folder.
func newRuntimeOpts(t testing.TB, opts runtime.Options) *runtime.Runtime {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "testdata", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	rt, err := runtime.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func TestAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a pipeline")
	}
	rt := newRuntime(t)
	base := serve(t, rt, "")
	if code, _ := get(t, base, "/healthz", ""); code != 200 {
		t.Errorf("/healthz before Run: %d", code)
	}
	if code, _ := get(t, base, "/readyz", ""); code != 503 {
		t.Errorf("/readyz before Run: %d, want 503", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- rt.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := get(t, base, "/readyz", "")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d after 5 s", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := get(t, base, "/healthz", ""); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	// Let the driver poll (every 50 ms) and the window (1 s) emit a summary.
	time.Sleep(1500 * time.Millisecond)

	code, text := get(t, base, "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	samples, types, err := parseProm(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	for fam, typ := range map[string]string{
		"perch_up": "gauge", "perch_module_records_in_total": "counter", "perch_module_records_out_total": "counter",
		"perch_module_faults_total": "counter", "perch_module_restarts_total": "counter",
		"perch_guest_call_duration_seconds": "histogram", "perch_queue_depth": "gauge",
		"perch_outbox_backlog_rows": "gauge", "perch_bytes_ingested_total": "counter",
		"perch_bytes_published_total": "counter",
	} {
		if types[fam] != typ {
			t.Errorf("family %s: type %q, want %q", fam, types[fam], typ)
		}
	}
	val := func(name string, labels ...string) (float64, bool) {
	next:
		for _, s := range samples {
			if s.name != name {
				continue
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if s.labels[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return s.value, true
		}
		return 0, false
	}
	check := func(what string, ok bool) {
		t.Helper()
		if !ok {
			t.Error(what)
		}
	}
	v, ok := val("perch_up")
	check("perch_up is 1", ok && v == 1)
	v, ok = val("perch_module_records_out_total", "module", "env")
	check(fmt.Sprintf("records out of env > 0: %v", v), ok && v > 0)
	for _, m := range []string{"env-window", "env-hot"} {
		v, ok = val("perch_module_records_in_total", "module", m)
		check(fmt.Sprintf("records in of %s > 0: %v", m, v), ok && v > 0)
		v, ok = val("perch_queue_depth", "module", m)
		check(fmt.Sprintf("queue depth of %s in [0, 8]: %v", m, v), ok && v >= 0 && v <= 8)
	}
	v, ok = val("perch_module_records_in_total", "module", "env")
	check("records in of the driver is 0", ok && v == 0)
	v, ok = val("perch_module_faults_total", "module", "env", "reason", "trap")
	check("no trap faults", ok && v == 0)
	v, ok = val("perch_module_restarts_total", "module", "env-hot")
	check("no restarts", ok && v == 0)
	v, ok = val("perch_outbox_backlog_rows", "priority", "alerts")
	check("an alerts backlog sample", ok && v >= 0)
	v, ok = val("perch_bytes_ingested_total")
	check("bytes ingested", ok && v >= 0)

	// Histograms: buckets cumulative with le increasing, +Inf equal to _count, sum sane.
	const h = "perch_guest_call_duration_seconds"
	for _, m := range []string{"env", "env-window", "env-hot"} {
		prevLE, prev := -1.0, 0.0
		var inf float64
		var n int
		for _, s := range samples {
			if s.name != h+"_bucket" || s.labels["module"] != m {
				continue
			}
			n++
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil || le <= prevLE || s.value < prev {
				t.Errorf("%s %s: bucket le=%s value %v after le=%v value %v", h, m, s.labels["le"], s.value, prevLE, prev)
			}
			prevLE, prev = le, s.value
			if s.labels["le"] == "+Inf" {
				inf = s.value
			}
		}
		count, ok1 := val(h+"_count", "module", m)
		sum, ok2 := val(h+"_sum", "module", m)
		if n != len(runtime.CallBuckets)+1 || !ok1 || !ok2 || inf != count || count <= 0 || sum <= 0 || sum/count > 1 {
			t.Errorf("%s %s: %d buckets, +Inf %v, count %v, sum %v", h, m, n, inf, count, sum)
		}
	}

	code, body := get(t, base, "/api/v1/status", "")
	var st struct {
		Site    string `json:"site"`
		Ready   bool   `json:"ready"`
		Modules []struct {
			Name   string `json:"name"`
			Health string `json:"health"`
		} `json:"modules"`
		Outbox *struct{} `json:"outbox"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.Site != "test" || !st.Ready ||
		len(st.Modules) != 3 || st.Modules[0].Health != "ok" || st.Outbox == nil {
		t.Errorf("/api/v1/status: %d %v\n%s", code, err, body)
	}
	code, body = get(t, base, "/api/v1/modules", "")
	var mods struct {
		Modules []runtime.ModuleMetrics `json:"modules"`
	}
	if err := json.Unmarshal([]byte(body), &mods); code != 200 || err != nil || len(mods.Modules) != 3 || mods.Modules[0].Calls.Count == 0 {
		t.Errorf("/api/v1/modules: %d %v\n%s", code, err, body)
	}
}

func TestToken(t *testing.T) {
	rt := newRuntime(t)
	base := serve(t, rt, "s3cret")
	for _, path := range []string{"/healthz", "/metrics", "/api/v1/status"} {
		if code, _ := get(t, base, path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", path, code)
		}
		if code, _ := get(t, base, path, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", path, code)
		}
		if code, _ := get(t, base, path, "s3cret"); code != 200 {
			t.Errorf("%s with the token: %d, want 200", path, code)
		}
	}
}

func TestServeRefusesOpenListen(t *testing.T) {
	err := api.Serve(context.Background(), config.API{Listen: "0.0.0.0:0"}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "requires api.token") {
		t.Errorf("Serve on 0.0.0.0 without a token: %v", err)
	}
}

// TestAlerts records an alert and reads it back from /api/v1/alerts.
func TestAlerts(t *testing.T) {
	rt := newRuntime(t)
	base := serve(t, rt, "")
	rec := abi.Append(nil, abi.KindAlert, time.Now().UnixNano(), "env-hot", "environment",
		[]abi.Field{{Name: "value", Value: 31.5}}, []abi.Tag{{Key: "state", Value: "raised"}, {Key: "severity", Value: "critical"}, {Key: "message", Value: "too hot"}})
	if err := rt.Store().Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := rt.Store().Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, base, "/api/v1/alerts?limit=5", "")
	var doc struct {
		Alerts []struct {
			Time, Severity, Source, Message string
			Fields                          map[string]float64
			Tags                            map[string]string
		}
	}
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil || len(doc.Alerts) == 0 {
		t.Fatalf("/api/v1/alerts: %d %v\n%s", code, err, body)
	}
	a := doc.Alerts[0]
	if a.Source != "env-hot" || a.Severity != "critical" || a.Message != "too hot" || a.Fields["value"] != 31.5 || a.Tags["state"] != "raised" {
		t.Errorf("newest alert: %+v", a)
	}
	if _, err := time.Parse(time.RFC3339, a.Time); err != nil {
		t.Errorf("time %q: %v", a.Time, err)
	}
	if code, _ := get(t, base, "/api/v1/alerts?limit=0", ""); code != http.StatusBadRequest {
		t.Errorf("limit=0: %d, want 400", code)
	}
}
