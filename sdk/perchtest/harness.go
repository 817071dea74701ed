package perchtest

// Pieces that the first-party module tests share: a log collector, a settable clock, errnos,
// loading a module with its log, and the differential harness that holds a C module to the Go
// package that is its reference logic (records compared with a float tolerance, configs decoded
// as the Go SDK decoded them, init failures compared message for message).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/sdk/abi"
)

// Logs is a slog.Handler that keeps every line a module logs, as "LEVEL message" (attributes
// dropped). It is safe for concurrent use.
type Logs struct {
	mu    sync.Mutex
	lines []string
}

// Enabled implements slog.Handler: every level.
func (l *Logs) Enabled(context.Context, slog.Level) bool { return true }

// Handle implements slog.Handler.
func (l *Logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	return nil
}

// WithAttrs implements slog.Handler; the attributes are dropped.
func (l *Logs) WithAttrs([]slog.Attr) slog.Handler { return l }

// WithGroup implements slog.Handler; the group is dropped.
func (l *Logs) WithGroup(string) slog.Handler { return l }

// String returns the lines logged so far, joined by newlines.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// RawConfig is a config passed to the module as it is, not marshalled (Options.Config): for
// configs that are not valid JSON, or empty.
type RawConfig string

// LoadLogged loads the module as [Open] does, with its log collected (Options.Logger is
// replaced), and returns the runtime module for tests that feed it raw batches, the log, and
// the load error (to test init failures against the log). A module that loaded is closed when
// the test ends.
func LoadLogged(t testing.TB, o Options) (*runtime.Module, *Logs, error) {
	t.Helper()
	l := &Logs{}
	o.Logger = slog.New(l)
	m, err := Open(o)
	if err != nil {
		return nil, l, err
	}
	t.Cleanup(func() { m.Close() })
	return m.m, l, nil
}

// Errno returns the errno of a *runtime.ErrnoError in err's chain, or 0 (no error, or an error
// of another kind, such as a fault).
func Errno(err error) abi.Errno {
	var ee *runtime.ErrnoError
	if errors.As(err, &ee) {
		return ee.Errno
	}
	return 0
}

// Clock is a settable clock for a simulated device and the module that reads it (pass Now to
// hal/sim and NS as Options.Now). It is safe for concurrent use.
type Clock struct {
	mu    sync.Mutex
	start time.Time
	t     time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{start: start, t: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// NS returns the clock's time in ns since the Unix epoch.
func (c *Clock) NS() int64 { return c.Now().UnixNano() }

// Set sets the clock to d after its start.
func (c *Clock) Set(d time.Duration) {
	c.mu.Lock()
	c.t = c.start.Add(d)
	c.mu.Unlock()
}

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// GoConfig decodes a raw config into v as the Go SDK's perch.Config does (encoding/json, unknown
// fields refused, an empty config leaves v as it is, the same error wording): the reference for
// C modules, which decode their config with perch_config_decode.
func GoConfig(raw string, v any) error {
	if len(bytes.TrimSpace([]byte(raw))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("perch: config field %q: a JSON %s cannot be a %s", te.Field, te.Value, te.Type)
	}
	return fmt.Errorf("perch: config: %w", err)
}

// SameInit holds a C module's init with a config to its Go reference's: goErr is the
// reference's error (decoding the config or checking it), cErr and log the C module's load
// error and log. Both must accept the config, or both refuse it, the C module's perch_init
// failing with EINVAL and logging exactly "ERROR perch_init failed: " and the Go error. What
// differs fails t (Errorf, each message prefixed with what unless it is empty). SameInit
// reports whether both accepted the config.
func SameInit(t testing.TB, what string, goErr, cErr error, log string) bool {
	t.Helper()
	if what != "" {
		what += ": "
	}
	switch {
	case goErr == nil && cErr != nil:
		t.Errorf("%sGo accepts it, C refuses it: %v\n%s", what, cErr, log)
		return false
	case goErr != nil && cErr == nil:
		t.Errorf("%sGo refuses it (%v), C accepts it", what, goErr)
		return false
	case goErr == nil:
		return true
	}
	if want := "ERROR perch_init failed: " + goErr.Error(); log != want {
		t.Errorf("%sC logged\n%s\nGo logged\n%s", what, log, want)
	}
	if !strings.Contains(cErr.Error(), "perch_init returned perch: EINVAL") {
		t.Errorf("%sC init error %v, want EINVAL", what, cErr)
	}
	return false
}

// Stage is a module's reference logic: the Process method of its Go package.
type Stage interface {
	Process(in *abi.Iter, out *abi.Builder) error
}

// Reference runs a Stage as the Go SDK ran it in a Go module: one batch in, the batch it wrote
// out, and on an error the call's output dropped.
type Reference struct {
	Stage Stage
	out   abi.Builder
}

// Process runs one batch. The output is valid until the next call.
func (r *Reference) Process(batch []byte) ([]byte, error) {
	r.out.Buf = r.out.Buf[:0]
	it := abi.Iter{Buf: batch}
	if err := r.Stage.Process(&it, &r.out); err != nil {
		return nil, err
	}
	return r.out.Buf, nil
}

// Near reports whether two values agree: equal (NaN equal to NaN), or both finite and within
// relTol relative to the larger magnitude (an infinity agrees only with itself).
func Near(a, b, relTol float64) bool {
	if a == b || math.IsNaN(a) && math.IsNaN(b) {
		return true
	}
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return false
	}
	return math.Abs(a-b) <= relTol*math.Max(math.Abs(a), math.Abs(b))
}

// SameRecords fails t (Fatalf, messages prefixed with what) unless the batch got (a C module's
// output) holds the records of want (its Go reference's), in order: the same kind, time (a time
// of 0 in want is stamped by the host and matches any), series, source (source where want has
// none: the host fills in the module's name), fields in order with values [Near] within relTol,
// and tags in order. Both must decode. It returns the number of records.
func SameRecords(t testing.TB, what string, want, got []byte, source string, relTol float64) int {
	t.Helper()
	wi, gi := abi.Iter{Buf: want}, abi.Iter{Buf: got}
	n := 0
	for ; ; n++ {
		wok, gok := wi.Next(), gi.Next()
		if !wok || !gok {
			if wok != gok {
				wc, _ := abi.Count(want)
				gc, _ := abi.Count(got)
				t.Fatalf("%s: %d records from Go, %d from C\nGo:\n%s\nC:\n%s", what, wc, gc,
					Render(want, "", "%g"), Render(got, source, "%g"))
			}
			break
		}
		w, g := &wi.Rec, &gi.Rec
		src := string(w.Source)
		if src == "" {
			src = source
		}
		if w.Kind != g.Kind || (w.TimeNS != g.TimeNS && w.TimeNS != 0) || string(w.Series) != string(g.Series) ||
			src != string(g.Source) || w.NumFields() != g.NumFields() || w.NumTags() != g.NumTags() {
			t.Fatalf("%s: record %d differs\nGo: %s\nC:  %s", what, n, renderRec(w, "", "%g"), renderRec(g, source, "%g"))
		}
		for i := range w.NumFields() {
			wn, wv := w.FieldAt(i)
			gn, gv := g.FieldAt(i)
			if string(wn) != string(gn) || !Near(wv, gv, relTol) {
				t.Fatalf("%s: record %d field %d: Go %s=%v, C %s=%v\nGo: %s\nC:  %s", what, n, i, wn, wv, gn, gv,
					renderRec(w, "", "%g"), renderRec(g, source, "%g"))
			}
		}
		var wt, gt []string
		w.Tags(func(k, v []byte) { wt = append(wt, string(k)+"="+string(v)) })
		g.Tags(func(k, v []byte) { gt = append(gt, string(k)+"="+string(v)) })
		if strings.Join(wt, "\x00") != strings.Join(gt, "\x00") {
			t.Fatalf("%s: record %d tags:\nGo %q\nC  %q", what, n, wt, gt)
		}
	}
	if gi.Err() != nil || wi.Err() != nil {
		t.Fatalf("%s: output does not decode: Go %v, C %v", what, wi.Err(), gi.Err())
	}
	return n
}

// Render prints a batch one record a line, as the Go packages' golden files have them:
//
//	KIND t=SECONDSs src="SOURCE" series=SERIES name=VALUE… key:value…
//
// with the values formatted by valueVerb (such as "%g" or "%.6g") and the source blanked where
// it is blank (a module's name, which the host fills in). A batch that does not decode ends with
// an "error: " line.
func Render(batch []byte, blank, valueVerb string) string {
	var lines []string
	it := abi.Iter{Buf: batch}
	for it.Next() {
		lines = append(lines, renderRec(&it.Rec, blank, valueVerb))
	}
	if it.Err() != nil {
		lines = append(lines, "error: "+it.Err().Error())
	}
	return strings.Join(lines, "\n")
}

func renderRec(r *abi.Record, blank, valueVerb string) string {
	var sb strings.Builder
	src := string(r.Source)
	if src == blank {
		src = ""
	}
	fmt.Fprintf(&sb, "%v t=%gs src=%q series=%s", r.Kind, float64(r.TimeNS)/1e9, src, r.Series)
	r.Fields(func(name []byte, v float64) { fmt.Fprintf(&sb, " %s="+valueVerb, name, v) })
	r.Tags(func(k, v []byte) { fmt.Fprintf(&sb, " %s:%s", k, v) })
	return sb.String()
}

// LoadBuilt loads the module that `make modules` built as name (see [Built]) with a raw JSON
// config, capturing its log. The module is closed when the test ends.
func LoadBuilt(t testing.TB, name, cfg string) (*runtime.Module, *Logs, error) {
	t.Helper()
	return LoadLogged(t, Options{Wasm: Built(t, name), Config: RawConfig(cfg)})
}

// MustLoadBuilt is [LoadBuilt], failing the test with the module's log on an error.
func MustLoadBuilt(t testing.TB, name, cfg string) (*runtime.Module, *Logs) {
	t.Helper()
	m, l, err := LoadBuilt(t, name, cfg)
	if err != nil {
		t.Fatalf("loading the module %s with %s: %v\nlog:\n%s", name, cfg, err, l)
	}
	return m, l
}

// NewDiff pairs a Go reference, made by ref from the raw config cfg, with the built module name
// loaded with the same config. Field values may differ by relTol, relative.
func NewDiff(t testing.TB, name, cfg string, ref func(cfg string) (*Reference, error), relTol float64) *Diff {
	t.Helper()
	g, err := ref(cfg)
	if err != nil {
		t.Fatalf("Go reference with %s: %v", cfg, err)
	}
	c, l := MustLoadBuilt(t, name, cfg)
	return &Diff{Ref: g, C: c, Logs: l, Source: name, RelTol: relTol, cfg: cfg}
}

// Diff is a C module and its Go reference with the same config, fed the same batches.
type Diff struct {
	Ref     *Reference
	C       *runtime.Module
	Logs    *Logs   // the C module's log
	Source  string  // the C module's name: the source of its records where the reference's have none
	RelTol  float64 // how far field values may differ, relative (see Near)
	Records int     // output records compared so far
	cfg     string  // the raw config both were made with
}

// Process feeds one batch to both and compares what they emit ([SameRecords]) and how they fail:
// where the reference fails, the C module must fail with EIO, emit nothing and log
// "perch_process failed: " and the reference's error. It returns the C module's output, valid
// until its next call.
func (d *Diff) Process(t testing.TB, what string, batch []byte) []byte {
	t.Helper()
	want, werr := d.Ref.Process(batch)
	got, gerr := d.C.Process(context.Background(), batch)
	if werr != nil {
		if Errno(gerr) != abi.EIO || len(got) != 0 {
			t.Fatalf("%s: Go failed with %v; C: %v, %d bytes out (want EIO and nothing)", what, werr, gerr, len(got))
		}
		if !strings.Contains(d.Logs.String(), "perch_process failed: "+werr.Error()) {
			t.Fatalf("%s: C did not log %q:\n%s", what, "perch_process failed: "+werr.Error(), d.Logs.String())
		}
		return nil
	}
	if gerr != nil {
		t.Fatalf("%s: C failed: %v\nlog:\n%s", what, gerr, d.Logs.String())
	}
	d.Records += SameRecords(t, what, want, got, d.Source, d.RelTol)
	return got
}
