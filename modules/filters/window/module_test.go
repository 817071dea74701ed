package window_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/modules/filters/window"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The window module is written in C (wasm/window.c, built by make modules). These tests hold it
// to the Go package, the reference logic: the same batches go to both, and each call's output
// must be the same records (kind, time, series, fields in order, tags in order; floating-point
// values within 1e-9 relative). The module's records carry its name as their source (the host
// fills it in); the Go package leaves it empty.

const moduleName = "window"

// newGo builds the reference from a raw config as the Go module did (the config decoded as the
// Go SDK's perch.Config did), or returns the message the Go module logged.
func newGo(raw string) (*perchtest.Reference, error) {
	var cfg window.Config
	if err := perchtest.GoConfig(raw, &cfg); err != nil {
		return nil, err
	}
	x, err := window.New(cfg)
	if err != nil {
		return nil, err
	}
	return &perchtest.Reference{Stage: x}, nil
}

// newPair loads the reference and the C module with the same config.
func newPair(t testing.TB, cfg string) *perchtest.Diff {
	t.Helper()
	return perchtest.NewDiff(t, moduleName, cfg, newGo, 1e-9)
}

// rec is one input record.
type rec struct {
	kind           abi.Kind
	t              int64
	source, series string
	fields         []abi.Field
	tags           []abi.Tag
}

func encode(recs ...rec) []byte {
	var b []byte
	for _, r := range recs {
		b = abi.Append(b, r.kind, r.t, r.source, r.series, r.fields, r.tags)
	}
	return b
}

func reading(tSec float64, source, series string, fv ...any) rec {
	r := rec{kind: abi.KindReading, t: int64(math.Round(tSec * 1e9)), source: source, series: series}
	for i := 0; i+1 < len(fv); i += 2 {
		r.fields = append(r.fields, abi.Field{Name: fv[i].(string), Value: fv[i+1].(float64)})
	}
	return r
}

// TestTable runs the reference's own table cases (window_test.go) through both.
func TestTable(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		name    string
		cfg     string
		batches [][]rec
	}{
		{"aggregates exactly", `{"window":"10s"}`, [][]rec{{
			reading(0, "a", "env", "temp", 1.0), reading(2, "a", "env", "temp", 4.0),
			reading(5, "a", "env", "temp", 2.0), reading(9, "a", "env", "temp", 3.0),
			reading(10, "a", "env", "temp", 100.0)}}},
		{"closes only when a record reaches the end", `{"window":"10s"}`, [][]rec{
			{reading(0, "a", "env", "temp", 1.0)}, {reading(9.999999999, "a", "env", "temp", 3.0)},
			{reading(10, "a", "env", "temp", 5.0)}, {reading(19.999999999, "a", "env", "temp", 7.0)},
			{reading(20, "a", "env", "temp", 5.0)}}},
		{"negative times align downwards", `{"window":"10s"}`, [][]rec{{
			reading(-5, "a", "env", "temp", 1.0), reading(0, "a", "env", "temp", 1.0), reading(-0.000000001, "a", "env", "temp", 1.0),
			reading(10, "a", "env", "temp", 1.0)}}},
		{"every field and (source, series) in order of first appearance", `{"window":"1m"}`, [][]rec{{
			reading(1, "b", "env", "temp", 20.0, "hum", 40.0), reading(2, "a", "env", "temp", 10.0),
			reading(3, "b", "power", "watts", 5.0), reading(4, "b", "env", "hum", 60.0, "temp", 22.0),
		}, {reading(61, "a", "env", "temp", 0.0)}}},
		{"a jump over empty windows", `{"window":"10s"}`, [][]rec{{
			reading(5, "a", "env", "temp", 1.0), reading(75, "a", "env", "temp", 2.0),
			reading(79, "a", "env", "temp", 4.0), reading(80, "a", "env", "temp", 0.0)}}},
		{"late readings", `{"window":"10s"}`, [][]rec{{
			reading(5, "a", "env", "temp", 1.0), reading(12, "a", "env", "temp", 2.0),
			reading(9, "a", "env", "temp", 1000.0), reading(20, "a", "env", "temp", 0.0)}}},
		{"series filter, other kinds, non-finite values", `{"window":"10s","series":"env"}`, [][]rec{{
			reading(1, "a", "env", "temp", 1.0, "bad", nan),
			reading(2, "a", "power", "watts", 5.0),
			{kind: abi.KindAlert, t: 3e9, source: "a", series: "env", fields: []abi.Field{{Name: "temp", Value: 99}}},
			{kind: abi.KindSummary, t: 4e9, source: "a", series: "env", fields: []abi.Field{{Name: "temp", Value: 99}}},
			reading(5, "a", "env", "temp", inf), reading(6, "a", "env", "temp", -inf, "nan_only", nan),
			reading(100, "a", "power", "watts", 5.0), reading(15, "a", "env", "temp", 0.0)}}},
		{"a group with no finite value still takes its place", `{"window":"10s"}`, [][]rec{{
			reading(1, "x", "env", "temp", nan), reading(2, "y", "env", "temp", 1.0),
			reading(11, "x", "env", "temp", 2.0), reading(12, "y", "env", "temp", 1.0), reading(21, "z", "env")}}},
		{"signed zeros", `{"window":"10s"}`, [][]rec{{
			reading(1, "a", "env", "v", 0.0, "w", math.Copysign(0, -1)),
			reading(2, "a", "env", "v", math.Copysign(0, -1), "w", 0.0),
			reading(11, "a", "env", "v", 1.0)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.cfg)
			for i, b := range tc.batches {
				p.Process(t, fmt.Sprintf("batch %d", i), encode(b...))
			}
		})
	}
}

// goldenBatches are the inputs of the reference's golden test (window_test.go's TestGolden):
// two hours of three sensors, 60 s per batch.
func goldenBatches() [][]byte {
	var out [][]byte
	for batch := range 120 {
		var recs []rec
		for i := range 60 {
			s := float64(batch*60 + i)
			recs = append(recs,
				reading(s, "bme280-0", "env", "temp", 20+5*math.Sin(s/600), "hum", 50+float64(int(s)%13)),
				reading(s+0.5, "bme280-1", "env", "temp", 18+0.01*s),
			)
			if i%10 == 0 {
				recs = append(recs, reading(s, "meter", "power", "watts", 100+float64(int(s)%7)*3))
			}
		}
		out = append(out, encode(recs...))
	}
	return out
}

// TestGolden runs the golden inputs through both, batch by batch, and checks the C module's
// output against testdata/summaries.golden as well (the Go test flushes the last window; a
// reading after the end does it here).
func TestGolden(t *testing.T) {
	p := newPair(t, `{"window":"1m"}`)
	var all []byte
	batches := append(goldenBatches(), encode(reading(7200, "bme280-0", "env", "temp", 0.0)))
	for i, b := range batches {
		got, err := p.C.Process(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got...)
		want, _ := p.Ref.Process(b)
		perchtest.SameRecords(t, fmt.Sprintf("batch %d", i), want, got, moduleName, p.RelTol)
	}
	golden, err := os.ReadFile(filepath.Join("testdata", "summaries.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if got := perchtest.Render(all, moduleName, "%.6g") + "\n"; got != string(golden) {
		t.Errorf("the C module's summaries differ from testdata/summaries.golden:\n%s", got[:min(len(got), 2000)])
	}
}

// gen makes random batches: many sources and series, fields in varying order and number
// (beyond the four the module handles without a loop), names of every length up to 255, gaps,
// window boundaries, late and far-off times, NaN and infinities, other kinds, tags.
type gen struct {
	r        *rand.Rand
	extremes bool // jump to the ends of the clock now and then (most later readings are then late)
	t        int64
	length   int64
	sources  []string
	series   []string
	names    []string
}

func newGen(seed uint64, length int64) *gen {
	g := &gen{r: rand.New(rand.NewPCG(seed, 7)), length: length}
	str := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz_-.0123456789"[g.r.IntN(39)]
		}
		return string(b)
	}
	for i := range 30 {
		g.sources = append(g.sources, fmt.Sprint("s", i, str(g.r.IntN(40))))
	}
	g.sources = append(g.sources, "", str(255))
	for i := range 6 {
		g.series = append(g.series, fmt.Sprint("series", i, str(g.r.IntN(30))))
	}
	g.series = append(g.series, "", "env", str(255))
	for _, n := range []int{0, 1, 3, 7, 8, 9, 13, 16, 17, 24, 31, 32, 33, 40, 64, 249, 250, 252, 255} {
		g.names = append(g.names, str(n))
	}
	g.names = append(g.names, "temperature_c", "pressure_hpa", "humidity_pct", "temperature_x", "t")
	g.t = g.r.Int64N(1e12) - 5e11
	return g
}

func (g *gen) value() float64 {
	switch g.r.IntN(40) {
	case 0:
		return math.NaN()
	case 1:
		return math.Inf(1)
	case 2:
		return math.Inf(-1)
	case 3:
		return math.Copysign(0, -1)
	case 4:
		return 1e300 * g.r.NormFloat64()
	case 5:
		return 1e-300 * g.r.NormFloat64()
	}
	return 20 + 10*g.r.NormFloat64()
}

func (g *gen) time() int64 {
	switch g.r.IntN(30) {
	case 0: // a gap of many windows
		g.t += g.length * (1 + g.r.Int64N(50))
	case 1: // late
		return g.t - g.r.Int64N(3*g.length+1)
	case 2: // exactly on a boundary, or next to one
		g.t = g.t - g.t%g.length + g.length + g.r.Int64N(3) - 1
	case 3: // the same time again
	case 4: // near the ends of the clock, or across 0 (int64 arithmetic wraps, in Go and in C)
		if g.extremes {
			g.t = []int64{math.MinInt64, math.MaxInt64 - 5e11, -5e11, 0}[g.r.IntN(4)] + g.r.Int64N(5e11)
		}
	default:
		g.t += g.r.Int64N(g.length/4 + 1)
	}
	return g.t
}

func (g *gen) record() rec {
	kinds := []abi.Kind{abi.KindReading, abi.KindReading, abi.KindReading, abi.KindReading, abi.KindSummary, abi.KindAlert, abi.KindEvent}
	r := rec{kind: kinds[g.r.IntN(len(kinds))], t: g.time()}
	r.source = g.sources[min(g.r.IntN(len(g.sources)), g.r.IntN(len(g.sources)))]
	r.series = g.series[min(g.r.IntN(len(g.series)), g.r.IntN(len(g.series)))]
	nf := []int{0, 1, 2, 3, 3, 3, 4, 5, 7, 12}[g.r.IntN(10)]
	base := g.r.IntN(len(g.names))
	for i := range nf {
		name := g.names[(base+i*(1+g.r.IntN(2)))%len(g.names)]
		if g.r.IntN(20) == 0 {
			name = g.names[g.r.IntN(len(g.names))] // maybe a duplicate
		}
		r.fields = append(r.fields, abi.Field{Name: name, Value: g.value()})
	}
	for range []int{0, 0, 0, 1, 2, 3}[g.r.IntN(6)] {
		r.tags = append(r.tags, abi.Tag{Key: g.names[g.r.IntN(len(g.names))], Value: g.sources[g.r.IntN(len(g.sources))]})
	}
	return r
}

// corrupt breaks one record of a batch in one of the ways abi.Iter detects.
func (g *gen) corrupt(b []byte) []byte {
	if len(b) < 20 {
		return append(b, 1, 2, 3)
	}
	b = append([]byte(nil), b...)
	switch g.r.IntN(4) {
	case 0:
		return b[:len(b)-1-g.r.IntN(10)] // truncated
	case 1:
		it := abi.Iter{Buf: b}
		for it.Next() && g.r.IntN(3) != 0 {
		}
		if it.Err() == nil && it.Off < len(b) {
			b[it.Off+4] = 9 // a bad kind
		}
		return b
	case 2:
		return append(b, make([]byte, 5)...) // a short tail
	default:
		it := abi.Iter{Buf: b}
		it.Next()
		b[it.Off+5]++ // one field more than there is
		return b
	}
}

// TestRandom feeds both many random batches under several configs.
func TestRandom(t *testing.T) {
	cfgs := []string{`{"window":"10s"}`, `{"window":"1ns"}`, `{"window":"7ns"}`, `{"window":"1m30s"}`,
		`{"window":"3s","series":"env"}`, `{"window":"250ms"}`, `{"window":"2562047h47m16.854775807s"}`}
	for i, cfg := range cfgs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var c window.Config
			_ = json.Unmarshal([]byte(cfg), &c)
			d, err := time.ParseDuration(c.Window)
			if err != nil {
				t.Fatal(err)
			}
			records := 0
			for seed := range uint64(3) {
				p := newPair(t, cfg)
				g := newGen(seed*31+uint64(i), min(int64(d), 1e12))
				g.extremes = d > 1e12
				for b := range 40 {
					var recs []rec
					for range []int{0, 1, 2, 50, 256, 300}[g.r.IntN(6)] {
						recs = append(recs, g.record())
					}
					batch := encode(recs...)
					if g.r.IntN(25) == 0 {
						batch = g.corrupt(batch)
					}
					p.Process(t, fmt.Sprintf("seed %d batch %d", seed, b), batch)
				}
				records += p.Records
			}
			if records == 0 {
				t.Error("no summaries compared")
			}
			t.Logf("%d summaries compared", records)
		})
	}
}

// TestExtremeTimes checks the wrap-around arithmetic at the ends of the int64 clock.
func TestExtremeTimes(t *testing.T) {
	for _, cfg := range []string{`{"window":"10s"}`, `{"window":"7ns"}`, `{"window":"2562047h47m16.854775807s"}`} {
		p := newPair(t, cfg)
		var recs []rec
		for _, ts := range []int64{math.MinInt64, math.MinInt64 + 1, math.MinInt64 + 9, -1, 0, 1, math.MaxInt64 - 10, math.MaxInt64,
			math.MinInt64, 0, math.MaxInt64 / 2, math.MaxInt64} {
			recs = append(recs, rec{kind: abi.KindReading, t: ts, source: "a", series: "env", fields: []abi.Field{{Name: "v", Value: float64(ts % 1000)}}})
			p.Process(t, fmt.Sprintf("%s at %d", cfg, ts), encode(recs[len(recs)-1]))
		}
		p.Process(t, cfg+" all", encode(recs...))
	}
}

// TestConfig compares the C module's config handling with the Go module's: the same configs are
// accepted, and the same messages logged for those refused (perch_init fails with EINVAL).
func TestConfig(t *testing.T) {
	long := strings.Repeat("x", 256)
	longWindow := strings.Repeat("1ns", 90) // a valid duration of 270 bytes
	for _, tc := range []struct{ cfg string }{
		{cfg: `{"window":"10s"}`}, {cfg: `{"window":"1h30m","series":"env"}`}, {cfg: ` {"window" : "1m" } `},
		{cfg: `{}`}, {cfg: ``}, {cfg: `  `}, {cfg: `null`}, {cfg: `{"window":null}`},
		{cfg: `{"window":"10"}`}, {cfg: `{"window":"-1s"}`}, {cfg: `{"window":"0"}`}, {cfg: `{"window":"0s"}`},
		{cfg: `{"window":"+5m"}`}, {cfg: `{"window":".5s"}`}, {cfg: `{"window":"5.s"}`}, {cfg: `{"window":"."}`},
		{cfg: `{"window":"1e3s"}`}, {cfg: `{"window":"1.5h"}`}, {cfg: `{"window":"1µs"}`}, {cfg: `{"window":"1μs"}`},
		{cfg: `{"window":"1\u00b5s"}`}, {cfg: `{"window":"1us"}`}, {cfg: `{"window":"µs"}`}, {cfg: `{"window":"1d"}`},
		{cfg: `{"window":"9223372036854775807ns"}`}, {cfg: `{"window":"9223372036854775808ns"}`},
		{cfg: `{"window":"2562047h47m16.854775807s"}`}, {cfg: `{"window":"2562047h47m16.854775808s"}`},
		{cfg: `{"window":"-9223372036854775808ns"}`}, {cfg: `{"window":"0.000000000001h"}`},
		{cfg: `{"window":"1.00000000000000000000001s"}`}, {cfg: `{"window":"1h1h1h"}`}, {cfg: `{"window":"1s2"}`},
		{cfg: `{"window":"\t1s"}`}, {cfg: `{"window":"a\"b\\c\n\u0001\u007f\u0080\u00ad\u00e9\u2028\ud83d\ude00"}`},
		{cfg: `{"window":"\ud800x"}`}, {cfg: "{\"window\":\"\xff\xfe1s\"}"},
		{cfg: `{"window":10}`}, {cfg: `{"window":true}`}, {cfg: `{"window":["10s"]}`}, {cfg: `{"window":{"a":[1,{"b":null}]}}`},
		{cfg: `{"window":"10s","series":1.5}`}, {cfg: `{"window":"10s","series":false}`},
		{cfg: `{"window":"10s","foo":1}`}, {cfg: `{"foo":[1,2,{"x":"y"}],"window":5}`}, {cfg: `{"window":5,"foo":1}`},
		{cfg: `{"Window":"10s"}`}, {cfg: `{"WINDOW":"10s","SERIES":"env"}`}, {cfg: `{"window":"1s","window":"2s"}`},
		{cfg: `{"window":"1s","Window":"x"}`}, {cfg: "{\"\u017fERIES\":\"env\",\"window\":\"1s\"}"}, {cfg: `{"wіndow":"1s"}`},
		{cfg: `{"window":"10s","series":"` + long + `"}`}, {cfg: `{"window":"` + longWindow + `"}`},
		{cfg: `{"window":"0s","series":"` + long + `"}`}, {cfg: `{"series":"` + long + `"}`},
		{cfg: `{"window":"10s","series":"\ud800"}`},
		{cfg: `{"window":"10s"} x`}, {cfg: `{"window":"10s"}}`}, {cfg: `{"window":"10s"}]`}, {cfg: `{"window":"10s"} {}`},
		{cfg: `[]`}, {cfg: `"10s"`}, {cfg: `10`}, {cfg: `true`},
		{cfg: `{"window":"10s",}`}, {cfg: `{"window":"10s"`}, {cfg: `{"window" "10s"}`},
		{cfg: `{window:"10s"}`}, {cfg: `{"window":'10s'}`}, {cfg: `{"window":01}`},
		{cfg: `{"window":"10s","series":tru}`}, {cfg: `{"window":"a` + "\n" + `"}`},
		{cfg: `{"window":"\x"}`}, {cfg: `{"window":"\u12"}`}, {cfg: `{"window":-}`},
		{cfg: `{"window":1.}`}, {cfg: `{"window":1e}`}, {cfg: `{"a":[1,2}`},
		{cfg: `{"a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`},
		{cfg: `{"a":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `,"window":"1s"}`},
		{cfg: `{"a":[{"b":` + strings.Repeat("[", 9997) + strings.Repeat("]", 9997) + `}],"window":"1s"}`},
		{cfg: `{"a":[{"b":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}],"window":"1s"}`},
	} {
		name := tc.cfg
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			_, goErr := newGo(tc.cfg)
			_, l, cErr := perchtest.LoadBuilt(t, moduleName, tc.cfg)
			perchtest.SameInit(t, "", goErr, cErr, l.String())
		})
	}
}

// TestConfigMutations compares the C module's config handling with the Go module's on random
// mutations of valid configs (bytes inserted, deleted and replaced, from JSON's punctuation,
// digits, letters, controls and bytes that are not UTF-8): the same configs accepted, the same
// messages logged for those refused, syntax errors included. (The seeds have no \u escapes: one
// mutated into an unassigned code point would be quoted differently, see perch_text_quote.)
func TestConfigMutations(t *testing.T) {
	seeds := []string{`{"window":"10s","series":"env"}`, `{"window":"1h30m"}`, `{"Window":"5s","series":null}`,
		`{"window":"10s","x":[1,{"a":"b"}]}`, `{"window":"µs é"}`, ` { "window" : "1.5m" } `}
	alphabet := []byte(`{}[]":,\ u0123456789abcdefnulltruefalse.eE+-` + "\t\n\x00\x7f\xc3\xa9\xff")
	rng := rand.New(rand.NewPCG(1, 2))
	n := 600
	if testing.Short() {
		n = 60
	}
	for range n {
		b := []byte(seeds[rng.IntN(len(seeds))])
		for range 1 + rng.IntN(3) {
			p := rng.IntN(len(b) + 1)
			switch rng.IntN(3) {
			case 0:
				b = append(b[:p], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[p:]...)...)
			case 1:
				if p < len(b) {
					b = append(b[:p], b[p+1:]...)
				}
			default:
				if p < len(b) {
					b[p] = alphabet[rng.IntN(len(alphabet))]
				}
			}
		}
		cfg := string(b)
		_, goErr := newGo(cfg)
		_, l, cErr := perchtest.LoadBuilt(t, moduleName, cfg)
		perchtest.SameInit(t, fmt.Sprintf("%q", cfg), goErr, cErr, l.String())
	}
}

// TestLimits checks what happens past the C module's documented limits, where it departs from
// the Go package: readings of a (source, series) past the 1024th are dropped, values of fields
// past the 51st of a (source, series) too, and the drops are logged.
func TestLimits(t *testing.T) {
	m, l := perchtest.MustLoadBuilt(t, moduleName, `{"window":"10s"}`)
	var recs []rec
	for i := range 1100 {
		recs = append(recs, reading(1, fmt.Sprint("src", i), "env", "v", float64(i)))
	}
	var fields []any
	for i := range 60 {
		fields = append(fields, fmt.Sprint("f", i), float64(i))
	}
	recs = append(recs, reading(2, "src0", "env", fields...), reading(11, "src0", "env", "v", 0.0))
	out, err := m.Process(context.Background(), encode(recs...))
	if err != nil {
		t.Fatal(err)
	}
	it := abi.Iter{Buf: out}
	n := 0
	for it.Next() {
		if n == 0 && it.Rec.NumFields() != 255 {
			t.Errorf("the first summary has %d fields, want 255 (51 input fields)", it.Rec.NumFields())
		}
		n++
	}
	if n != 1024 {
		t.Errorf("%d summaries, want 1024", n)
	}
	for _, w := range []string{"WARN window: 1 readings dropped: more than 1024 (source, series) pairs",
		"WARN window: 64 readings dropped", "WARN window: 1 values dropped: more than 51 fields", "WARN window: 8 values dropped"} {
		if !strings.Contains(l.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, l.String())
		}
	}
	if strings.Contains(l.String(), "76 readings dropped") {
		t.Errorf("logged a count that is not a power of two:\n%s", l.String())
	}
}

// TestEmptyBatch checks empty batches between others.
func TestEmptyBatch(t *testing.T) {
	p := newPair(t, `{"window":"10s"}`)
	p.Process(t, "empty", nil)
	p.Process(t, "one", encode(reading(1, "a", "env", "v", 1.0)))
	p.Process(t, "empty again", nil)
	p.Process(t, "close", encode(reading(11, "a", "env", "v", 1.0)))
}

// benchBatch is the benchmark's batch: n readings of three fields from four sources.
func benchBatch(n int) []byte {
	var recs []rec
	for i := range n {
		recs = append(recs, reading(float64(i)/10, fmt.Sprint("src", i%4), "environment",
			"temperature_c", float64(i%30), "pressure_hpa", 1013.0, "humidity_pct", 45.0))
	}
	return encode(recs...)
}

// shift moves every record of the batch on by d ns, so that windows keep closing.
func shift(batch []byte, d int64) {
	it := abi.Iter{Buf: batch}
	for it.Next() {
		b := batch[it.Off+8:]
		t := int64(b[0]) | int64(b[1])<<8 | int64(b[2])<<16 | int64(b[3])<<24 | int64(b[4])<<32 | int64(b[5])<<40 | int64(b[6])<<48 | int64(b[7])<<56
		t += d
		for i := range 8 {
			b[i] = byte(t >> (8 * i))
		}
	}
}

// BenchmarkModule: one reading of three fields through the filter, in batches of 256 from four
// sources, as the C module in Wasm (impl=c-wasm) and as the Go reference natively
// (impl=go-native); ns/op is per record. Compare with benchstat -col /impl.
func BenchmarkModule(b *testing.B) {
	const n = 256
	run := func(b *testing.B, process func([]byte) ([]byte, error)) {
		batch := benchBatch(n)
		b.ReportAllocs()
		b.ResetTimer()
		for done := 0; done < b.N; done += n {
			shift(batch, 100e9)
			if _, err := process(batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
	}
	b.Run("impl=c-wasm", func(b *testing.B) {
		m, _ := perchtest.MustLoadBuilt(b, moduleName, `{"window":"10s"}`)
		run(b, func(batch []byte) ([]byte, error) { return m.Process(context.Background(), batch) })
	})
	b.Run("impl=go-native", func(b *testing.B) {
		g, err := newGo(`{"window":"10s"}`)
		if err != nil {
			b.Fatal(err)
		}
		run(b, g.Process)
	})
}
