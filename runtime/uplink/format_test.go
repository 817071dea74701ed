package uplink

import (
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/jsonx"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

// formatRows returns outbox rows made by the encoder from a variety of records: summaries
// (6 significant digits) and events (exact), several groups, gaps in the ids, NaN and
// infinities, -0, values whose scales are too far apart for the decimal column, times in s, ms
// and ns, and before 1970.
func formatRows(t testing.TB) []store.OutboxRow {
	t.Helper()
	e := newEncoder(testPrefix, config.RawReadings{})
	base := time.Date(2026, 12, 7, 3, 31, 30, 0, time.UTC).UnixNano()
	type rec struct {
		kind           abi.Kind
		timeNS         int64
		source, series string
		fields         []abi.Field
		tags           []abi.Tag
	}
	win := []abi.Tag{{Key: "window", Value: "10s"}, {Key: "source", Value: "env"}}
	stats := func(mean, spread float64) []abi.Field {
		return []abi.Field{{Name: "temperature_c_count", Value: 20}, {Name: "temperature_c_mean", Value: mean},
			{Name: "temperature_c_min", Value: mean - spread}, {Name: "temperature_c_max", Value: mean + spread},
			{Name: "temperature_c_std", Value: spread / 3.3}, {Name: "pressure_hpa_mean", Value: 1013.25 + spread}}
	}
	var recs []rec
	for i := range 6 {
		recs = append(recs, rec{abi.KindSummary, base + int64(i)*10e9, "env-window", "environment",
			stats(22+math.Sin(float64(i))*1.5, 0.4+float64(i)/7), win})
		if i == 2 {
			recs = append(recs, rec{abi.KindSummary, base + 123456789, "other", "environment",
				[]abi.Field{{Name: "x", Value: math.NaN()}, {Name: "y", Value: math.Inf(1)}, {Name: "z", Value: math.Copysign(0, -1)}}, nil})
			recs = append(recs, rec{abi.KindSummary, base + 2e6, "other", "environment",
				[]abi.Field{{Name: "x", Value: 1e300}, {Name: "y", Value: math.Inf(-1)}, {Name: "z", Value: 0}}, nil})
			recs = append(recs, rec{abi.KindSummary, base + 3e6, "other", "environment",
				[]abi.Field{{Name: "x", Value: 1e-300}, {Name: "y", Value: -5}, {Name: "z", Value: 7}}, nil})
		}
	}
	recs = append(recs,
		rec{abi.KindSummary, -1_500_000_001, "old", "s", []abi.Field{{Name: "v", Value: -0.000123456789}}, nil},
		rec{abi.KindSummary, -1_500_000_000, "old", "s", []abi.Field{{Name: "v", Value: 123456789012}}, nil},
		rec{abi.KindSummary, base, "nofields", "s", nil, []abi.Tag{{Key: "k", Value: "v \"quoted\" é"}}},
		rec{abi.KindSummary, base, "reordered", "s", []abi.Field{{Name: "b", Value: 1}, {Name: "a", Value: 2}}, nil},
		rec{abi.KindSummary, base, "reordered", "s", []abi.Field{{Name: "a", Value: 2}, {Name: "b", Value: 1}}, nil},
	)
	var rows []store.OutboxRow
	id := int64(41)
	for _, r := range recs {
		var it abi.Iter
		it.Buf = abi.Append(nil, r.kind, r.timeNS, r.source, r.series, r.fields, r.tags)
		if !it.Next() {
			t.Fatal(it.Err())
		}
		topic, prio, payload, ok := e.upstream(&it.Rec)
		if !ok {
			t.Fatalf("%+v not upstream", r)
		}
		id += 1 + id%3 // gaps, as alerts and events take ids too
		rows = append(rows, store.OutboxRow{ID: id, Priority: prio, Topic: topic, Payload: bytes.Clone(payload), CreatedNS: r.timeNS})
	}
	// Events: exact values, other tags each.
	e2 := newEncoder(testPrefix, config.RawReadings{})
	for i, msg := range []string{"started bme280 0.1.0", "started window 0.1.0"} {
		var it abi.Iter
		it.Buf = abi.Append(nil, abi.KindEvent, base+int64(i)*1713, "env", "module.started",
			[]abi.Field{{Name: "batch", Value: 64.123456789012345}}, []abi.Tag{{Key: "message", Value: msg}})
		it.Next()
		topic, prio, payload, _ := e2.upstream(&it.Rec)
		id++
		rows = append(rows, store.OutboxRow{ID: id, Priority: prio, Topic: topic, Payload: bytes.Clone(payload), CreatedNS: base})
	}
	return rows
}

// sameMessages reports the first difference between two lists of messages, NaN equal to NaN.
func sameMessages(t testing.TB, got, want []Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d messages, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || !g.Time.Equal(w.Time) || g.Kind != w.Kind || g.Source != w.Source ||
			g.Series != w.Series || len(g.Fields) != len(w.Fields) || len(g.Tags) != len(w.Tags) {
			t.Fatalf("message %d:\n got %+v\nwant %+v", i, g, w)
		}
		for j := range g.Fields {
			gf, wf := g.Fields[j], w.Fields[j]
			if gf.Name != wf.Name || math.Float64bits(gf.Value) != math.Float64bits(wf.Value) &&
				!(math.IsNaN(gf.Value) && math.IsNaN(wf.Value)) {
				t.Fatalf("message %d (id %d) field %d: got %q %v, want %q %v", i, g.ID, j, gf.Name, gf.Value, wf.Name, wf.Value)
			}
		}
		for j := range g.Tags {
			if g.Tags[j] != w.Tags[j] {
				t.Fatalf("message %d tag %d: got %+v, want %+v", i, j, g.Tags[j], w.Tags[j])
			}
		}
	}
}

// singles decodes each row's own message: what the far side gets without batching.
func singles(t testing.TB, rows []store.OutboxRow) []Message {
	t.Helper()
	var out []Message
	for i := range rows {
		ms, err := DecodeMessages(rows[i].Message())
		if err != nil || len(ms) != 1 {
			t.Fatalf("row %d: %v %+v: %s", rows[i].ID, err, ms, rows[i].Message())
		}
		out = append(out, ms[0])
	}
	return out
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestColumnarRoundTrip: a batch decodes to exactly the messages its rows would have been one by
// one, compressed (columnar) or not (JSON array), and its id is its first row's.
func TestColumnarRoundTrip(t *testing.T) {
	rows := formatRows(t)
	want := singles(t, rows)
	for _, compress := range []bool{true, false} {
		payload := encodeBatch(rows, compress)
		if compress {
			if body := gunzip(t, payload); body[0] != columnarMagic {
				t.Fatalf("compressed batch not columnar: %q", body[:min(40, len(body))])
			}
		} else if payload[0] != '[' {
			t.Fatalf("uncompressed batch: %q", payload[:40])
		}
		if id, ok := messageID(payload); !ok || id != rows[0].ID {
			t.Errorf("compress %v: batch id %d %v, want %d", compress, id, ok, rows[0].ID)
		}
		got, err := DecodeMessages(payload)
		if err != nil {
			t.Fatalf("compress %v: %v", compress, err)
		}
		sameMessages(t, got, want)
		// Any sub-batch too, from any row on.
		for from := range rows {
			got, err := DecodeMessages(encodeBatch(rows[from:], compress))
			if err != nil {
				t.Fatalf("compress %v, rows %d on: %v", compress, from, err)
			}
			sameMessages(t, got, want[from:])
		}
	}
	// The 6 window summaries are one group, with decimal columns; the values that do not fit the
	// decimal form are text.
	body := gunzip(t, encodeBatch(rows, true))
	if !bytes.Contains(body, []byte("\nenv-window\venvironment")) || !bytes.Contains(body, []byte("\x061e+300")) {
		t.Errorf("unexpected layout: %q", body)
	}
	t.Logf("%d rows: %d bytes one by one, %d JSON array, %d gzipped JSON array, %d columnar, %d gzipped columnar",
		len(rows), len(bytes.Join(func() [][]byte {
			var b [][]byte
			for i := range rows {
				b = append(b, rows[i].Message())
			}
			return b
		}(), nil)), len(encodeBatch(rows, false)), len(gzipped(encodeBatch(rows, false))), len(body), len(encodeBatch(rows, true)))
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// TestColumnarFallback: a row that is not a message makes the compressed batch a gzipped JSON
// array, which still decodes.
func TestColumnarFallback(t *testing.T) {
	rows := formatRows(t)[:3]
	rows[1].Payload = []byte(`{"time":"yesterday","kind":"summary"}`)
	payload := encodeBatch(rows, true)
	if body := gunzip(t, payload); body[0] != '[' {
		t.Fatalf("want a JSON array, got %q", body)
	}
	if id, ok := messageID(payload); !ok || id != rows[0].ID {
		t.Errorf("batch id %d %v", id, ok)
	}
	if _, err := DecodeMessages(payload); err == nil || !strings.Contains(err.Error(), "message 1") {
		t.Errorf("error %v, want one naming message 1", err)
	}
}

func TestDecimal(t *testing.T) {
	for _, tc := range []struct {
		num string
		m   int64
		exp int
		ok  bool
	}{
		{"0", 0, 0, true}, {"20", 2, 1, true}, {"22.4549", 224549, -4, true}, {"-0.000123457", -123457, -9, true},
		{"1.23457e+06", 123457, 1, true}, {"1e-300", 1, -300, true}, {"1500.00", 15, 2, true},
		{"-0", 0, 0, false}, {"1234567890123456789", 0, 0, false}, {"", 0, 0, false},
	} {
		m, exp, ok := decimal(tc.num)
		if ok != tc.ok || ok && (m != tc.m || exp != tc.exp) {
			t.Errorf("decimal(%q) = %d, %d, %v; want %d, %d, %v", tc.num, m, exp, ok, tc.m, tc.exp, tc.ok)
		}
	}
}

// TestDecodeMessagesErrors: bad payloads are errors that say what is wrong, never a panic.
func TestDecodeMessagesErrors(t *testing.T) {
	good := gunzip(t, encodeBatch(formatRows(t), true))
	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, "want '{', '[' or gzip"},
		{"text", []byte("hello"), "want '{', '[' or gzip"},
		{"bad gzip", []byte("\x1f\x8bxxxxxxxxxxxxxxxxxxxx"), "gzip"},
		{"gzip of text", gzipped([]byte("hello")), "neither a columnar batch"},
		{"no id", []byte(`{"time":"2026-01-01T00:00:00Z"}`), `no "id"`},
		{"no time", []byte(`{"id":1}`), `no "time"`},
		{"bad field", []byte(`[{"id":1,"time":"2026-01-01T00:00:00Z","fields":{"a":"x"}}]`), `field "a"`},
		{"truncated", gzipped(good[:len(good)/2]), "columnar batch"},
		{"trailing", gzipped(append(bytes.Clone(good), 0)), "after the last group"},
		{"no groups", gzipped([]byte{columnarMagic, 1, 1}), "groups"},
		{"bad unit", gzipped([]byte{columnarMagic, 1, 1, 0, 0, 0, 0, 0, 1, 0, 7, 0}), "time unit 7"},
		{"dup ids", gzipped([]byte{columnarMagic, 1, 1, 0, 0, 0, 0, 0, 2, 0, 0, 1, 0, 0}), "ids not increasing"},
		{"bad column", gzipped([]byte{columnarMagic, 1, 1, 0, 0, 0, 0, 1, 0, 1, 'a', 1, 0, 1, 0, 9, 0}), "unknown column type"},
		{"bad text", gzipped([]byte{columnarMagic, 1, 1, 0, 0, 0, 0, 1, 0, 1, 'a', 1, 0, 1, 0, colText, 1, 'x'}), "not a JSON number"},
		{"bomb", gzipped(make([]byte, maxDecoded+1)), "more than"},
	} {
		_, err := DecodeMessages(tc.payload)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// messageRow is the outbox row of m, as the encoder would have written it.
func messageRow(m *Message) store.OutboxRow {
	b := []byte(`{"time":"`)
	b = m.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":`...)
	b = jsonx.AppendString(b, m.Kind)
	b = append(b, `,"source":`...)
	b = jsonx.AppendString(b, m.Source)
	b = append(b, `,"series":`...)
	b = jsonx.AppendString(b, m.Series)
	b = append(b, `,"fields":{`...)
	for i, f := range m.Fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonx.AppendString(b, f.Name)
		b = append(b, ':')
		b = appendJSONNumber(b, f.Value)
	}
	b = append(b, `},"tags":{`...)
	for i, tg := range m.Tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(jsonx.AppendString(b, tg.Key), ':')
		b = jsonx.AppendString(b, tg.Value)
	}
	return store.OutboxRow{ID: m.ID, Payload: append(b, "}}"...)}
}

// FuzzDecodeMessages: the decoder never panics, and what it accepts survives encoding again
// (columnar) and decoding.
func FuzzDecodeMessages(f *testing.F) {
	rows := formatRows(f)
	f.Add(encodeBatch(rows, true))
	f.Add(encodeBatch(rows, false))
	f.Add(rows[0].Message())
	f.Add(gunzip(f, encodeBatch(rows, true)))
	f.Add(gzipped([]byte{columnarMagic, 1, 1, 0, 0, 0, 0, 1, 0, 1, 'a', 1, 0, 1, 0, colText, 1, '1'}))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var ms []Message
		var err error
		if len(payload) > 0 && payload[0] == columnarMagic {
			ms, err = decodeColumnar(payload) // the gunzipped form, so the fuzzer reaches it
		} else {
			ms, err = DecodeMessages(payload)
		}
		if err != nil || len(ms) == 0 {
			return
		}
		again := make([]store.OutboxRow, len(ms))
		for i := range ms {
			if ms[i].Time.Year() < 1678 || ms[i].Time.Year() > 2261 {
				return // beyond what ns since 1970 in an int64 hold: not a record's time
			}
			for j, fl := range ms[i].Fields {
				if math.IsInf(fl.Value, 0) { // JSON has no infinities: null, which decodes to NaN
					ms[i].Fields[j].Value = math.NaN()
				}
			}
			again[i] = messageRow(&ms[i])
		}
		got, err := DecodeMessages(encodeBatch(again, true))
		if err != nil {
			t.Fatalf("%v; messages %+v", err, ms)
		}
		sameMessages(t, got, ms)
	})
}
