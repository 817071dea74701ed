// Package window is the logic of the Perch window filter: it summarizes readings over tumbling
// time windows. It is the reference for the Wasm module in ./wasm (written in C for speed, see
// README.md), which the module's tests compare against it record for record, and it runs
// natively as the baseline stage of the pipeline benchmark. It imports only the standard library
// and sdk/abi.
//
// # Overview
//
// Windows are aligned to multiples of the window length on the records' own clock (a 10s window
// covers [10s, 20s), [20s, 30s), ...; time 0 is the Unix epoch). Every numeric field of every
// reading is aggregated per (source, series, field). When a record's time reaches the end of the
// current window, [Window.Process] writes one summary record per (source, series) that had
// readings in that window, then opens the window that contains the new record. Windows with no
// readings produce nothing.
//
// A summary has the window's end as its time, the input series as its series, an empty source
// (the host fills it in), five fields per input field: <field>_count, <field>_mean, <field>_min,
// <field>_max and <field>_std (population standard deviation), and the tags window (the
// configured duration) and source (the input source). Records of other kinds, NaN and infinite
// values, and readings older than the current window (see [Window.Late]) are ignored.
//
// # Usage
//
//	w, err := window.New(window.Config{Window: "10s"})
//	if err != nil { ... }
//	var out abi.Builder
//	for batch := range batches {
//		out.Buf = out.Buf[:0]
//		it := abi.Iter{Buf: batch}
//		if err := w.Process(&it, &out); err != nil { ... }
//		// out.Buf holds the summaries of the windows that closed
//	}
//
// A Window is not safe for concurrent use. Process allocates nothing per record once every
// (source, series, field) has been seen.
package window

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// Config is the filter's configuration, the config: block of its pipeline entry.
type Config struct {
	// Window is the window length as a Go duration string, such as "10s" or "1m". Required.
	Window string `json:"window"`
	// Series restricts the filter to readings of this series; empty means every series.
	Series string `json:"series"`
}

// Window aggregates readings into tumbling windows. Create it with [New].
type Window struct {
	tag    string // the window tag's value: the configured duration
	series string
	length int64 // ns

	open  bool  // a window is open: start is valid
	start int64 // the current window is [start, start+length)
	late  uint64

	groups []*group          // in order of first appearance, which is the order of the output
	index  map[string]*group // by groupKey
	last   *group            // the group of the previous record
	key    []byte            // scratch for groupKey
}

// group is the state of one (source, series).
type group struct {
	source, series string
	fields         []acc // in order of first appearance
	hasData        bool  // some field has values in the current window
}

// acc accumulates one field in the current window (Welford's algorithm for the variance).
type acc struct {
	name     string
	out      [5]string // the summary field names: _count, _mean, _min, _max, _std
	n        int64
	mean, m2 float64
	lo, hi   float64 // min and max
}

// New checks cfg and returns a Window. Its error lists every problem, each naming its field.
func New(cfg Config) (*Window, error) {
	var errs []error
	d, err := time.ParseDuration(cfg.Window)
	switch {
	case cfg.Window == "":
		errs = append(errs, errors.New(`window: field "window" is required: a duration such as "10s"`))
	case err != nil:
		errs = append(errs, fmt.Errorf(`window: field "window": %q is not a duration such as "10s"`, cfg.Window))
	case d <= 0:
		errs = append(errs, fmt.Errorf(`window: field "window": %q must be positive`, cfg.Window))
	case len(cfg.Window) > abi.MaxString:
		errs = append(errs, fmt.Errorf(`window: field "window" is longer than %d bytes`, abi.MaxString))
	}
	if len(cfg.Series) > abi.MaxString {
		errs = append(errs, fmt.Errorf(`window: field "series" is longer than %d bytes`, abi.MaxString))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Window{tag: cfg.Window, series: cfg.Series, length: int64(d),
		index: make(map[string]*group), key: make([]byte, 0, 2*abi.MaxString+1)}, nil
}

// Process aggregates the readings of a batch and writes to out a summary for each window that
// closed. It returns in.Err() (the batch's decoding error, if any); the records before the bad
// one have been processed.
func (w *Window) Process(in *abi.Iter, out *abi.Builder) error {
	for in.Next() {
		r := &in.Rec
		if r.Kind != abi.KindReading || (w.series != "" && string(r.Series) != w.series) {
			continue
		}
		t := r.TimeNS
		switch {
		case !w.open:
			w.start, w.open = align(t, w.length), true
		case t < w.start:
			w.late++
			continue
		case uint64(t-w.start) >= uint64(w.length): // t is past the window; no overflow as t >= start
			w.emit(out)
			w.start = align(t, w.length)
		}
		g := w.group(r.Source, r.Series)
		i := 0
		r.Fields(func(name []byte, v float64) {
			g.add(i, name, v)
			i++
		})
	}
	return in.Err()
}

// Flush writes the summaries of the current window without waiting for a record past its end,
// and moves on to the next window: records older than that are then late. Use it at shutdown.
func (w *Window) Flush(out *abi.Builder) {
	if !w.open {
		return
	}
	w.emit(out)
	w.start += w.length
}

// Late returns the number of readings ignored so far because their time was before the current
// window.
func (w *Window) Late() uint64 { return w.late }

// emit writes a summary for every group with data in the current window and resets them.
func (w *Window) emit(out *abi.Builder) {
	end := w.start + w.length
	for _, g := range w.groups {
		if !g.hasData {
			continue
		}
		out.Begin(abi.KindSummary, end, "", g.series)
		for i := range g.fields {
			a := &g.fields[i]
			if a.n == 0 {
				continue
			}
			out.Field(a.out[0], float64(a.n))
			out.Field(a.out[1], a.mean)
			out.Field(a.out[2], a.lo)
			out.Field(a.out[3], a.hi)
			out.Field(a.out[4], math.Sqrt(a.m2/float64(a.n)))
			a.n, a.mean, a.m2 = 0, 0, 0
		}
		out.Tag("window", w.tag)
		out.Tag("source", g.source)
		out.End()
		g.hasData = false
	}
}

// group returns the state of (source, series), creating it on first sight.
func (w *Window) group(source, series []byte) *group {
	if g := w.last; g != nil && g.source == string(source) && g.series == string(series) {
		return g
	}
	// The key is unambiguous: source is at most 255 bytes and its length comes first.
	w.key = append(append(append(w.key[:0], byte(len(source))), source...), series...)
	g, ok := w.index[string(w.key)]
	if !ok {
		g = &group{source: string(source), series: string(series)}
		w.index[string(w.key)] = g
		w.groups = append(w.groups, g)
	}
	w.last = g
	return g
}

// add adds a value of the field name. hint is the field's position in its record: records of a
// series usually list their fields in the same order, so fields[hint] is tried first.
func (g *group) add(hint int, name []byte, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	var a *acc
	if hint < len(g.fields) && g.fields[hint].name == string(name) {
		a = &g.fields[hint]
	} else {
		for i := range g.fields {
			if g.fields[i].name == string(name) {
				a = &g.fields[i]
				break
			}
		}
		if a == nil {
			n := string(name)
			g.fields = append(g.fields, acc{name: n,
				out: [5]string{n + "_count", n + "_mean", n + "_min", n + "_max", n + "_std"}})
			a = &g.fields[len(g.fields)-1]
		}
	}
	a.n++
	if a.n == 1 {
		a.lo, a.hi = v, v
	} else {
		a.lo, a.hi = min(a.lo, v), max(a.hi, v)
	}
	d := v - a.mean
	a.mean += d / float64(a.n)
	a.m2 += d * (v - a.mean)
	g.hasData = true
}

// align returns the start of the window of length l that contains t: the largest multiple of l
// not after t.
func align(t, l int64) int64 {
	s := t - t%l
	if t%l < 0 {
		s -= l
	}
	return s
}
