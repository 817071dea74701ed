package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

// eventOutbox is an empty outbox that keeps the events recorded.
type eventOutbox struct {
	nopOutbox
	mu     sync.Mutex
	events []store.Event
}

func (o *eventOutbox) Event(_ context.Context, e store.Event) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
	return nil
}

// injected is one call of Options.Inject, its records decoded.
type injected struct {
	module string
	recs   []rec
}

type rec struct {
	kind           abi.Kind
	timeNS         int64
	source, series string
	tags           map[string]string
}

func decodeRecords(t *testing.T, batch []byte) []rec {
	t.Helper()
	var out []rec
	it := abi.Iter{Buf: batch}
	for it.Next() {
		r := &it.Rec
		x := rec{kind: r.Kind, timeNS: r.TimeNS, source: string(r.Source), series: string(r.Series), tags: map[string]string{}}
		r.Tags(func(k, v []byte) { x.tags[string(k)] = string(v) })
		out = append(out, x)
	}
	if err := it.Err(); err != nil {
		t.Errorf("decode: %v", err)
	}
	return out
}

// TestActuate drives cmd/actuate through the fake client: a command for a module of the
// allow-list is injected as one alert record (source uplink, series command, state raised for on
// and cleared for off, the message and request id as tags) and answered ok; payload errors, a
// module not in the allow-list and an Inject error are refused with their reason, and nothing is
// injected; every command is recorded as an uplink.command event.
func TestActuate(t *testing.T) {
	var calls []injected
	injectErr := errors.New("runtime: inject into pump: runtime: the module no longer takes input")
	inject := func(_ context.Context, module string, batch []byte) error {
		calls = append(calls, injected{module, decodeRecords(t, batch)})
		if module == "pump" {
			return injectErr
		}
		return nil
	}
	out := &eventOutbox{}
	cfg := &config.Config{Site: "lab", Device: "box1", Uplink: config.Uplink{Broker: "tcp://127.0.0.1:1",
		Commands: config.UplinkCommands{Actuate: []string{"fan", "pump"}}}}
	u, err := newUplink(cfg, out, Options{Inject: inject})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeClient{}
	for _, c := range []struct {
		payload string
		ok      bool
		has     string // in the reply
	}{
		{`{"request_id":"r1","module":"fan","state":"on","message":"cool down"}`, true, `"request_id":"r1"`},
		{`{"request_id":2,"module":"fan","state":"off"}`, true, `"state":"off"`},
		{`{"request_id":"r3","module":"heater","state":"on"}`, false, `module \"heater\" may not be actuated from upstream: it is not listed in uplink.commands.actuate`},
		{`{"request_id":"r4","module":"pump","state":"on"}`, false, `no longer takes input`},
		{``, false, `bad payload: want a JSON object`},
		{`not json`, false, `bad payload: want a JSON object`},
		{`[1]`, false, `bad payload: want a JSON object`},
		{`{"module":"fan","state":"on","force":true}`, false, `unknown field \"force\"`},
		{`{"module":"fan","state":"on"} {}`, false, `bad payload: more than one JSON value`},
		{`{"state":"on"}`, false, `bad payload: module is required`},
		{`{"module":"fan"}`, false, `bad payload: state: want \"on\" or \"off\", got \"\"`},
		{`{"module":"fan","state":"raised"}`, false, `got \"raised\"`},
		{`{"module":"fan","state":"on","request_id":{"a":1}}`, false, `request_id: want a string or a number`},
		{`{"module":"fan","state":"on","message":"` + strings.Repeat("x", 300) + `"}`, false, `message: at most 256 bytes`},
	} {
		f.pubs = nil
		u.command(f, fakeMessage{topic: testPrefix + "cmd/actuate", payload: []byte(c.payload)})
		if len(f.pubs) != 1 {
			t.Fatalf("%s: %d replies", c.payload, len(f.pubs))
		}
		p := f.pubs[0]
		var v struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(p.payload, &v); err != nil {
			t.Fatal(err)
		}
		if p.topic != testPrefix+"cmd/actuate/reply" || p.retained || v.OK != c.ok || !strings.Contains(string(p.payload), c.has) ||
			(!c.ok && v.Error == "") {
			t.Errorf("%s: reply %s %s", c.payload, p.topic, p.payload)
		}
	}

	// Injected: fan on, fan off, and the pump whose Inject failed.
	if len(calls) != 3 || calls[0].module != "fan" || calls[1].module != "fan" || calls[2].module != "pump" {
		t.Fatalf("injected %+v", calls)
	}
	for i, want := range []struct{ state, message, id string }{
		{"raised", "cool down", "r1"}, {"cleared", "command from upstream: off", "2"},
	} {
		recs := calls[i].recs
		if len(recs) != 1 {
			t.Fatalf("call %d: %d records", i, len(recs))
		}
		r := recs[0]
		if r.kind != abi.KindAlert || r.source != CommandSource || r.series != CommandSeries || r.timeNS == 0 ||
			r.tags["state"] != want.state || r.tags["message"] != want.message || r.tags["request_id"] != want.id || len(r.tags) != 3 {
			t.Errorf("call %d: record %+v", i, r)
		}
	}

	// Audited: one event per command, done or refused.
	if len(out.events) != 14 {
		t.Fatalf("%d events, want 14", len(out.events))
	}
	for i, e := range out.events {
		if e.Kind != EventCommand || e.Fields["command"] != "actuate" || e.Fields["ok"] != (i < 2) {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	if e := out.events[0]; e.Module != "fan" || e.Fields["state"] != "on" || e.Fields["request_id"] != "r1" || e.Fields["error"] != nil {
		t.Errorf("event of the first command: %+v", e)
	}
	if e := out.events[2]; e.Module != "heater" || e.Fields["request_id"] != "r3" ||
		!strings.Contains(e.Fields["error"].(string), "not listed in uplink.commands.actuate") || !strings.Contains(e.Message, "refused") {
		t.Errorf("event of the refused command: %+v", e)
	}
}

// TestActuateDenyByDefault: without uplink.commands, or without an Inject hook, nothing can be
// actuated.
func TestActuateDenyByDefault(t *testing.T) {
	called := false
	inject := func(context.Context, string, []byte) error { called = true; return nil }
	u := newTestUplink(t, Options{Inject: inject})
	f := &fakeClient{}
	u.command(f, fakeMessage{topic: testPrefix + "cmd/actuate", payload: []byte(`{"module":"fan","state":"on"}`)})
	if called || len(f.pubs) != 1 || !strings.Contains(string(f.pubs[0].payload), `"ok":false`) ||
		!strings.Contains(string(f.pubs[0].payload), "not listed in uplink.commands.actuate") {
		t.Errorf("no allow-list: injected %v, replies %v", called, f.pubs)
	}

	u, err := newUplink(&config.Config{Site: "lab", Device: "box1", Uplink: config.Uplink{Broker: "tcp://127.0.0.1:1",
		Commands: config.UplinkCommands{Actuate: []string{"fan"}}}}, nopOutbox{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.pubs = nil
	u.command(f, fakeMessage{topic: testPrefix + "cmd/actuate", payload: []byte(`{"module":"fan","state":"on"}`)})
	if len(f.pubs) != 1 || !strings.Contains(string(f.pubs[0].payload), "this runtime takes no actuate commands") {
		t.Errorf("no Inject: replies %v", f.pubs)
	}
}
