package threshold_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/perch-edge/perch/modules/rules/threshold"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The threshold module is written in C (wasm/threshold.c, built by make modules). These tests
// hold it to the Go package, the reference logic: the same batches go to both, and each call's
// output must be the same records (kind, time, series, fields in order, tags in order;
// floating-point values within 1e-9 relative). The module's records carry its name as their
// source (the host fills it in); the Go package leaves it empty.

const moduleName = "threshold"

// newGo builds the reference from a raw config as the Go module did (the config decoded as the
// Go SDK's perch.Config did), or returns the message the Go module logged.
func newGo(raw string) (*perchtest.Reference, error) {
	var cfg threshold.Config
	if err := perchtest.GoConfig(raw, &cfg); err != nil {
		return nil, err
	}
	x, err := threshold.New(cfg)
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

// r is a reading of temp (and other) in series env from source a, as in threshold_test.go.
func r(tSec, v float64) rec {
	return rec{kind: abi.KindReading, t: int64(tSec * 1e9), source: "a", series: "env",
		fields: []abi.Field{{Name: "temp", Value: v}, {Name: "other", Value: -1}}}
}

func rk(kind abi.Kind, tSec float64, source, series, field string, v float64) rec {
	return rec{kind: kind, t: int64(tSec * 1e9), source: source, series: series,
		fields: []abi.Field{{Name: field, Value: v}, {Name: "other", Value: -1}}}
}

// TestTable runs the reference's own table cases (threshold_test.go) through both.
func TestTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     string
		batches [][]rec
	}{
		{"raise once and clear once", `{"field":"temp","above":30}`,
			[][]rec{{r(1, 20), r(2, 31), r(3, 35), r(4, 31)}, {r(5, 30), r(6, 29.9), r(7, 20)}}},
		{"hysteresis", `{"field":"temp","above":30,"hysteresis":2}`, [][]rec{{r(1, 30.1), r(2, 29.9), r(3, 30.2),
			r(4, 28.5), r(5, 31), r(6, 28), r(7, 27.9), r(8, 30.5), r(9, 29), r(10, 30.01)}}},
		{"below", `{"field":"temp","below":5,"hysteresis":1}`, [][]rec{{r(1, 10), r(2, 5), r(3, 4), r(4, 3), r(5, 5.5), r(6, 6.5)}}},
		{"hold-off", `{"field":"temp","above":30,"hold_off":"10s"}`, [][]rec{
			{r(0, 31), r(5, 32), r(9, 29)}, {r(20, 31), r(25, 31), r(29.9, 40)},
			{r(30, 31), r(31, 31), r(40, 20)}, {r(50, 31), r(55, 29), r(56, 31), r(65, 31)}}},
		{"zero hold-off", `{"field":"temp","above":30,"hold_off":"0s"}`, [][]rec{{r(0, 31)}}},
		{"a band", `{"field":"temp","above":30,"below":10,"hysteresis":1}`,
			[][]rec{{r(1, 20), r(2, 35), r(3, 5), r(4, 9.5), r(5, 12)}}},
		{"state per source and series", `{"field":"temp","above":30}`, [][]rec{{
			rk(abi.KindReading, 1, "a", "env", "temp", 31), rk(abi.KindReading, 2, "b", "env", "temp", 31),
			rk(abi.KindReading, 3, "a", "lab", "temp", 31), rk(abi.KindReading, 4, "a", "env", "temp", 32),
			rk(abi.KindReading, 5, "b", "env", "temp", 20)}}},
		{"series filter, summaries, other kinds and fields", `{"series":"env","field":"temp_mean","above":30}`, [][]rec{{
			rk(abi.KindReading, 1, "a", "lab", "temp_mean", 50), rk(abi.KindReading, 2, "a", "env", "temp", 50),
			rk(abi.KindAlert, 3, "a", "env", "temp_mean", 50), rk(abi.KindSummary, 4, "w", "env", "temp_mean", math.NaN()),
			rk(abi.KindSummary, 10, "w", "env", "temp_mean", 31)}}},
		{"tags", `{"field":"temp","below":40,"severity":"critical","message":"too cold"}`, [][]rec{{r(1, 31)}}},
		{"default message", `{"field":"temp","above":30.5}`, [][]rec{{r(1, 31), r(2, 20)}}},
		{"infinities", `{"field":"temp","above":30,"below":-30}`, [][]rec{{r(1, math.Inf(1)), r(2, math.Inf(-1)), r(3, 0)}}},
		{"the first field of the name", `{"field":"temp","above":30}`, [][]rec{{
			{kind: abi.KindReading, t: 1, source: "a", series: "env", fields: []abi.Field{{Name: "x", Value: 99}, {Name: "temp", Value: 31}, {Name: "temp", Value: 0}}},
			{kind: abi.KindReading, t: 2, source: "a", series: "env", fields: []abi.Field{{Name: "temp", Value: 0}, {Name: "temp", Value: 99}}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.cfg)
			for i, b := range tc.batches {
				p.Process(t, fmt.Sprintf("batch %d", i), encode(b...))
			}
			if p.Records == 0 {
				t.Error("no alerts: the case tests nothing")
			}
		})
	}
}

// TestGolden runs the inputs of the reference's golden test (threshold_test.go's TestGolden: six
// hours of a noisy signal from two sensors) through both, batch by batch, and checks the C
// module's alerts against testdata/alerts.golden as well.
func TestGolden(t *testing.T) {
	p := newPair(t, `{"series":"env","field":"temp","above":30,"hysteresis":2,"hold_off":"30s"}`)
	seed := uint64(1)
	noise := func() float64 {
		seed = seed*6364136223846793005 + 1442695040888963407
		return 3 * (float64(seed>>11)/(1<<53) - 0.5)
	}
	var all []byte
	for batch := range 36 {
		var recs []rec
		for i := range 60 {
			s := float64(batch*600 + i*10)
			for k, src := range []string{"bme280-0", "bme280-1"} {
				v := 25 + 8*math.Sin(2*math.Pi*(s/3600+0.1*float64(k))) + noise()
				recs = append(recs, rk(abi.KindReading, s, src, "env", "temp", math.Round(v*100)/100))
			}
		}
		all = append(all, p.Process(t, fmt.Sprint("batch ", batch), encode(recs...))...)
	}
	golden, err := os.ReadFile(filepath.Join("testdata", "alerts.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if got := perchtest.Render(all, moduleName, "%g") + "\n"; got != string(golden) {
		t.Errorf("the C module's alerts differ from testdata/alerts.golden:\n%s", got)
	}
}

// gen makes random records around the limits: many sources and series, the watched field at
// varying places (also past the fourth, also twice, also missing), NaN and infinities, other
// kinds, times that go back and jump, tags.
type gen struct {
	r       *rand.Rand
	t       int64
	field   string
	sources []string
	series  []string
	lo, hi  float64
}

func newGen(seed uint64, field string, lo, hi float64) *gen {
	g := &gen{r: rand.New(rand.NewPCG(seed, 11)), field: field, lo: lo, hi: hi, t: int64(seed) * 1e9}
	str := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz_-.0123456789"[g.r.IntN(39)]
		}
		return string(b)
	}
	for i := range 20 {
		g.sources = append(g.sources, fmt.Sprint("s", i, str(g.r.IntN(40))))
	}
	g.sources = append(g.sources, "", str(255))
	g.series = append(g.series, "env", "", "lab", str(33), str(255))
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
		return g.hi
	case 4:
		return g.lo
	}
	span := g.hi - g.lo
	if math.IsInf(span, 0) || span == 0 {
		span = 20
	}
	mid := g.lo + (g.hi-g.lo)/2
	if math.IsInf(g.lo, 0) || math.IsInf(g.hi, 0) {
		mid = math.Min(math.Abs(g.lo), math.Abs(g.hi))
		if math.IsInf(g.lo, -1) {
			mid = g.hi
		} else {
			mid = g.lo
		}
	}
	return mid + span*0.8*g.r.NormFloat64()
}

func (g *gen) record() rec {
	switch g.r.IntN(20) {
	case 0:
		g.t -= g.r.Int64N(20e9) // back in time
	case 1:
		g.t += g.r.Int64N(1e12) // a jump
	case 2:
		g.t = []int64{math.MinInt64, math.MaxInt64, 0, -1}[g.r.IntN(4)]
	default:
		g.t += g.r.Int64N(3e9)
	}
	kinds := []abi.Kind{abi.KindReading, abi.KindReading, abi.KindReading, abi.KindSummary, abi.KindAlert, abi.KindScore}
	r := rec{kind: kinds[g.r.IntN(len(kinds))], t: g.t,
		source: g.sources[min(g.r.IntN(len(g.sources)), g.r.IntN(len(g.sources)))],
		series: g.series[min(g.r.IntN(len(g.series)), g.r.IntN(len(g.series)))]}
	nf := []int{0, 1, 2, 3, 4, 5, 8}[g.r.IntN(7)]
	at := g.r.IntN(nf + 2) // sometimes absent
	others := []string{"x", "temp", "temperature", g.field + "_", g.field[:len(g.field)/2], "pressure_hpa"}
	for i := range nf {
		name := others[g.r.IntN(len(others))]
		if i == at || g.r.IntN(15) == 0 {
			name = g.field
		}
		r.fields = append(r.fields, abi.Field{Name: name, Value: g.value()})
	}
	for range []int{0, 0, 1, 3}[g.r.IntN(4)] {
		r.tags = append(r.tags, abi.Tag{Key: "k", Value: g.sources[g.r.IntN(len(g.sources))]})
	}
	return r
}

// TestRandom feeds both random batches under many configs.
func TestRandom(t *testing.T) {
	long := strings.Repeat("f", 40)
	for i, tc := range []struct {
		cfg    string
		field  string
		lo, hi float64
	}{
		{`{"field":"temp","above":30}`, "temp", math.Inf(-1), 30},
		{`{"field":"temp","above":30,"hysteresis":2,"hold_off":"5s"}`, "temp", math.Inf(-1), 30},
		{`{"field":"temp","below":-5.5,"hysteresis":0.5,"hold_off":"1s"}`, "temp", -5.5, math.Inf(1)},
		{`{"field":"temperature_c","above":30,"below":10,"hysteresis":1,"hold_off":"2s","series":"env"}`, "temperature_c", 10, 30},
		{`{"field":"` + long + `","above":1e-3,"below":-1e-3}`, long, -1e-3, 1e-3},
		{`{"field":"t","above":0,"below":-0.0000001,"severity":"critical","message":"m"}`, "t", -0.0000001, 0},
		{`{"field":"temp","above":100,"hysteresis":1000,"hold_off":"1h"}`, "temp", math.Inf(-1), 100},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, tc.cfg)
			for seed := range uint64(3) {
				g := newGen(seed+uint64(10*i), tc.field, tc.lo, tc.hi)
				for b := range 30 {
					var recs []rec
					for range []int{0, 1, 7, 100, 256}[g.r.IntN(5)] {
						recs = append(recs, g.record())
					}
					batch := encode(recs...)
					if g.r.IntN(20) == 0 && len(batch) > 20 { // a batch that does not decode
						batch = batch[:len(batch)-1-g.r.IntN(8)]
					}
					p.Process(t, fmt.Sprintf("seed %d batch %d", seed, b), batch)
				}
			}
			if p.Records < 20 {
				t.Errorf("only %d alerts compared", p.Records)
			}
			t.Logf("%d alerts compared", p.Records)
		})
	}
}

// TestMessageNumbers checks the default message, "<field> above <limit>", for limits of every
// kind: the C module formats them as Go's strconv.FormatFloat(v, 'g', -1, 64).
func TestMessageNumbers(t *testing.T) {
	limits := []float64{30, 30.5, -40, 0, 0.1, 1e-5, 1e-4, 123456, 1234567, 1e21, 1e20, 123456789012345678,
		5e-324, math.MaxFloat64, math.SmallestNonzeroFloat64 * 3, 1.0 / 3, 2.0 / 3, 100, 1e6, 1e-7, 0.000123,
		9007199254740993, 4.35, 0.3, 8.41e21, 5.0e-324 * 12345, 1.7976931348623157e308 / 3}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 30 {
		limits = append(limits, math.Float64frombits(rng.Uint64()&^(1<<63)>>1|0x3000000000000000))
		limits = append(limits, rng.NormFloat64()*math.Pow(10, float64(rng.IntN(40)-20)))
	}
	for _, limit := range limits {
		if math.IsNaN(limit) || math.IsInf(limit, 0) {
			continue
		}
		cfg := `{"field":"v","above":` + strconv.FormatFloat(limit, 'g', -1, 64) + `}`
		m, l := perchtest.MustLoadBuilt(t, moduleName, cfg)
		v := math.Nextafter(limit, math.Inf(1))
		if math.IsInf(v, 0) {
			continue
		}
		out, err := m.Process(context.Background(), encode(rec{kind: abi.KindReading, t: 1, source: "a", series: "s",
			fields: []abi.Field{{Name: "v", Value: v}}}))
		if err != nil {
			t.Fatalf("%s: %v\n%s", cfg, err, l.String())
		}
		recs := perchtest.Decode(out)
		want := "v above " + strconv.FormatFloat(limit, 'g', -1, 64)
		if len(recs) != 1 || recs[0].Tags["message"] != want || recs[0].Fields["threshold"] != limit {
			t.Errorf("%s: got %+v, want message %q", cfg, recs, want)
		}
	}
}

// TestConfig compares the C module's config handling with the Go module's: the same configs are
// accepted, and the same messages logged for those refused (perch_init fails with EINVAL).
func TestConfig(t *testing.T) {
	long := strings.Repeat("x", 256)
	for _, tc := range []struct{ cfg string }{
		{cfg: `{"field":"temp","above":30}`}, {cfg: `{"field":"temp","below":30}`},
		{cfg: `{"series":"env","field":"temp","above":30,"below":0,"hysteresis":1,"hold_off":"1m","severity":"critical","message":"m"}`},
		{cfg: `{}`}, {cfg: ``}, {cfg: `null`}, {cfg: `{"field":"t"}`}, {cfg: `{"above":1}`},
		{cfg: `{"field":"t","above":1,"below":1}`}, {cfg: `{"field":"t","above":1,"below":2}`},
		{cfg: `{"field":"t","above":-0.0,"below":0}`}, {cfg: `{"field":"t","above":1e21,"below":1.5e300}`},
		{cfg: `{"field":"t","above":1e-7,"below":0.1}`}, {cfg: `{"field":"t","above":123456789,"below":1234567890}`},
		{cfg: `{"field":"t","above":1e400}`}, {cfg: `{"field":"t","above":-1e400}`}, {cfg: `{"field":"t","above":1e-400}`},
		{cfg: `{"field":"t","above":"30"}`}, {cfg: `{"field":"t","above":true}`}, {cfg: `{"field":"t","above":[30]}`},
		{cfg: `{"field":"t","above":{}}`}, {cfg: `{"field":"t","above":30,"above":null}`}, {cfg: `{"field":"t","above":null,"below":3}`},
		{cfg: `{"field":"t","above":1,"hysteresis":-1}`}, {cfg: `{"field":"t","above":1,"hysteresis":-0.0}`},
		{cfg: `{"field":"t","above":1,"hysteresis":-1e-300}`}, {cfg: `{"field":"t","above":1,"hysteresis":null}`},
		{cfg: `{"field":"t","above":1,"hysteresis":"1"}`}, {cfg: `{"field":"t","above":1,"hysteresis":1e999}`},
		{cfg: `{"field":"t","above":1,"hold_off":"5"}`}, {cfg: `{"field":"t","above":1,"hold_off":"-5s"}`},
		{cfg: `{"field":"t","above":1,"hold_off":"-0s"}`}, {cfg: `{"field":"t","above":1,"hold_off":""}`},
		{cfg: `{"field":"t","above":1,"hold_off":5}`}, {cfg: `{"field":"t","above":1,"hold_off":"1.5µs"}`},
		{cfg: `{"field":"t","above":1,"series":"` + long + `","message":"` + long + `"}`},
		{cfg: `{"field":"` + long + `","severity":"` + long + `"}`},
		{cfg: `{"field":"","above":1,"below":5,"hysteresis":-2,"hold_off":"x"}`},
		{cfg: `{"field":"t","above":1,"bogus":2}`}, {cfg: `{"Field":"t","ABOVE":1,"Hold_Off":"1s"}`},
		{cfg: `{"field":"t","above":1,"severity":3}`}, {cfg: `{"field":"t","above":1} 1`},
		{cfg: `{"field":"t","above":01}`}, {cfg: `{"field":"t","above":1,}`},
		{cfg: `{"field":"t","above":+1}`}, {cfg: `{"field":"t","above":.5}`},
		{cfg: `{"field":"t","above":NaN}`}, {cfg: `{"field":"t","above":Infinity}`},
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
	seeds := []string{`{"field":"t","above":30.5,"below":-1e3,"hysteresis":0.25}`, `{"field":"temp","below":12345678901234567890}`,
		`{"field":"t","above":1.5e-7,"hold_off":"1m30s","severity":"critical"}`, `{"field":"t","above":-0.0,"below":-2,"message":"m"}`,
		`{"series":"env","field":"x","above":1e21,"below":0.1}`, `{"field":"t","above":2.5,"hysteresis":-3.75e-5}`}
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

// TestLimits checks the C module's documented limit, where it departs from the Go package:
// records of a (source, series) past the 1024th are dropped, and the drops are logged.
func TestLimits(t *testing.T) {
	m, l := perchtest.MustLoadBuilt(t, moduleName, `{"field":"v","above":0}`)
	var recs []rec
	for i := range 1100 {
		recs = append(recs, rk(abi.KindReading, 1, fmt.Sprint("src", i), "env", "v", 1))
	}
	out, err := m.Process(context.Background(), encode(recs...))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := abi.Count(out); n != 1024 {
		t.Errorf("%d alerts, want 1024", n)
	}
	for _, w := range []string{"WARN threshold: 1 records dropped: more than 1024 (source, series) pairs", "WARN threshold: 64 records dropped"} {
		if !strings.Contains(l.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, l.String())
		}
	}
}

// BenchmarkModule: one reading through the rule, in batches of 256 from four sources that cross
// the limit every 20 records (as the Go package's BenchmarkProcess), as the C module in Wasm
// (impl=c-wasm) and as the Go reference natively (impl=go-native); ns/op is per record. Compare
// with benchstat -col /impl.
func BenchmarkModule(b *testing.B) {
	const n = 256
	const cfg = `{"field":"temp","above":30,"hysteresis":1}`
	var recs []rec
	for i := range n {
		recs = append(recs, rk(abi.KindReading, float64(i), fmt.Sprint("src", i%4), "env", "temp", float64(25+10*(i/20%2))))
	}
	batch := encode(recs...)
	run := func(b *testing.B, process func([]byte) ([]byte, error)) {
		b.ReportAllocs()
		b.ResetTimer()
		for done := 0; done < b.N; done += n {
			if _, err := process(batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
	}
	b.Run("impl=c-wasm", func(b *testing.B) {
		m, _ := perchtest.MustLoadBuilt(b, moduleName, cfg)
		run(b, func(batch []byte) ([]byte, error) { return m.Process(context.Background(), batch) })
	})
	b.Run("impl=go-native", func(b *testing.B) {
		g, err := newGo(cfg)
		if err != nil {
			b.Fatal(err)
		}
		run(b, g.Process)
	})
}
