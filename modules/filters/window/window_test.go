package window

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

const sec = int64(1e9)

// rec is one input record: fields alternate name, value.
type rec struct {
	kind           abi.Kind
	t              int64 // ns
	source, series string
	fields         []any
}

func reading(tSec float64, source, series string, fields ...any) rec {
	return rec{abi.KindReading, int64(tSec * 1e9), source, series, fields}
}

func encode(recs ...rec) []byte {
	var b abi.Builder
	for _, r := range recs {
		b.Begin(r.kind, r.t, r.source, r.series)
		for i := 0; i < len(r.fields); i += 2 {
			b.Field(r.fields[i].(string), toFloat(r.fields[i+1]))
		}
		b.End()
	}
	return b.Buf
}

func toFloat(v any) float64 {
	switch v := v.(type) {
	case int:
		return float64(v)
	case float64:
		return v
	}
	panic(fmt.Sprintf("field value %T", v))
}

// render prints a batch one record a line: kind, time in seconds, source, series, fields, tags.
func render(batch []byte) []string {
	var lines []string
	it := abi.Iter{Buf: batch}
	for it.Next() {
		r := &it.Rec
		var sb strings.Builder
		fmt.Fprintf(&sb, "%v t=%gs src=%q series=%s", r.Kind, float64(r.TimeNS)/1e9, r.Source, r.Series)
		r.Fields(func(name []byte, v float64) { fmt.Fprintf(&sb, " %s=%.6g", name, v) })
		r.Tags(func(k, v []byte) { fmt.Fprintf(&sb, " %s:%s", k, v) })
		lines = append(lines, sb.String())
	}
	if it.Err() != nil {
		lines = append(lines, "error: "+it.Err().Error())
	}
	return lines
}

// run feeds each batch to a new Window and returns the rendered output of all of them.
func run(t *testing.T, cfg Config, batches ...[]rec) []string {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out abi.Builder
	for _, b := range batches {
		it := abi.Iter{Buf: encode(b...)}
		if err := w.Process(&it, &out); err != nil {
			t.Fatal(err)
		}
	}
	return render(out.Buf)
}

func TestProcess(t *testing.T) {
	std := math.Sqrt(1.25) // population std dev of 1, 2, 3, 4
	for _, tc := range []struct {
		name    string
		cfg     Config
		batches [][]rec
		want    []string
	}{{
		name: "aggregates exactly",
		cfg:  Config{Window: "10s"},
		batches: [][]rec{{
			reading(0, "a", "env", "temp", 1), reading(2, "a", "env", "temp", 4),
			reading(5, "a", "env", "temp", 2), reading(9, "a", "env", "temp", 3),
			reading(10, "a", "env", "temp", 100),
		}},
		want: []string{fmt.Sprintf(`summary t=10s src="" series=env temp_count=4 temp_mean=2.5 temp_min=1 temp_max=4 temp_std=%.6g window:10s source:a`, std)},
	}, {
		name: "a window closes only when a record reaches its end",
		cfg:  Config{Window: "10s"},
		batches: [][]rec{
			{reading(0, "a", "env", "temp", 1)},
			{reading(9.999999999, "a", "env", "temp", 3)},
			{reading(10, "a", "env", "temp", 5)},
			{reading(19.999999999, "a", "env", "temp", 7)},
		},
		want: []string{`summary t=10s src="" series=env temp_count=2 temp_mean=2 temp_min=1 temp_max=3 temp_std=1 window:10s source:a`},
	}, {
		name: "windows are aligned to multiples of the length",
		cfg:  Config{Window: "10s"},
		batches: [][]rec{{
			reading(13, "a", "env", "temp", 1), reading(19, "a", "env", "temp", 1),
			reading(20, "a", "env", "temp", 1),
		}},
		want: []string{`summary t=20s src="" series=env temp_count=2 temp_mean=1 temp_min=1 temp_max=1 temp_std=0 window:10s source:a`},
	}, {
		name: "negative times align downwards",
		cfg:  Config{Window: "10s"},
		batches: [][]rec{{
			reading(-5, "a", "env", "temp", 1), reading(0, "a", "env", "temp", 1),
		}},
		want: []string{`summary t=0s src="" series=env temp_count=1 temp_mean=1 temp_min=1 temp_max=1 temp_std=0 window:10s source:a`},
	}, {
		name: "every field and every (source, series), in order of first appearance",
		cfg:  Config{Window: "1m"},
		batches: [][]rec{{
			reading(1, "b", "env", "temp", 20, "hum", 40),
			reading(2, "a", "env", "temp", 10),
			reading(3, "b", "power", "watts", 5),
			reading(4, "b", "env", "hum", 60, "temp", 22),
		}, {
			reading(61, "a", "env", "temp", 0),
		}},
		want: []string{
			`summary t=60s src="" series=env temp_count=2 temp_mean=21 temp_min=20 temp_max=22 temp_std=1 hum_count=2 hum_mean=50 hum_min=40 hum_max=60 hum_std=10 window:1m source:b`,
			`summary t=60s src="" series=env temp_count=1 temp_mean=10 temp_min=10 temp_max=10 temp_std=0 window:1m source:a`,
			`summary t=60s src="" series=power watts_count=1 watts_mean=5 watts_min=5 watts_max=5 watts_std=0 window:1m source:b`,
		},
	}, {
		name: "a series or field without readings in a window is left out",
		cfg:  Config{Window: "10s"},
		batches: [][]rec{{
			reading(1, "a", "env", "temp", 1, "hum", 2),
			reading(2, "a", "other", "x", 1),
			reading(11, "a", "env", "temp", 3),
			reading(21, "a", "env", "temp", 0),
		}},
		want: []string{
			`summary t=10s src="" series=env temp_count=1 temp_mean=1 temp_min=1 temp_max=1 temp_std=0 hum_count=1 hum_mean=2 hum_min=2 hum_max=2 hum_std=0 window:10s source:a`,
			`summary t=10s src="" series=other x_count=1 x_mean=1 x_min=1 x_max=1 x_std=0 window:10s source:a`,
			`summary t=20s src="" series=env temp_count=1 temp_mean=3 temp_min=3 temp_max=3 temp_std=0 window:10s source:a`,
		},
	}, {
		name: "a jump over empty windows emits only the window with data",
		cfg:  Config{Window: "10s"},
		batches: [][]rec{{
			reading(5, "a", "env", "temp", 1), reading(75, "a", "env", "temp", 2),
			reading(79, "a", "env", "temp", 4), reading(80, "a", "env", "temp", 0),
		}},
		want: []string{
			`summary t=10s src="" series=env temp_count=1 temp_mean=1 temp_min=1 temp_max=1 temp_std=0 window:10s source:a`,
			`summary t=80s src="" series=env temp_count=2 temp_mean=3 temp_min=2 temp_max=4 temp_std=1 window:10s source:a`,
		},
	}, {
		name: "late readings are ignored",
		cfg:  Config{Window: "10s"},
		batches: [][]rec{{
			reading(5, "a", "env", "temp", 1), reading(12, "a", "env", "temp", 2),
			reading(9, "a", "env", "temp", 1000), reading(20, "a", "env", "temp", 0),
		}},
		want: []string{
			`summary t=10s src="" series=env temp_count=1 temp_mean=1 temp_min=1 temp_max=1 temp_std=0 window:10s source:a`,
			`summary t=20s src="" series=env temp_count=1 temp_mean=2 temp_min=2 temp_max=2 temp_std=0 window:10s source:a`,
		},
	}, {
		name: "series filter, other kinds and non-finite values are ignored",
		cfg:  Config{Window: "10s", Series: "env"},
		batches: [][]rec{{
			reading(1, "a", "env", "temp", 1, "bad", math.NaN()),
			reading(2, "a", "power", "watts", 5),
			{abi.KindAlert, 3 * sec, "a", "env", []any{"temp", 99}},
			{abi.KindSummary, 4 * sec, "a", "env", []any{"temp", 99}},
			reading(5, "a", "env", "temp", math.Inf(1)),
			reading(100, "a", "power", "watts", 5),
			reading(15, "a", "env", "temp", 0),
		}},
		want: []string{`summary t=10s src="" series=env temp_count=1 temp_mean=1 temp_min=1 temp_max=1 temp_std=0 window:10s source:a`},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := run(t, tc.cfg, tc.batches...)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestFlushAndLate(t *testing.T) {
	w, _ := New(Config{Window: "10s"})
	var out abi.Builder
	it := abi.Iter{Buf: encode(reading(1, "a", "env", "temp", 1))}
	if err := w.Process(&it, &out); err != nil || len(out.Buf) != 0 {
		t.Fatalf("Process: %v, %d bytes out", err, len(out.Buf))
	}
	w.Flush(&out)
	if got := render(out.Buf); len(got) != 1 || !strings.HasPrefix(got[0], `summary t=10s src="" series=env temp_count=1 `) {
		t.Fatalf("Flush wrote %q", got)
	}
	out.Buf = out.Buf[:0]
	it = abi.Iter{Buf: encode(reading(2, "a", "env", "temp", 1), reading(12, "a", "env", "temp", 1))}
	if err := w.Process(&it, &out); err != nil || len(out.Buf) != 0 || w.Late() != 1 {
		t.Fatalf("after Flush: %v, %d bytes out, %d late", err, len(out.Buf), w.Late())
	}
}

func TestProcessBadBatch(t *testing.T) {
	w, _ := New(Config{Window: "10s"})
	b := encode(reading(1, "a", "env", "temp", 1), reading(11, "a", "env", "temp", 1))
	var out abi.Builder
	it := abi.Iter{Buf: b[:len(b)-1]}
	if err := w.Process(&it, &out); err == nil {
		t.Fatal("Process accepted a truncated batch")
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // a part of each error line, "" for no error
	}{
		{Config{Window: "10s"}, ""},
		{Config{Window: "1h30m", Series: "env"}, ""},
		{Config{}, `field "window" is required`},
		{Config{Window: "10"}, `field "window": "10" is not a duration`},
		{Config{Window: "-1s"}, `field "window": "-1s" must be positive`},
		{Config{Window: "0s", Series: strings.Repeat("x", 256)}, "must be positive\nwindow: field \"series\" is longer than 255 bytes"},
	} {
		_, err := New(tc.cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("New(%+v): %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("New(%+v): error %v, want one containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestProcessAllocatesNothing(t *testing.T) {
	w, _ := New(Config{Window: "10s"})
	// Three (source, series) with two fields each; long names, as string(b) of up to 32 bytes
	// would not allocate anyway.
	long := strings.Repeat("x", 40)
	var recs []rec
	for i := range 300 {
		recs = append(recs, reading(float64(i)/10, "source-"+long, fmt.Sprint("series-", i%3, long),
			"temperature_"+long, float64(i), "humidity_"+long, float64(i%7)))
	}
	batch := encode(recs...)
	var out abi.Builder
	it := abi.Iter{Buf: batch}
	if err := w.Process(&it, &out); err != nil { // see every series, grow out
		t.Fatal(err)
	}
	shift := int64(0)
	allocs := testing.AllocsPerRun(50, func() {
		// Move the batch 30 s on each run, so that windows keep closing.
		shift += 30 * sec
		it := abi.Iter{Buf: batch}
		for it.Next() {
			shiftTime(batch[it.Off:], 30*sec)
		}
		out.Buf = out.Buf[:0]
		it = abi.Iter{Buf: batch}
		if err := w.Process(&it, &out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Process allocates %v times per batch of %d", allocs, len(recs))
	}
	if n, _ := abi.Count(out.Buf); n == 0 {
		t.Errorf("no summaries in the last run")
	}
}

// shiftTime adds d to the time of the record at the start of b.
func shiftTime(b []byte, d int64) {
	t := int64(0)
	for i := 7; i >= 0; i-- {
		t = t<<8 | int64(b[8+i])
	}
	t += d
	for i := range 8 {
		b[8+i] = byte(t >> (8 * i))
	}
}

// TestGolden runs two hours of synthetic data from three sensors through 1-minute windows and
// compares the summaries with testdata/summaries.golden (go test -update rewrites it).
func TestGolden(t *testing.T) {
	w, err := New(Config{Window: "1m"})
	if err != nil {
		t.Fatal(err)
	}
	var out abi.Builder
	for batch := range 120 {
		var recs []rec
		for i := range 60 { // 60 s per batch, one reading per second per sensor
			s := float64(batch*60 + i)
			recs = append(recs,
				reading(s, "bme280-0", "env", "temp", 20+5*math.Sin(s/600), "hum", 50+float64(int(s)%13)),
				reading(s+0.5, "bme280-1", "env", "temp", 18+0.01*s),
			)
			if i%10 == 0 {
				recs = append(recs, reading(s, "meter", "power", "watts", 100+float64(int(s)%7)*3))
			}
		}
		it := abi.Iter{Buf: encode(recs...)}
		if err := w.Process(&it, &out); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush(&out)
	got := strings.Join(render(out.Buf), "\n") + "\n"
	path := filepath.Join("testdata", "summaries.golden")
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
		t.Errorf("summaries differ from %s (go test -update rewrites it); got:\n%s", path, got[:min(len(got), 2000)])
	}
}

// FuzzProcess feeds arbitrary batches: Process must not panic, and what it writes must decode.
func FuzzProcess(f *testing.F) {
	f.Add(encode(reading(1, "a", "env", "temp", 1), reading(11, "a", "env", "temp", 2)))
	f.Add(encode(reading(-1e9, "", "", "", 1), reading(1e9, "b", "x", "y", math.NaN())))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, _ := New(Config{Window: "3s"})
		var out abi.Builder
		it := abi.Iter{Buf: b}
		_ = w.Process(&it, &out)
		w.Flush(&out)
		if _, err := abi.Count(out.Buf); err != nil {
			t.Fatalf("output does not decode: %v", err)
		}
	})
}

// BenchmarkProcess measures one batch of 1000 readings (three fields each) from four sources,
// including moving the batch 100 s on each run so that windows keep closing.
func BenchmarkProcess(b *testing.B) {
	w, _ := New(Config{Window: "10s"})
	var recs []rec
	for i := range 1000 {
		recs = append(recs, reading(float64(i)/10, fmt.Sprint("src", i%4), "environment",
			"temperature_c", float64(i%30), "pressure_hpa", 1013, "humidity_pct", 45))
	}
	batch := encode(recs...)
	var out abi.Builder
	b.ReportAllocs()
	for b.Loop() {
		for it := (abi.Iter{Buf: batch}); it.Next(); {
			shiftTime(batch[it.Off:], 100*sec)
		}
		out.Buf = out.Buf[:0]
		it := abi.Iter{Buf: batch}
		if err := w.Process(&it, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}
