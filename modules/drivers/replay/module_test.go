package replay_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/replay"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The replay driver module is written in C (wasm/replay.c, built by make modules). These tests
// run it in the real engine over hal/replay's Device on a UART port: every row becomes one
// reading with exactly the row's time and values, whatever the reads cut, and every corrupt line
// comes back as EIO with the good rows around it still read.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) ns() int64 { return c.now().UnixNano() }
func (c *clock) set(d time.Duration) {
	c.mu.Lock()
	c.t = epoch.Add(d)
	c.mu.Unlock()
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	return nil
}
func (l *logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logs) WithGroup(string) slog.Handler      { return l }
func (l *logs) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

const port = "replay0"

var grant = config.Grants{UART: []config.UARTGrant{{Port: port}}, State: true}

// provider is the smallest hal.Provider: one UART port.
type provider struct {
	name string
	u    hal.UART
}

func (p provider) I2CBus(int) (hal.I2C, error)       { return nil, hal.ErrNoDevice }
func (p provider) SPIPort(int, int) (hal.SPI, error) { return nil, hal.ErrNoDevice }
func (p provider) GPIOLine(int) (hal.GPIO, error)    { return nil, hal.ErrNoDevice }
func (p provider) UARTPort(name string) (hal.UART, error) {
	if name != p.name {
		return nil, hal.ErrNoDevice
	}
	return p.u, nil
}

// chunky hands out at most n bytes per read, so that lines are split across reads.
type chunky struct {
	hal.UART
	n int
}

func (c chunky) Read(ctx context.Context, p []byte) (int, error) {
	return c.UART.Read(ctx, p[:min(len(p), c.n)])
}

// script is a UART that sends fixed bytes, then nothing.
type script struct {
	mu  sync.Mutex
	out []byte
	err error
}

func (s *script) Read(_ context.Context, p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}
func (s *script) Write(_ context.Context, p []byte) (int, error) { return len(p), nil }

// load loads the built module on the port u. Its state is st[0] if given (nil: no state, state
// calls get ENOSYS), else a fresh in-memory store.
func load(t testing.TB, cfg map[string]any, grants config.Grants, u hal.UART, clk *clock, st ...runtime.StateStore) (*runtime.Module, *logs, error) {
	t.Helper()
	var state runtime.StateStore = &perchtest.MemState{}
	if len(st) > 0 {
		state = st[0]
	}
	path := perchtest.Built(t, "replay")
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := config.LoadManifest(config.ManifestPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil {
		cfg = map[string]any{"port": port}
	}
	raw, _ := json.Marshal(cfg)
	l := &logs{}
	m, err := runtime.LoadModule(context.Background(), runtime.ModuleOptions{
		Binary: bin, Manifest: mf, Config: raw, Grants: grants, HAL: provider{port, u}, State: state, Logger: slog.New(l), Now: clk.ns,
		CacheDir: filepath.Join(os.TempDir(), "perchtest-cache"),
		// These tests check what is read, not how fast: a loaded 2-core box must not fail them.
		// (Rows of 17-digit values cost tens of µs each: see README.md, Performance.)
		Deadline: 5 * time.Second,
	})
	if err == nil {
		t.Cleanup(func() { m.Close(context.Background()) })
	}
	return m, l, err
}

func errnoOf(err error) abi.Errno {
	var ee *runtime.ErrnoError
	if errors.As(err, &ee) {
		return ee.Errno
	}
	return 0
}

// rows decodes the driver's readings into table rows, checking their shape, and counts the
// replay.eof events.
func rows(t testing.TB, out []byte, series string, cols []string) ([]replay.Row, int) {
	t.Helper()
	var got []replay.Row
	eofs := 0
	for _, r := range perchtest.Decode(out) {
		if r.Kind == abi.KindEvent && r.Series == "replay.eof" {
			eofs++
			continue
		}
		if r.Kind != abi.KindReading || r.Series != series || len(r.Fields) != len(cols) {
			t.Fatalf("record %+v", r)
		}
		row := replay.Row{TimeNS: r.TimeNS}
		for _, c := range cols {
			v, ok := r.Fields[c]
			if !ok {
				t.Fatalf("record %+v has no field %q", r, c)
			}
			row.Values = append(row.Values, v)
		}
		got = append(got, row)
	}
	return got, eofs
}

func sameBits(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || math.IsNaN(a) && math.IsNaN(b)
}

func checkRows(t *testing.T, got, want []replay.Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].TimeNS != want[i].TimeNS {
			t.Fatalf("row %d: time %d, want %d", i, got[i].TimeNS, want[i].TimeNS)
		}
		for j := range want[i].Values {
			if !sameBits(got[i].Values[j], want[i].Values[j]) {
				t.Fatalf("row %d column %d: %v (%#x), want %v (%#x)", i, j, got[i].Values[j],
					math.Float64bits(got[i].Values[j]), want[i].Values[j], math.Float64bits(want[i].Values[j]))
			}
		}
	}
}

// hardTable has values that stress the number parser: every kind of float64 (random bits,
// subnormals, extremes, 17-digit ones, integers beyond 2^53, NaN, infinities, -0) and the
// short decimals sensors give, under names with spaces and up to 255 bytes.
func hardTable(n int) *replay.Table {
	rng := rand.New(rand.NewPCG(1, 2))
	cols := []string{"a", "Volume Flow RateRMS", strings.Repeat("x", 255), "d"}
	special := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64,
		-math.SmallestNonzeroFloat64, 2.2250738585072014e-308, 0.1, 1.0 / 3, 9007199254740993, 1e23, 123456789012345678}
	t := &replay.Table{Columns: cols}
	for i := range n {
		r := replay.Row{TimeNS: 1583748873000000000 + int64(i)*1e9 - int64(i%3)*7}
		for j := range cols {
			var v float64
			switch j {
			case 0:
				v = math.Float64frombits(rng.Uint64())
			case 1:
				v = special[i%len(special)]
			case 2:
				v = math.Round(rng.NormFloat64()*1e6) / 1e6 // sensor-like: few digits
			default:
				v = float64(i)
			}
			r.Values = append(r.Values, v)
		}
		t.Rows = append(t.Rows, r)
	}
	return t
}

// TestModuleExact plays a table at speed 0 through reads cut at several sizes and polls of
// several sizes: every row becomes one reading with its exact time and values, in order, and
// the end comes as one replay.eof event.
func TestModuleExact(t *testing.T) {
	tab := hardTable(600)
	for _, tc := range []struct {
		chunk, max int
	}{{1, 1}, {7, 5}, {100, 64}, {1 << 20, 1000}} {
		t.Run(strconv.Itoa(tc.chunk)+"x"+strconv.Itoa(tc.max), func(t *testing.T) {
			clk := &clock{t: epoch}
			dev, err := replay.NewDevice(tab, replay.Options{Clock: clk.now})
			if err != nil {
				t.Fatal(err)
			}
			m, l, err := load(t, map[string]any{"port": port, "series": "pump"}, grant, chunky{dev, tc.chunk}, clk)
			if err != nil {
				t.Fatalf("%v\n%s", err, l.all())
			}
			var got []replay.Row
			eofs := 0
			for polls := 0; eofs == 0; polls++ {
				if polls > 100000 {
					t.Fatal("no end")
				}
				out, err := m.Poll(context.Background(), tc.max)
				if err != nil {
					t.Fatalf("%v\n%s", err, l.all())
				}
				r, e := rows(t, out, "pump", tab.Columns)
				if len(r)+e > tc.max {
					t.Fatalf("%d records from a poll of max %d", len(r)+e, tc.max)
				}
				got, eofs = append(got, r...), eofs+e
			}
			checkRows(t, got, tab.Rows)
			if !strings.Contains(l.all(), "INFO end of recording after 600 rows") {
				t.Errorf("logs:\n%s", l.all())
			}
			out, _ := m.Poll(context.Background(), 10)
			if r, e := rows(t, out, "pump", tab.Columns); len(r) != 0 || e != 0 {
				t.Errorf("after the end: %d rows, %d ends", len(r), e)
			}
		})
	}
}

// TestModulePace: at the recorded pace, each row is read once its time has come, at its
// recorded time.
func TestModulePace(t *testing.T) {
	tab := &replay.Table{Columns: []string{"v"}, Rows: []replay.Row{
		{TimeNS: 1e18, Values: []float64{1}}, {TimeNS: 1e18 + 2e9, Values: []float64{2}}, {TimeNS: 1e18 + 5e9, Values: []float64{3}},
	}}
	clk := &clock{t: epoch}
	dev, _ := replay.NewDevice(tab, replay.Options{Speed: 2, Clock: clk.now})
	m, l, err := load(t, nil, grant, dev, clk)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.all())
	}
	var n []int
	for _, at := range []time.Duration{0, 999 * time.Millisecond, time.Second, 2 * time.Second, 2500 * time.Millisecond} {
		clk.set(at)
		out, err := m.Poll(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		r, e := rows(t, out, "replay", tab.Columns)
		n = append(n, len(r)+10*e)
		for _, x := range r {
			if want := tab.Rows[int(x.Values[0])-1].TimeNS; x.TimeNS != want {
				t.Errorf("row %v at %d, want %d", x.Values[0], x.TimeNS, want)
			}
		}
	}
	if want := []int{1, 0, 1, 0, 11}; !slicesEqual(n, want) {
		t.Errorf("rows per poll %v, want %v (10 per end)", n, want)
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestModuleRestart: a new instance that starts in the middle of a replay resumes at the row
// after the last one the old instance handed on (its position, kept in state): no row is lost or
// repeated, whatever the old instance had read and not handled. After the end, a restart reads
// nothing more and does not report the end again.
func TestModuleRestart(t *testing.T) {
	tab := hardTable(50)
	clk := &clock{t: epoch}
	dev, _ := replay.NewDevice(tab, replay.Options{Clock: clk.now})
	st := &perchtest.MemState{}
	var got []replay.Row
	// Instances that each read 1000 bytes (the header, three rows and part of the next ones)
	// and hand on up to three rows.
	for range 4 {
		m, l, err := load(t, nil, grant, chunky{dev, 1000}, clk, st)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.all())
		}
		out, err := m.Poll(context.Background(), 3)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.all())
		}
		r, _ := rows(t, out, "replay", tab.Columns)
		got = append(got, r...)
		m.Close(context.Background())
	}
	if len(got) != 12 {
		t.Fatalf("%d rows from four instances", len(got))
	}
	if v, ok, _ := st.GetState(context.Background(), "replay", "position"); !ok || string(v) != "12" {
		t.Errorf("position %q (%v), want 12", v, ok)
	}
	last, l, err := load(t, nil, grant, chunky{dev, 1000}, clk, st)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.all())
	}
	for eofs := 0; eofs == 0; {
		out, err := last.Poll(context.Background(), 100)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.all())
		}
		r, e := rows(t, out, "replay", tab.Columns)
		got, eofs = append(got, r...), e
	}
	checkRows(t, got, tab.Rows)
	if !strings.Contains(l.all(), "end of recording after 50 rows") {
		t.Errorf("log:\n%s", l.all())
	}
	last.Close(context.Background())
	if v, _, _ := st.GetState(context.Background(), "replay", "position"); string(v) != "50 eof" {
		t.Errorf("position %q, want 50 eof", v)
	}
	after, l, err := load(t, nil, grant, chunky{dev, 1000}, clk, st)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.all())
	}
	for range 3 {
		out, err := after.Poll(context.Background(), 100)
		if err != nil || len(out) != 0 {
			t.Fatalf("after the end: %d bytes, %v\n%s", len(out), err, l.all())
		}
	}

	// A bad saved value: a warning, and the replay starts over.
	bad := &perchtest.MemState{}
	bad.SetState(context.Background(), "replay", "position", []byte("12 eo"))
	dev2, _ := replay.NewDevice(tab, replay.Options{Clock: clk.now})
	m, l, err := load(t, nil, grant, dev2, clk, bad)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.all())
	}
	out, err := m.Poll(context.Background(), 100)
	if r, _ := rows(t, out, "replay", tab.Columns); err != nil || len(r) != 50 {
		t.Errorf("after a bad position: %d rows, %v", len(r), err)
	}
	if want := `WARN perch_init: replay: read position: bad value "12 eo"; starting from row 0`; !strings.Contains(l.all(), want) {
		t.Errorf("log lacks %q:\n%s", want, l.all())
	}
}

// TestModuleRestartNoState: without a state store (state calls get ENOSYS) the driver warns and
// falls back to asking for the header: a new instance reads on from the next whole row, and the
// rows the old one had read and not handed on are lost.
func TestModuleRestartNoState(t *testing.T) {
	tab := hardTable(50)
	clk := &clock{t: epoch}
	dev, _ := replay.NewDevice(tab, replay.Options{Clock: clk.now})
	first, l, err := load(t, nil, grant, chunky{dev, 1000}, clk, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.all())
	}
	if want := "WARN perch_init: replay: read position: perch: ENOSYS; a restart will resume where the device is"; !strings.Contains(l.all(), want) {
		t.Errorf("log lacks %q:\n%s", want, l.all())
	}
	out, err := first.Poll(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := rows(t, out, "replay", tab.Columns)
	first.Close(context.Background())
	// The first instance read 1000 bytes: three rows and part of the ones after.
	second, l, err := load(t, nil, grant, chunky{dev, 1000}, clk, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.all())
	}
	var rest []replay.Row
	for eofs := 0; eofs == 0; {
		out, err := second.Poll(context.Background(), 100)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.all())
		}
		r, e := rows(t, out, "replay", tab.Columns)
		rest, eofs = append(rest, r...), e
	}
	// Lost: the rows the first instance read but did not emit, and the one cut at byte 1000.
	// The second reads on from the first row that starts after byte 1000.
	fresh, _ := replay.NewDevice(tab, replay.Options{})
	stream := make([]byte, 1<<20)
	n, _ := fresh.Read(context.Background(), stream)
	next := strings.Count(string(stream[:min(n, 1000)]), "\n") // header and whole rows
	if stream[999] == '\n' {
		next-- // the row ends exactly at the cut: nothing cut
	}
	if len(got) != 3 || next <= 3 {
		t.Fatalf("%d rows, then the second instance from row %d", len(got), next)
	}
	checkRows(t, append(got, rest...), append(tab.Rows[:3:3], tab.Rows[next:]...))
}

// TestModuleCorrupt: corrupt lines fail the poll with EIO and a log naming the first; the good
// rows around them are read.
func TestModuleCorrupt(t *testing.T) {
	long := strings.Repeat("9", 70000)
	tests := []struct {
		name string
		in   string
		good []float64 // values of the rows read
		log  string
	}{
		{"bad number", "#perch-replay v1 a,b\n1,1,2\n2,1,x\n3,3,4\n", []float64{1, 2, 3, 4},
			`replay: 1 corrupt line (row 2: column "b": want a number, got "x")`},
		{"bad time", "#perch-replay v1 a\n1.5,1\n2,2\n", []float64{2}, `row 1: time: want an integer, got "1.5"`},
		{"too few", "#perch-replay v1 a,b\n1,1\n2,2,2\n", []float64{2, 2}, `row 1: fewer values than the 2 columns`},
		{"too many", "#perch-replay v1 a\n1,1,1\n2,2\n", []float64{2}, `row 1: more values than the 1 columns`},
		{"several", "#perch-replay v1 a\n1,\n2,--1\n3,3\n", []float64{3}, `replay: 2 corrupt lines (first: row 1: column "a": want a number, got "")`},
		{"row before the header", "#loop 1\n1,1\n#perch-replay v1 a\n2,2\n", []float64{2}, `a row before the header: "1,1"`},
		{"other version", "#perch-replay v2 a\n1,1\n", nil, `unknown protocol version: "#perch-replay v2 a"`},
		{"empty name", "#perch-replay v1 a,,b\n1,1,1,1\n", nil, `header: a column name must have 1 to 255 bytes`},
		{"too long", "#perch-replay v1 a\n1," + long + "\n2,2\n", []float64{2}, `a line longer than 65535 bytes`},
		{"crlf and comments", "#perch-replay v1 a\r\n#note\r\n1,1e3\r\n", []float64{1000}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: epoch}
			m, l, err := load(t, nil, grant, &script{out: []byte(tt.in)}, clk)
			if err != nil {
				t.Fatalf("%v\n%s", err, l.all())
			}
			var vals []float64
			var errno abi.Errno
			for range 3 {
				out, err := m.Poll(context.Background(), 100)
				if err != nil && errnoOf(err) == 0 {
					t.Fatalf("%v (a fault, not an errno)", err)
				}
				if errnoOf(err) != 0 {
					errno = errnoOf(err)
				}
				for _, r := range perchtest.Decode(out) {
					for _, c := range []string{"a", "b"} {
						if v, ok := r.Fields[c]; ok {
							vals = append(vals, v)
						}
					}
				}
			}
			if !floatsEqual(vals, tt.good) {
				t.Errorf("values %v, want %v", vals, tt.good)
			}
			if tt.log == "" {
				if errno != 0 {
					t.Errorf("errno %v\n%s", errno, l.all())
				}
				return
			}
			if errno != abi.EIO || !strings.Contains(l.all(), tt.log) {
				t.Errorf("errno %v, logs:\n%s\nwant EIO and %s", errno, l.all(), tt.log)
			}
		})
	}
}

func floatsEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestModuleErrors: a failing port is an errno for the poll; an ungranted port and bad config
// fail perch_init.
func TestModuleErrors(t *testing.T) {
	clk := &clock{t: epoch}
	s := &script{err: hal.ErrTimeout}
	m, l, err := load(t, nil, grant, s, clk)
	if err != nil {
		t.Fatalf("%v\n%s", err, l.all())
	}
	if _, err := m.Poll(context.Background(), 1); errnoOf(err) != abi.ETIMEDOUT || !strings.Contains(l.all(), "replay: read: perch: ETIMEDOUT") {
		t.Errorf("poll: %v\n%s", err, l.all())
	}
	for _, tc := range []struct {
		name   string
		cfg    map[string]any
		grants config.Grants
		log    string
	}{
		{"other port", map[string]any{"port": "replay1"}, grant, "replay: seek command: perch: EPERM"},
		{"no state grant", nil, config.Grants{UART: grant.UART}, "the module needs state and it is not granted"},
		{"unknown field", map[string]any{"speed": 2}, grant, `unknown field "speed"`},
		{"empty port", map[string]any{"port": ""}, grant, `config: port: want a port name of 1 to 255 bytes, got ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, l, err := load(t, tc.cfg, tc.grants, &script{}, clk)
			if err == nil || !strings.Contains(err.Error()+"\n"+l.all(), tc.log) {
				t.Errorf("init: %v\n%s\nwant %s", err, l.all(), tc.log)
			}
		})
	}
}

// FuzzModuleLines feeds the module arbitrary bytes, cut into reads of arbitrary sizes: a poll
// may fail with an errno (EIO for corrupt lines), but the module never faults, and never emits
// more than max records.
func FuzzModuleLines(f *testing.F) {
	f.Add([]byte("#perch-replay v1 a,b\n1,2,3\n2,nan,-Inf\n#eof\n"), uint8(5))
	f.Add([]byte("#perch-replay v1 a\n1,1e400\n2,0x10\n3,1e\n4,\n#loop 1\n-9223372036854775808,-0\n"), uint8(1))
	f.Add([]byte("#perch-replay v1 ,\n#perch-replay v2\n\r\n\n1\n"), uint8(200))
	clk := &clock{t: epoch}
	perchtest.Built(f, "replay") // fail early without make modules
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		m, l, err := load(t, nil, grant, chunky{&script{out: in}, int(chunk) + 1}, clk)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.all())
		}
		for range 8 {
			out, err := m.Poll(context.Background(), 3)
			if err != nil && errnoOf(err) == 0 {
				t.Fatalf("a fault: %v\n%s", err, l.all())
			}
			if n := len(perchtest.Decode(out)); n > 3 {
				t.Fatalf("%d records from a poll of max 3", n)
			}
		}
	})
}

// FuzzModuleNumbers checks the module's number parser against Go's: the value 'g' -1 writes for
// any float64 bits reads back bit for bit, and any text the module takes as a number is one
// strconv.ParseFloat reads to the same float64.
func FuzzModuleNumbers(f *testing.F) {
	for _, s := range []string{"0.0265878", "1e23", "9007199254740993", "2.2250738585072011e-308", "4.9e-324",
		"1.7976931348623157e308", "1.7976931348623159e308", "-0", ".5", "5.", "00012.500e-3", "123456789012345678901234567890"} {
		f.Add(uint64(0), s)
	}
	f.Add(math.Float64bits(0.1), "")
	perchtest.Built(f, "replay") // fail early without make modules
	clk := &clock{t: epoch}
	f.Fuzz(func(t *testing.T, bits uint64, text string) {
		if strings.ContainsAny(text, ",\n\r") {
			return
		}
		v := math.Float64frombits(bits)
		line := "#perch-replay v1 a,b\n1," + strconv.FormatFloat(v, 'g', -1, 64) + "," + text + "\n"
		m, l, err := load(t, nil, grant, &script{out: []byte(line)}, clk)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.all())
		}
		out, err := m.Poll(context.Background(), 10)
		if err != nil && errnoOf(err) != abi.EIO {
			t.Fatalf("%v\n%s", err, l.all())
		}
		recs := perchtest.Decode(out)
		if len(recs) == 0 {
			if strings.Contains(l.all(), `column "a"`) {
				t.Fatalf("%v does not read back: %s", v, l.all())
			}
			return // the text is not a number to the module
		}
		if got := recs[0].Fields["a"]; !sameBits(got, v) {
			t.Fatalf("%v (%#x) read back as %v (%#x)", v, bits, got, math.Float64bits(got))
		}
		want, gerr := strconv.ParseFloat(text, 64)
		if gerr != nil && !errors.Is(gerr, strconv.ErrRange) {
			t.Fatalf("the module read %q as %v; Go does not: %v", text, recs[0].Fields["b"], gerr)
		}
		if got := recs[0].Fields["b"]; !sameBits(got, want) {
			t.Fatalf("%q read as %v (%#x), Go reads %v (%#x)", text, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	})
}
