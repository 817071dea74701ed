package replay_test

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/replay"
)

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

func (c *clock) set(d time.Duration) {
	c.mu.Lock()
	c.t = epoch.Add(d)
	c.mu.Unlock()
}

// table has three rows 0, 1 and 3 s apart (recorded in 2020), with a NaN, an infinity and
// values that 'g' -1 must write in full.
var table = &replay.Table{
	Columns: []string{"a", "b c"},
	Rows: []replay.Row{
		{TimeNS: 1583748873000000000, Values: []float64{0.1, math.NaN()}},
		{TimeNS: 1583748874000000000, Values: []float64{1.0 / 3, math.Inf(-1)}},
		{TimeNS: 1583748876000000000, Values: []float64{math.Copysign(0, -1), 1e21}},
	},
}

const (
	header = "#perch-replay v1 a,b c\n"
	row0   = "1583748873000000000,0.1,nan\n"
	row1   = "1583748874000000000,0.3333333333333333,-Inf\n"
	row2   = "1583748876000000000,-0,1e+21\n"
)

func readAll(t *testing.T, d *replay.Device, size int) string {
	t.Helper()
	var b strings.Builder
	p := make([]byte, size)
	for {
		n, err := d.Read(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return b.String()
		}
		b.Write(p[:n])
	}
}

func TestDevicePacing(t *testing.T) {
	tests := []struct {
		name  string
		speed float64
		at    []time.Duration // clock at each step
		want  []string        // what has arrived by then
	}{
		{"recorded pace", 1, []time.Duration{-time.Second, 0, 999 * time.Millisecond, time.Second, 2999 * time.Millisecond, 3 * time.Second, time.Hour},
			[]string{"", header + row0, "", row1, "", row2 + "#eof\n", ""}},
		{"ten times faster", 10, []time.Duration{0, 99 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond},
			[]string{header + row0, "", row1, row2 + "#eof\n"}},
		{"half speed", 0.5, []time.Duration{0, 1999 * time.Millisecond, 2 * time.Second, 6 * time.Second},
			[]string{header + row0, "", row1, row2 + "#eof\n"}},
		{"as fast as read", 0, []time.Duration{0, time.Hour},
			[]string{header + row0 + row1 + row2 + "#eof\n", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: epoch}
			d, err := replay.NewDevice(table, replay.Options{Speed: tt.speed, Clock: clk.now})
			if err != nil {
				t.Fatal(err)
			}
			for i, at := range tt.at {
				clk.set(at)
				if got := readAll(t, d, 7); got != tt.want[i] {
					t.Errorf("at %v: got %q, want %q", at, got, tt.want[i])
				}
			}
			if !d.Ended() {
				t.Error("not ended")
			}
		})
	}
}

func TestDeviceLoop(t *testing.T) {
	clk := &clock{t: epoch}
	d, err := replay.NewDevice(table, replay.Options{Speed: 1, Loop: true, Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	// The span is 3 s and the mean interval 1.5 s: loop N is 4.5 s later.
	shift := func(line string, n int64) string {
		ts, rest, _ := strings.Cut(line, ",")
		v, _ := strconv.ParseInt(ts, 10, 64)
		return strconv.FormatInt(v+n*4500000000, 10) + "," + rest
	}
	clk.set(3 * time.Second)
	if got, want := readAll(t, d, 64), header+row0+row1+row2; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	clk.set(4500 * time.Millisecond)
	if got, want := readAll(t, d, 64), "#loop 1\n"+shift(row0, 1); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	clk.set(11 * time.Second)
	if got, want := readAll(t, d, 64), shift(row1, 1)+shift(row2, 1)+"#loop 2\n"+shift(row0, 2)+shift(row1, 2); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if d.Ended() {
		t.Error("a looping replay ended")
	}
}

func TestDeviceHeaderCommand(t *testing.T) {
	ctx := context.Background()
	d, err := replay.NewDevice(table, replay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Before anything is read, the header is on its way: the command changes nothing.
	if _, err := d.Write(ctx, []byte("header\n")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, len(header)+5)
	n, _ := d.Read(ctx, p)
	if got := string(p[:n]); got != header+row0[:5] {
		t.Fatalf("got %q", got)
	}
	// In the middle of row 0: the header comes after it, and nothing is lost.
	d.Write(ctx, []byte("bogus\nhea"))
	d.Write(ctx, []byte("der\r\n"))
	p = make([]byte, len(row0)-5+len(header)+len(row1))
	if n, _ := d.Read(ctx, p); string(p[:n]) != row0[5:]+header+row1 {
		t.Fatalf("got %q", p[:n])
	}
	// At a line's end: the header comes next.
	d.Write(ctx, []byte("header\n"))
	if got, want := readAll(t, d, 3), header+row2+"#eof\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestDeviceSeek: "#seek N" drops what was not read (but for the rest of a line being read) and
// plays the header, then row N on.
func TestDeviceSeek(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: epoch}
	d, err := replay.NewDevice(table, replay.Options{Speed: 1, Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	clk.set(time.Second)
	p := make([]byte, len(header)+len(row0)+5) // the header, row 0 and part of row 1
	if n, _ := d.Read(ctx, p); string(p[:n]) != header+row0+row1[:5] {
		t.Fatalf("got %q", p[:n])
	}
	// A driver restarts having handed on row 0 only: the rest of the line being read comes
	// first (the stream stays whole lines), then the header and row 1 again; row 2 keeps its
	// pace (due at 3 s).
	d.Write(ctx, []byte("#seek 1\n"))
	if got, want := readAll(t, d, 7), row1[5:]+header+row1; got != want {
		t.Errorf("after #seek 1: got %q, want %q", got, want)
	}
	clk.set(3 * time.Second)
	if got, want := readAll(t, d, 7), row2+"#eof\n"; got != want {
		t.Errorf("at 3 s: got %q, want %q", got, want)
	}
	// After the end: back to row 0, already due.
	d.Write(ctx, []byte("#se"))
	d.Write(ctx, []byte("ek 0\r\n"))
	if got, want := readAll(t, d, 64), header+row0+row1+row2+"#eof\n"; got != want {
		t.Errorf("after #seek 0: got %q, want %q", got, want)
	}
	// Past the end of a recording that does not loop: the header, then the end. Bad seeks are
	// ignored.
	for _, bad := range []string{"#seek -1\n", "#seek x\n", "#seek\n", "#seek 1.5\n", "#seek 99999999999999999999\n"} {
		d.Write(ctx, []byte(bad))
	}
	if got := readAll(t, d, 64); got != "" {
		t.Errorf("after bad seeks: got %q", got)
	}
	d.Write(ctx, []byte("#seek 3\n"))
	if got, want := readAll(t, d, 64), header+"#eof\n"; got != want {
		t.Errorf("after #seek 3: got %q, want %q", got, want)
	}

	// A new device (a runtime that restarted) seeking to a row not due yet: the pacing moves so
	// that row 2 is due now, and the rest follows at the recorded intervals.
	clk.set(0)
	d, _ = replay.NewDevice(table, replay.Options{Speed: 1, Clock: clk.now})
	d.Write(ctx, []byte("#seek 1\n"))
	if got, want := readAll(t, d, 64), header+row1; got != want {
		t.Errorf("new device, #seek 1: got %q, want %q", got, want)
	}
	clk.set(1999 * time.Millisecond)
	if got := readAll(t, d, 64); got != "" {
		t.Errorf("1.999 s after: got %q", got)
	}
	clk.set(2 * time.Second)
	if got, want := readAll(t, d, 64), row2+"#eof\n"; got != want {
		t.Errorf("2 s after: got %q, want %q", got, want)
	}

	// Looping: row 4 of a 3-row recording is row 1 of loop 1, with its times.
	d, _ = replay.NewDevice(table, replay.Options{Speed: 0, Loop: true, Clock: clk.now})
	d.Write(ctx, []byte("#seek 4\n"))
	p = make([]byte, len(header)+len(row1)+len(row2)+len("#loop 2\n"))
	n, _ := d.Read(ctx, p)
	ts, rest, _ := strings.Cut(row1, ",")
	v, _ := strconv.ParseInt(ts, 10, 64)
	loop1row1 := strconv.FormatInt(v+4500000000, 10) + "," + rest
	ts, rest, _ = strings.Cut(row2, ",")
	v, _ = strconv.ParseInt(ts, 10, 64)
	loop1row2 := strconv.FormatInt(v+4500000000, 10) + "," + rest
	if got, want := string(p[:n]), header+loop1row1+loop1row2+"#loop 2\n"; got != want {
		t.Errorf("looping, #seek 4: got %q, want %q", got, want)
	}
}

func TestDeviceSetStart(t *testing.T) {
	clk := &clock{t: epoch}
	d, _ := replay.NewDevice(table, replay.Options{Speed: 1, Clock: clk.now})
	readAll(t, d, 64)
	d.SetStart(epoch.Add(time.Minute))
	clk.set(time.Minute + time.Second)
	if got, want := readAll(t, d, 64), header+row0+row1; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDeviceErrors(t *testing.T) {
	if _, err := replay.NewDevice(table, replay.Options{Speed: -1}); err == nil {
		t.Error("negative speed accepted")
	}
	if _, err := replay.NewDevice(&replay.Table{}, replay.Options{}); err == nil {
		t.Error("a table without columns accepted")
	}
	d, _ := replay.NewDevice(table, replay.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Read(ctx, make([]byte, 8)); !errors.Is(err, context.Canceled) {
		t.Errorf("read: %v", err)
	}
	if _, err := d.Write(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("write: %v", err)
	}
}

// decode parses the line protocol back into a table, as a driver would.
func decode(t testing.TB, s string) (*replay.Table, bool) {
	t.Helper()
	var tab *replay.Table
	eof := false
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, replay.HeaderPrefix):
			tab = &replay.Table{Columns: strings.Split(strings.TrimPrefix(line, replay.HeaderPrefix), ",")}
		case line == replay.EOFLine:
			eof = true
		case strings.HasPrefix(line, "#"):
		default:
			cells := strings.Split(line, ",")
			if tab == nil || len(cells) != len(tab.Columns)+1 {
				t.Fatalf("line %q", line)
			}
			ts, err := strconv.ParseInt(cells[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			r := replay.Row{TimeNS: ts}
			for _, c := range cells[1:] {
				v, err := strconv.ParseFloat(c, 64)
				if err != nil {
					t.Fatal(err)
				}
				r.Values = append(r.Values, v)
			}
			tab.Rows = append(tab.Rows, r)
		}
	}
	return tab, eof
}

func TestDeviceRoundTrip(t *testing.T) {
	d, _ := replay.NewDevice(table, replay.Options{})
	got, eof := decode(t, readAll(t, d, 1))
	if !eof || !same(got, table) {
		t.Errorf("got %+v, eof %v", got, eof)
	}
}
