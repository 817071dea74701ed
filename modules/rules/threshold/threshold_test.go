package threshold

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// rec is one input record with one field.
type rec struct {
	kind           abi.Kind
	tSec           float64
	source, series string
	field          string
	v              float64
}

// r is a reading of temp in series env from source a.
func r(tSec, v float64) rec { return rec{abi.KindReading, tSec, "a", "env", "temp", v} }

func encode(recs ...rec) []byte {
	var b abi.Builder
	for _, x := range recs {
		b.Begin(x.kind, int64(x.tSec*1e9), x.source, x.series)
		b.Field(x.field, x.v)
		b.Field("other", -1)
		b.End()
	}
	return b.Buf
}

// render prints an alert a line: time in seconds, source, series, fields, tags.
func render(batch []byte) []string { return renderSkip(batch, func(k, v string) bool { return false }) }

// short renders without the parts that most alerts of a TestProcess case share, to keep the
// tables readable: the empty source, severity:warning, field:temp and the message.
func short(batch []byte) []string {
	lines := renderSkip(batch, func(k, v string) bool {
		return k == "severity" && v == "warning" || k == "field" && v == "temp" || k == "message"
	})
	for i := range lines {
		lines[i] = strings.Replace(lines[i], ` src=""`, "", 1)
	}
	return lines
}

func renderSkip(batch []byte, skip func(k, v string) bool) []string {
	var lines []string
	it := abi.Iter{Buf: batch}
	for it.Next() {
		x := &it.Rec
		var sb strings.Builder
		fmt.Fprintf(&sb, "%v t=%gs src=%q series=%s", x.Kind, float64(x.TimeNS)/1e9, x.Source, x.Series)
		x.Fields(func(name []byte, v float64) { fmt.Fprintf(&sb, " %s=%g", name, v) })
		x.Tags(func(k, v []byte) {
			if !skip(string(k), string(v)) {
				fmt.Fprintf(&sb, " %s:%s", k, v)
			}
		})
		lines = append(lines, sb.String())
	}
	if it.Err() != nil {
		lines = append(lines, "error: "+it.Err().Error())
	}
	return lines
}

func f(v float64) *float64 { return &v }

func TestProcess(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		batches [][]rec
		want    []string
	}{{
		name:    "raise once and clear once",
		cfg:     Config{Field: "temp", Above: f(30)},
		batches: [][]rec{{r(1, 20), r(2, 31), r(3, 35), r(4, 31)}, {r(5, 30), r(6, 29.9), r(7, 20)}},
		want: []string{
			"alert t=2s series=env value=31 threshold=30 state:raised source:a direction:above",
			"alert t=6s series=env value=29.9 threshold=30 state:cleared source:a direction:above",
		},
	}, {
		name: "hysteresis: no storm while the value wanders around the limit",
		cfg:  Config{Field: "temp", Above: f(30), Hysteresis: 2},
		batches: [][]rec{{r(1, 30.1), r(2, 29.9), r(3, 30.2), r(4, 28.5), r(5, 31), r(6, 28),
			r(7, 27.9), r(8, 30.5), r(9, 29), r(10, 30.01)}},
		want: []string{
			"alert t=1s series=env value=30.1 threshold=30 state:raised source:a direction:above",
			"alert t=7s series=env value=27.9 threshold=30 state:cleared source:a direction:above",
			"alert t=8s series=env value=30.5 threshold=30 state:raised source:a direction:above",
		},
	}, {
		name:    "below",
		cfg:     Config{Field: "temp", Below: f(5), Hysteresis: 1},
		batches: [][]rec{{r(1, 10), r(2, 5), r(3, 4), r(4, 3), r(5, 5.5), r(6, 6.5)}},
		want: []string{
			"alert t=3s series=env value=4 threshold=5 state:raised source:a direction:below",
			"alert t=6s series=env value=6.5 threshold=5 state:cleared source:a direction:below",
		},
	}, {
		name: "hold-off: a short excursion raises nothing, a long one raises once when it has held",
		cfg:  Config{Field: "temp", Above: f(30), HoldOff: "10s"},
		batches: [][]rec{
			{r(0, 31), r(5, 32), r(9, 29)},               // 9 s beyond, then back: nothing
			{r(20, 31), r(25, 31), r(29.9, 40)},          // beyond since 20 s
			{r(30, 31), r(31, 31), r(40, 20)},            // held at 30 s: raised; cleared at once
			{r(50, 31), r(55, 29), r(56, 31), r(65, 31)}, // the dip at 55 s restarts the wait
		},
		want: []string{
			"alert t=30s series=env value=31 threshold=30 state:raised source:a direction:above",
			"alert t=40s series=env value=20 threshold=30 state:cleared source:a direction:above",
		},
	}, {
		name:    "zero hold-off raises on the first record beyond",
		cfg:     Config{Field: "temp", Above: f(30), HoldOff: "0s"},
		batches: [][]rec{{r(0, 31)}},
		want:    []string{"alert t=0s series=env value=31 threshold=30 state:raised source:a direction:above"},
	}, {
		name:    "a band: a jump across it clears one side and raises the other",
		cfg:     Config{Field: "temp", Above: f(30), Below: f(10), Hysteresis: 1},
		batches: [][]rec{{r(1, 20), r(2, 35), r(3, 5), r(4, 9.5), r(5, 12)}},
		want: []string{
			"alert t=2s series=env value=35 threshold=30 state:raised source:a direction:above",
			"alert t=3s series=env value=5 threshold=30 state:cleared source:a direction:above",
			"alert t=3s series=env value=5 threshold=10 state:raised source:a direction:below",
			"alert t=5s series=env value=12 threshold=10 state:cleared source:a direction:below",
		},
	}, {
		name: "state per source and series",
		cfg:  Config{Field: "temp", Above: f(30)},
		batches: [][]rec{{
			{abi.KindReading, 1, "a", "env", "temp", 31},
			{abi.KindReading, 2, "b", "env", "temp", 31},
			{abi.KindReading, 3, "a", "lab", "temp", 31},
			{abi.KindReading, 4, "a", "env", "temp", 32},
			{abi.KindReading, 5, "b", "env", "temp", 20},
		}},
		want: []string{
			"alert t=1s series=env value=31 threshold=30 state:raised source:a direction:above",
			"alert t=2s series=env value=31 threshold=30 state:raised source:b direction:above",
			"alert t=3s series=lab value=31 threshold=30 state:raised source:a direction:above",
			"alert t=5s series=env value=20 threshold=30 state:cleared source:b direction:above",
		},
	}, {
		name: "series filter; summaries with the exact field; other kinds and fields ignored",
		cfg:  Config{Series: "env", Field: "temp_mean", Above: f(30)},
		batches: [][]rec{{
			{abi.KindReading, 1, "a", "lab", "temp_mean", 50},
			{abi.KindReading, 2, "a", "env", "temp", 50},
			{abi.KindAlert, 3, "a", "env", "temp_mean", 50},
			{abi.KindSummary, 4, "w", "env", "temp_mean", math.NaN()},
			{abi.KindSummary, 10, "w", "env", "temp_mean", 31},
		}},
		want: []string{"alert t=10s series=env value=31 threshold=30 state:raised field:temp_mean source:w direction:above"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			th, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var out abi.Builder
			for _, b := range tc.batches {
				it := abi.Iter{Buf: encode(b...)}
				if err := th.Process(&it, &out); err != nil {
					t.Fatal(err)
				}
			}
			got := short(out.Buf)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestAlertTags(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Field: "temp", Above: f(30.5)},
			`alert t=1s src="" series=env value=31 threshold=30.5 state:raised severity:warning message:temp above 30.5 field:temp source:a direction:above`},
		{Config{Field: "temp", Below: f(40), Severity: "critical", Message: "too cold"},
			`alert t=1s src="" series=env value=31 threshold=40 state:raised severity:critical message:too cold field:temp source:a direction:below`},
	} {
		th, err := New(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		var out abi.Builder
		it := abi.Iter{Buf: encode(r(1, 31))}
		if err := th.Process(&it, &out); err != nil {
			t.Fatal(err)
		}
		if got := render(out.Buf); len(got) != 1 || got[0] != tc.want {
			t.Errorf("got %q\nwant %q", got, tc.want)
		}
	}
}

func TestNew(t *testing.T) {
	long := strings.Repeat("x", 256)
	for _, tc := range []struct {
		cfg  Config
		want []string // parts of the error, none for no error
	}{
		{Config{Field: "temp", Above: f(30)}, nil},
		{Config{Series: "env", Field: "temp", Above: f(30), Below: f(0), Hysteresis: 1, HoldOff: "1m",
			Severity: "critical", Message: "m"}, nil},
		{Config{}, []string{`field "field": is required`, `one of the fields "above" and "below" is required`}},
		{Config{Field: "t", Above: f(1), Below: f(1)}, []string{`field "below": 1 must be less than above (1)`}},
		{Config{Field: "t", Above: f(math.Inf(1))}, []string{`field "above": must be a finite number`}},
		{Config{Field: "t", Above: f(1), Hysteresis: -1}, []string{`field "hysteresis": -1 must be`}},
		{Config{Field: "t", Above: f(1), HoldOff: "5"}, []string{`field "hold_off": "5" is not a duration`}},
		{Config{Field: "t", Above: f(1), HoldOff: "-5s"}, []string{`field "hold_off": "-5s" must not be negative`}},
		{Config{Field: "t", Above: f(1), Series: long, Message: long},
			[]string{`field "series": is longer than 255 bytes`, `field "message": is longer`}},
	} {
		_, err := New(tc.cfg)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("New(%+v): %v", tc.cfg, err)
			}
			continue
		}
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v): error %v, want one containing %q", tc.cfg, err, w)
			}
		}
	}
}

func TestProcessAllocatesNothing(t *testing.T) {
	th, err := New(Config{Field: "temp", Above: f(30), Hysteresis: 1, HoldOff: "2s"})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 40) // longer than the compiler's 32-byte string buffers
	var recs []rec
	for i := range 400 {
		v := 25.0
		if i%40 >= 20 { // 20 s beyond the limit in every 40 s: raised and cleared each cycle
			v = 35
		}
		recs = append(recs, rec{abi.KindReading, float64(i), fmt.Sprint("src", i%4, long),
			"env" + long, "temp", v})
	}
	batch := encode(recs...)
	var out abi.Builder
	it := abi.Iter{Buf: batch}
	if err := th.Process(&it, &out); err != nil {
		t.Fatal(err)
	}
	// Per source: 10 raises, and 9 clears (the last excursion lasts to the end of the batch).
	if n, _ := abi.Count(out.Buf); n != 4*19 {
		t.Fatalf("%d alerts, want %d", n, 4*19)
	}
	allocs := testing.AllocsPerRun(50, func() {
		out.Buf = out.Buf[:0]
		it := abi.Iter{Buf: batch}
		if err := th.Process(&it, &out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Process allocates %v times per batch of %d", allocs, len(recs))
	}
}

// TestGolden runs six hours of a noisy temperature (a one-hour cycle between 17 and 33 °C, one
// reading every 10 s, uniform noise of ±1.5 °C) from two sensors through the rule and compares the
// alerts with testdata/alerts.golden (go test -update rewrites it). Hysteresis and hold-off keep
// it to one raise and one clear per cycle and sensor although the noise crosses the limit
// many times.
func TestGolden(t *testing.T) {
	th, err := New(Config{Series: "env", Field: "temp", Above: f(30), Hysteresis: 2, HoldOff: "30s"})
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(1)
	noise := func() float64 { // a fixed LCG, so that the data never changes
		seed = seed*6364136223846793005 + 1442695040888963407
		return 3 * (float64(seed>>11)/(1<<53) - 0.5)
	}
	var out abi.Builder
	crossings := 0
	prev := [2]bool{}
	for batch := range 36 { // 10 minutes per batch
		var recs []rec
		for i := range 60 {
			s := float64(batch*600 + i*10)
			for k, src := range []string{"bme280-0", "bme280-1"} {
				v := 25 + 8*math.Sin(2*math.Pi*(s/3600+0.1*float64(k))) + noise()
				recs = append(recs, rec{abi.KindReading, s, src, "env", "temp", math.Round(v*100) / 100})
				if (v > 30) != prev[k] {
					crossings++
					prev[k] = v > 30
				}
			}
		}
		it := abi.Iter{Buf: encode(recs...)}
		if err := th.Process(&it, &out); err != nil {
			t.Fatal(err)
		}
	}
	lines := render(out.Buf)
	if len(lines) > 2*2*6 || crossings < 4*len(lines) {
		t.Errorf("%d alerts for %d crossings of the limit", len(lines), crossings)
	}
	got := strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", "alerts.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("alerts differ from %s (go test -update rewrites it); got:\n%s", path, got)
	}
}

// FuzzProcess feeds arbitrary batches: Process must not panic, and what it writes must decode.
func FuzzProcess(f *testing.F) {
	f.Add(encode(r(1, 31), r(2, 20), r(3, 0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		lo, hi := 0.0, 30.0
		th, _ := New(Config{Field: "temp", Above: &hi, Below: &lo, Hysteresis: 1, HoldOff: "1s"})
		var out abi.Builder
		it := abi.Iter{Buf: b}
		_ = th.Process(&it, &out)
		if _, err := abi.Count(out.Buf); err != nil {
			t.Fatalf("output does not decode: %v", err)
		}
	})
}

// BenchmarkProcess measures one batch of 1000 readings from four sources that cross the limit
// every 20 records.
func BenchmarkProcess(b *testing.B) {
	th, _ := New(Config{Field: "temp", Above: f(30), Hysteresis: 1})
	var recs []rec
	for i := range 1000 {
		recs = append(recs, rec{abi.KindReading, float64(i), fmt.Sprint("src", i%4), "env", "temp",
			float64(25 + 10*(i/20%2))})
	}
	batch := encode(recs...)
	var out abi.Builder
	b.ReportAllocs()
	for b.Loop() {
		out.Buf = out.Buf[:0]
		it := abi.Iter{Buf: batch}
		if err := th.Process(&it, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}
