package api

import (
	"encoding/json"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

func reading(series string, ts int64, v float64) []byte {
	return abi.Append(nil, abi.KindReading, ts, "env", series, []abi.Field{{Name: "temperature_c", Value: v}}, nil)
}

func alert(series, state string) []byte {
	return abi.Append(nil, abi.KindAlert, time.Now().UnixNano(), "env-hot", series,
		[]abi.Field{{Name: "value", Value: 31}, {Name: "threshold", Value: 30}}, []abi.Tag{{Key: "state", Value: state}})
}

func TestStreamParseFilter(t *testing.T) {
	for _, tc := range []struct {
		query   string
		kinds   []abi.Kind // wanted record kinds
		health  bool
		series  []string
		gapNS   int64
		wantErr string
	}{
		{query: "", kinds: []abi.Kind{abi.KindReading, abi.KindScore, abi.KindAlert}, health: true, gapNS: int64(time.Second / 10)},
		{query: "kinds=alert", kinds: []abi.Kind{abi.KindAlert}, gapNS: int64(time.Second / 10)},
		{query: "kinds=summary,+event,health&series=a,b,&max_rate=0", kinds: []abi.Kind{abi.KindSummary, abi.KindEvent}, health: true, series: []string{"a", "b"}},
		{query: "max_rate=4", kinds: []abi.Kind{abi.KindReading, abi.KindScore, abi.KindAlert}, health: true, gapNS: int64(250 * time.Millisecond)},
		{query: "kinds=alerts", wantErr: `kinds: unknown kind "alerts"`},
		{query: "kinds=", kinds: []abi.Kind{abi.KindReading, abi.KindScore, abi.KindAlert}, health: true, gapNS: int64(time.Second / 10)},
		{query: "kinds=alert,", wantErr: `kinds: unknown kind ""`},
		{query: "max_rate=fast", wantErr: `max_rate: "fast" is not a number`},
		{query: "max_rate=-1", wantErr: "max_rate"},
		{query: "max_rate=NaN", wantErr: "max_rate"},
		{query: "max_rate=1001", wantErr: "max_rate"},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parseFilter(q)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.query, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		for k := abi.KindReading; k <= abi.KindEvent; k++ {
			want := false
			for _, w := range tc.kinds {
				want = want || w == k
			}
			if f.wantsKind(k) != want {
				t.Errorf("%q: wants %s = %v", tc.query, k, !want)
			}
		}
		if (f.kinds&healthBit != 0) != tc.health {
			t.Errorf("%q: health %v", tc.query, !tc.health)
		}
		if len(f.series) != len(tc.series) || (tc.series == nil) != (f.series == nil) {
			t.Errorf("%q: series %v, want %v", tc.query, f.series, tc.series)
		}
		for _, s := range tc.series {
			if !f.series[s] {
				t.Errorf("%q: series %v lacks %q", tc.query, f.series, s)
			}
		}
		if f.gapNS != tc.gapNS {
			t.Errorf("%q: gap %d ns, want %d", tc.query, f.gapNS, tc.gapNS)
		}
	}
}

// TestStreamHubDrops: a client that does not take its events loses what does not fit in its
// buffer, counted; Publish does not wait for it, and other clients get everything.
func TestStreamHubDrops(t *testing.T) {
	h := NewHub(HubOptions{Buffer: 4})
	f, _ := parseFilter(url.Values{"kinds": {"alert"}})
	slow := h.subscribe(f)
	var batch []byte
	for range 10 {
		batch = append(batch, alert("environment", "raised")...)
	}
	h.Publish("env-hot", batch)
	if n, d := len(slow.ch), slow.dropped.Load(); n != 4 || d != 6 {
		t.Errorf("slow client: %d queued, %d dropped; want 4 and 6", n, d)
	}
	// A client that keeps up gets every event, whatever the other one does.
	fast := h.subscribe(f)
	one := alert("environment", "raised")
	for i := range 100 {
		h.Publish("env-hot", one)
		select {
		case <-fast.ch:
		case <-time.After(time.Minute):
			t.Fatalf("the fast client did not get event %d", i)
		}
	}
	if d := fast.dropped.Load(); d != 0 {
		t.Errorf("the fast client lost %d events", d)
	}
	s := h.Stats()
	if s.Clients != 2 || s.Dropped != 106 || s.Sent != 104 {
		t.Errorf("stats %+v, want 2 clients, 106 dropped (6 + 100 for the slow client), 104 sent", s)
	}
	h.unsubscribe(slow)
	h.unsubscribe(fast)
	h.unsubscribe(fast) // twice is harmless
	if s := h.Stats(); s.Clients != 0 {
		t.Errorf("%d clients after unsubscribing both", s.Clients)
	}
	h.Publish("env-hot", batch) // no clients: nothing counted
	if s := h.Stats(); s.Sent != 104 || s.Dropped != 106 {
		t.Errorf("publishing to nobody counted: %+v", s)
	}
}

// TestStreamFilter: kinds, series and the readings' rate cap per module and series.
func TestStreamFilter(t *testing.T) {
	h := NewHub(HubOptions{Buffer: 1000})
	capped := h.subscribe(filter{kinds: 1<<abi.KindReading | 1<<abi.KindAlert, gapNS: int64(time.Hour)})
	uncapped := h.subscribe(filter{kinds: 1 << abi.KindReading})
	only := h.subscribe(filter{kinds: 1<<abi.KindReading | 1<<abi.KindAlert, series: map[string]bool{"b": true}})
	now := time.Now().UnixNano()
	var batch []byte
	for i := range 50 {
		batch = append(batch, reading("a", now+int64(i), 20)...)
		batch = append(batch, reading("b", now+int64(i), 20)...)
	}
	batch = append(batch, alert("a", "raised")...)
	h.Publish("env", batch)
	h.Publish("env2", reading("a", now, 20)) // another module's series "a" is capped on its own
	count := func(c *client) map[string]int {
		got := map[string]int{}
		for len(c.ch) > 0 {
			ev := <-c.ch
			var rec struct{ Module, Series string }
			if err := json.Unmarshal(ev.data, &rec); err != nil {
				t.Fatalf("%s: %v", ev.data, err)
			}
			got[ev.name+" "+rec.Module+"/"+rec.Series]++
		}
		return got
	}
	for _, tc := range []struct {
		c    *client
		want map[string]int
	}{
		{capped, map[string]int{"reading env/a": 1, "reading env/b": 1, "alert env/a": 1, "reading env2/a": 1}},
		{uncapped, map[string]int{"reading env/a": 50, "reading env/b": 50, "reading env2/a": 1}},
		{only, map[string]int{"reading env/b": 50}}, // no cap: gapNS 0
	} {
		got := count(tc.c)
		if len(got) != len(tc.want) {
			t.Errorf("got %v, want %v", got, tc.want)
			continue
		}
		for k, n := range tc.want {
			if got[k] != n {
				t.Errorf("got %v, want %v", got, tc.want)
				break
			}
		}
	}
}

// TestStreamRecordJSON: every kind of value a record may hold encodes as valid JSON that
// decodes back to it.
func TestStreamRecordJSON(t *testing.T) {
	ts := time.Date(2026, 12, 7, 1, 2, 3, 456789000, time.UTC).UnixNano()
	rec := abi.Append(nil, abi.KindScore, ts, "model\"1", "line\nbreak\t\x01",
		[]abi.Field{{Name: "score", Value: 0.25}, {Name: "nan", Value: math.NaN()}, {Name: "inf", Value: math.Inf(-1)}, {Name: "big", Value: 1e300}},
		[]abi.Tag{{Key: "sep", Value: "a\u2028b\u2029c"}, {Key: "bad", Value: "x\xffy"}, {Key: "uni", Value: "°C ✓"}, {Key: `back\slash`, Value: "<&>"}})
	it := abi.Iter{Buf: rec}
	if !it.Next() {
		t.Fatal(it.Err())
	}
	b := appendRecordJSON(nil, "mod", &it.Rec)
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	if strings.ContainsAny(string(b), "\n\r\u2028\u2029") {
		t.Errorf("a raw line break in %s", b)
	}
	var got struct {
		Kind, Module, Time, Source, Series string
		TimeMS                             float64 `json:"time_ms"`
		Fields                             map[string]*float64
		Tags                               map[string]string
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Kind != "score" || got.Module != "mod" || got.Source != "model\"1" || got.Series != "line\nbreak\t\x01" ||
		got.Time != "2026-12-07T01:02:03.456789Z" || got.TimeMS != float64(ts/1000)/1000 {
		t.Errorf("decoded %+v from %s", got, b)
	}
	if got.Fields["score"] == nil || *got.Fields["score"] != 0.25 || got.Fields["nan"] != nil || got.Fields["inf"] != nil ||
		got.Fields["big"] == nil || *got.Fields["big"] != 1e300 {
		t.Errorf("fields %v from %s", got.Fields, b)
	}
	want := map[string]string{"sep": "a\u2028b\u2029c", "bad": "x\ufffdy", "uni": "°C ✓", `back\slash`: "<&>"}
	for k, v := range want {
		if got.Tags[k] != v {
			t.Errorf("tag %q = %q, want %q", k, got.Tags[k], v)
		}
	}
}

// FuzzStreamJSON: any strings and values in a record give valid JSON that decodes back to them
// (bytes that are not UTF-8 as U+FFFD).
func FuzzStreamJSON(f *testing.F) {
	f.Add("env", "environment", "temperature_c", 21.5, "state", "raised")
	f.Add("\x00\"\\", "\u2028", "\xff", math.Inf(1), "\xe2\x80", "\t\n")
	f.Fuzz(func(t *testing.T, source, series, field string, v float64, key, value string) {
		for _, s := range []*string{&source, &series, &field, &key, &value} {
			if len(*s) > abi.MaxString {
				*s = (*s)[:abi.MaxString]
			}
		}
		rec := abi.Append(nil, abi.KindReading, 1, source, series, []abi.Field{{Name: field, Value: v}}, []abi.Tag{{Key: key, Value: value}})
		it := abi.Iter{Buf: rec}
		if !it.Next() {
			t.Fatal(it.Err())
		}
		b := appendRecordJSON(nil, source, &it.Rec)
		var got struct {
			Module, Source, Series string
			Fields                 map[string]*float64
			Tags                   map[string]string
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		fix := func(s string) string { // each byte that is not UTF-8 becomes U+FFFD
			var b strings.Builder
			for _, r := range s {
				b.WriteRune(r)
			}
			return b.String()
		}
		if got.Source != fix(source) || got.Module != fix(source) || got.Series != fix(series) || got.Tags[fix(key)] != fix(value) {
			t.Errorf("%+v from %q %q %q %q", got, source, series, key, value)
		}
		fv := got.Fields[fix(field)]
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			if fv != nil {
				t.Errorf("field %v: %v, want null", v, *fv)
			}
		case fv == nil || *fv != v:
			t.Errorf("field %v: %v", v, fv)
		}
	})
}

// BenchmarkStreamPublish measures Publish of a batch of 64 readings: with no client (the cost
// every pipeline pays), with one client under the default rate cap (most readings skipped),
// with one uncapped client that takes everything, and with one that takes nothing (every event
// dropped).
func BenchmarkStreamPublish(b *testing.B) {
	const n = 64
	var batch []byte
	now := time.Now().UnixNano()
	for i := range n {
		batch = append(batch, reading("environment", now+int64(i), 20+float64(i))...)
	}
	capped, _ := parseFilter(url.Values{})
	uncapped, _ := parseFilter(url.Values{"max_rate": {"0"}})
	for _, bc := range []struct {
		name  string
		f     *filter
		drain bool
	}{
		{"none", nil, false},
		{"capped", &capped, true},
		{"uncapped", &uncapped, true},
		{"stalled", &uncapped, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := NewHub(HubOptions{})
			if bc.f != nil {
				c := h.subscribe(*bc.f)
				defer h.unsubscribe(c)
				if bc.drain {
					stop := make(chan struct{})
					defer close(stop)
					go func() {
						for {
							select {
							case <-c.ch:
							case <-stop:
								return
							}
						}
					}()
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				h.Publish("env", batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}
