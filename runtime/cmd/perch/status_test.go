package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/store"
)

// TestIntegrationStatus runs a pipeline in this process and reads `perch status` from its
// recorder while it runs (read-only, beside the writer) and after it stopped, as text and JSON.
func TestIntegrationStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs Wasm modules")
	}
	t.Parallel()
	dir := t.TempDir()
	cfg := pipeline{poll: "20ms", window: "200ms", spikeAt: "100ms", holdOff: "100ms"}.write(t, dir)
	db := filepath.Join(dir, "perch.db")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	var stderr syncBuffer
	go func() { done <- run(ctx, []string{"run", "--config", cfg, "--quiet"}, &syncBuffer{}, &stderr) }()

	// While it runs: wait for the alert of the spike.
	var st Status
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no running status with an alert in a minute: %+v\n%s", st, stderr.String())
		}
		out, _, err := call(t.Context(), "status", "--db", db, "--json")
		if err != nil {
			continue // the recorder is not there yet
		}
		st = Status{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if st.Runtime.State == "running" && len(st.Alerts) > 0 && len(st.Modules) == 3 {
			break
		}
	}
	if st.Runtime.StartedAt == nil || st.Runtime.StoppedAt != nil || st.Runtime.UptimeS < 0 {
		t.Errorf("running: runtime %+v", st.Runtime)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}

	// After it stopped.
	out, _, err := call(t.Context(), "status", "--db", db, "--json")
	if err != nil {
		t.Fatal(err)
	}
	st = Status{}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	r := st.Runtime
	if r.State != "stopped" || r.StartedAt == nil || r.StoppedAt == nil || r.StoppedAt.Before(*r.StartedAt) ||
		r.UptimeS != r.StoppedAt.Sub(*r.StartedAt).Seconds() || r.Site != "test" || r.Device != "sim-01" {
		t.Errorf("stopped: runtime %+v", r)
	}
	if v := st.Versions; v.Runtime != Version || v.CLI != Version || v.Schema < 2 {
		t.Errorf("versions %+v, want runtime and cli %s and a schema >= 2", v, Version)
	}
	for i, m := range st.Modules {
		want := []string{"env", "env-hot", "env-window"}[i]
		if m.Module != want || m.Health != "ok" || m.LastStarted == "" {
			t.Errorf("module %d: %+v, want %s ok", i, m, want)
		}
	}
	if len(st.Alerts) == 0 || len(st.Alerts) > statusAlerts {
		t.Fatalf("%d alerts", len(st.Alerts))
	}
	if a := st.Alerts[len(st.Alerts)-1]; a.Source != "env-hot" || a.State != "raised" || a.Message != "too hot" ||
		a.Severity != "warning" || a.Series != "environment" {
		t.Errorf("first alert %+v", a)
	}
	for i := 1; i < len(st.Alerts); i++ {
		if st.Alerts[i].ID >= st.Alerts[i-1].ID {
			t.Errorf("alerts not newest first: %d after %d", st.Alerts[i].ID, st.Alerts[i-1].ID)
		}
	}
	if len(st.Outbox.Backlog) != 4 || st.Outbox.Backlog[0].Priority != "alerts" || st.Outbox.Rows != 0 {
		t.Errorf("outbox %+v (no uplink: nothing queued)", st.Outbox)
	}
	if st.Bytes.Ingested <= 0 || st.Bytes.Published != 0 || st.Bytes.Dropped != 0 {
		t.Errorf("bytes %+v, want some ingested, none published or dropped", st.Bytes)
	}

	// The text form says the same.
	text, _, err := call(t.Context(), "status", "--db", db)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"perch status of " + db + "\n",
		"runtime      stopped at " + r.StoppedAt.Format(time.RFC3339) + ", after running ",
		"site/device  test/sim-01\n",
		"versions     perch " + Version + " (this binary " + Version + "), schema ",
		"bytes        ingested ",
		"\nmodules\n  MODULE ", "\n  env-hot ", " ok ",
		"\nalerts (latest 10, newest first)\n", " warning ", " raised ", " env-hot ", " too hot\n",
		"\noutbox backlog: 0 rows, 0 bytes\n", "\n  readings ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(l, " ") {
			t.Errorf("trailing blanks: %q", l)
		}
	}
}

func TestStatusErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	_, _, err := call(t.Context(), "status", "--db", missing)
	if err == nil || !strings.Contains(err.Error(), "perch status: ") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("status on a missing file: %v, want a perch status error wrapping fs.ErrNotExist", err)
	}
	if _, _, err := call(t.Context(), "status", "--db", missing, "extra"); err == nil ||
		!strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("status with an extra argument: %v", err)
	}
	if _, _, err := call(t.Context(), "status", "--frob"); err == nil {
		t.Error("status with a bad flag: no error")
	}
}

// TestStatusSources: the sources section comes from the source.* events.
func TestStatusSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "perch.db")
	st, err := store.Open(t.Context(), store.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano()
	for i, e := range []store.Event{
		{Kind: "runtime.started"},
		{Kind: "source.connected", Module: "meters"},
		{Kind: "source.bad_message", Module: "meters", Message: "bad message on m/1: not a number"},
		{Kind: "source.disconnected", Module: "meters", Message: "EOF"},
		{Kind: "source.connected", Module: "site"},
	} {
		e.TimeNS = base + int64(i)*int64(time.Second)
		if err := st.Event(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	out, _, err := call(t.Context(), "status", "--db", path, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var s Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	want := []SourceStatus{
		{Source: "meters", State: "disconnected", LastConnected: "2026-11-25T12:00:01Z",
			LastBadMessage: "2026-11-25T12:00:02Z bad message on m/1: not a number"},
		{Source: "site", State: "connected", LastConnected: "2026-11-25T12:00:04Z"},
	}
	if fmt.Sprint(s.Sources) != fmt.Sprint(want) {
		t.Errorf("sources %+v, want %+v", s.Sources, want)
	}
	text, _, err := call(t.Context(), "status", "--db", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "\nsources\n  SOURCE  STATE         LAST CONNECTED        LAST BAD MESSAGE\n"+
		"  meters  disconnected  2026-11-25T12:00:01Z  2026-11-25T12:00:02Z bad message on m/1: not a number\n") {
		t.Errorf("text:\n%s", text)
	}
}
