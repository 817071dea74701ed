// Package threshold is the logic of the Perch threshold rule: it raises an alert when a field
// stays beyond a limit, and clears it when the field comes back. It is the reference for the Wasm
// module in ./wasm (written in C for speed, see README.md), which the module's tests compare
// against it record for record, and it runs natively as the baseline stage of the pipeline
// benchmark. It imports only the standard library and sdk/abi.
//
// # Overview
//
// The rule watches one field of the readings of one series (or of every series), and also of
// summaries that have a field of exactly that name (such as temp_mean from the window filter).
// It keeps a state per (source, series):
//
//   - When the value goes above Above (or below Below) and stays there for HoldOff, measured on
//     the records' own time, it writes one alert with the tag state=raised. A record back on the
//     right side of the limit before HoldOff has passed restarts the wait.
//   - While raised, it writes nothing more, however many records arrive.
//   - When the value comes back past the limit by more than Hysteresis (below Above−Hysteresis,
//     or above Below+Hysteresis), it writes one alert with state=cleared, at once.
//
// So a value that wanders around the limit gives one alert, not one per record. With both Above
// and Below set, the two sides are tracked as one band: a value that jumps from above the band to
// below it clears the first alert and raises (or starts waiting to raise) the other.
//
// # Usage
//
//	limit := 30.0
//	th, err := threshold.New(threshold.Config{Series: "env", Field: "temp", Above: &limit,
//		Hysteresis: 1, HoldOff: "30s", Severity: "critical"})
//	if err != nil { ... }
//	it := abi.Iter{Buf: batch}
//	err = th.Process(&it, &out) // out (an *abi.Builder) receives the alerts
//
// A Threshold is not safe for concurrent use. Process allocates nothing per record once every
// (source, series) has been seen.
package threshold

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// Config is the rule's configuration, the config: block of its pipeline entry.
type Config struct {
	// Series is the series to watch; empty means every series.
	Series string `json:"series"`
	// Field is the name of the numeric field to watch. Required.
	Field string `json:"field"`
	// Above raises an alert when the value is greater than it. At least one of Above and Below
	// is required; with both, Below must be less than Above.
	Above *float64 `json:"above"`
	// Below raises an alert when the value is less than it.
	Below *float64 `json:"below"`
	// Hysteresis is how far, in the field's units, the value must come back past the limit
	// before the alert clears. Zero or more; default 0.
	Hysteresis float64 `json:"hysteresis"`
	// HoldOff is how long the value must stay beyond the limit before the alert is raised, as a
	// Go duration string such as "30s". Default: at once.
	HoldOff string `json:"hold_off"`
	// Severity is copied into the alerts' severity tag. Default "warning".
	Severity string `json:"severity"`
	// Message is copied into the alerts' message tag. Default: "<field> above <limit>" or
	// "<field> below <limit>".
	Message string `json:"message"`
}

// side is a side of the band: which limit is crossed.
type side uint8

const (
	inside side = iota
	high        // above Above
	low         // below Below
)

// Threshold is the rule's state. Create it with [New].
type Threshold struct {
	series, field string
	above, below  float64 // ±Inf when not set
	hysteresis    float64
	holdOff       int64 // ns
	severity      string
	message       [3]string // by side
	direction     [3]string // by side: "", "above", "below"
	limit         [3]float64
	states        map[string]*state // by the key built in key
	last          *state            // the state of the previous record
	key           []byte
}

// state is the rule's state for one (source, series).
type state struct {
	source, series string
	raised         side  // the side of the raised alert; inside when none is raised
	pending        side  // the side beyond whose limit the value has been since since
	since          int64 // ns
}

// New checks cfg and returns a Threshold. Its error lists every problem, each naming its field.
func New(cfg Config) (*Threshold, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("threshold: field %q: "+format, append([]any{field}, args...)...))
	}
	if cfg.Field == "" {
		bad("field", "is required: the name of the field to watch")
	}
	for _, f := range []struct{ name, v string }{{"series", cfg.Series}, {"field", cfg.Field},
		{"severity", cfg.Severity}, {"message", cfg.Message}} {
		if len(f.v) > abi.MaxString {
			bad(f.name, "is longer than %d bytes", abi.MaxString)
		}
	}
	switch {
	case cfg.Above == nil && cfg.Below == nil:
		errs = append(errs, errors.New(`threshold: one of the fields "above" and "below" is required`))
	case cfg.Above != nil && cfg.Below != nil && !(*cfg.Below < *cfg.Above):
		bad("below", "%g must be less than above (%g)", *cfg.Below, *cfg.Above)
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"above", cfg.Above}, {"below", cfg.Below}} {
		if f.v != nil && (math.IsNaN(*f.v) || math.IsInf(*f.v, 0)) {
			bad(f.name, "must be a finite number")
		}
	}
	if !(cfg.Hysteresis >= 0) || math.IsInf(cfg.Hysteresis, 0) {
		bad("hysteresis", "%g must be a finite number, zero or more", cfg.Hysteresis)
	}
	var holdOff time.Duration
	if cfg.HoldOff != "" {
		var err error
		if holdOff, err = time.ParseDuration(cfg.HoldOff); err != nil {
			bad("hold_off", "%q is not a duration such as \"30s\"", cfg.HoldOff)
		} else if holdOff < 0 {
			bad("hold_off", "%q must not be negative", cfg.HoldOff)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	t := &Threshold{series: cfg.Series, field: cfg.Field, above: math.Inf(1), below: math.Inf(-1),
		hysteresis: cfg.Hysteresis, holdOff: int64(holdOff), severity: cfg.Severity,
		direction: [3]string{high: "above", low: "below"},
		states:    make(map[string]*state), key: make([]byte, 0, 2*abi.MaxString+1)}
	if t.severity == "" {
		t.severity = "warning"
	}
	if cfg.Above != nil {
		t.above = *cfg.Above
	}
	if cfg.Below != nil {
		t.below = *cfg.Below
	}
	t.limit = [3]float64{high: t.above, low: t.below}
	for _, s := range []side{high, low} {
		t.message[s] = cfg.Message
		if cfg.Message == "" {
			t.message[s] = cfg.Field + " " + t.direction[s] + " " + strconv.FormatFloat(t.limit[s], 'g', -1, 64)
		}
	}
	return t, nil
}

// Process checks the records of a batch and writes to out an alert for each raise and clear. It
// returns in.Err() (the batch's decoding error, if any); the records before the bad one have
// been processed.
func (t *Threshold) Process(in *abi.Iter, out *abi.Builder) error {
	for in.Next() {
		r := &in.Rec
		if (r.Kind != abi.KindReading && r.Kind != abi.KindSummary) ||
			(t.series != "" && string(r.Series) != t.series) {
			continue
		}
		v, ok := r.Field(t.field)
		if !ok || math.IsNaN(v) {
			continue
		}
		t.step(t.state(r.Source, r.Series), r.TimeNS, v, out)
	}
	return in.Err()
}

// step advances one state with the value v at time ts.
func (t *Threshold) step(s *state, ts int64, v float64, out *abi.Builder) {
	switch {
	case s.raised == high && v < t.above-t.hysteresis,
		s.raised == low && v > t.below+t.hysteresis:
		t.alert(out, s, ts, v, s.raised, "cleared")
		s.raised = inside
	case s.raised != inside:
		return
	}
	beyond := inside
	switch {
	case v > t.above:
		beyond = high
	case v < t.below:
		beyond = low
	}
	if beyond != s.pending {
		s.pending, s.since = beyond, ts
	}
	if beyond != inside && ts-s.since >= t.holdOff {
		t.alert(out, s, ts, v, beyond, "raised")
		s.raised, s.pending = beyond, inside
	}
}

func (t *Threshold) alert(out *abi.Builder, s *state, ts int64, v float64, sd side, st string) {
	out.Begin(abi.KindAlert, ts, "", s.series)
	out.Field("value", v)
	out.Field("threshold", t.limit[sd])
	out.Tag("state", st)
	out.Tag("severity", t.severity)
	out.Tag("message", t.message[sd])
	out.Tag("field", t.field)
	out.Tag("source", s.source)
	out.Tag("direction", t.direction[sd])
	out.End()
}

// state returns the state of (source, series), creating it on first sight.
func (t *Threshold) state(source, series []byte) *state {
	if s := t.last; s != nil && s.source == string(source) && s.series == string(series) {
		return s
	}
	// The key is unambiguous: source is at most 255 bytes and its length comes first.
	t.key = append(append(append(t.key[:0], byte(len(source))), source...), series...)
	s, ok := t.states[string(t.key)]
	if !ok {
		s = &state{source: string(source), series: string(series)}
		t.states[string(t.key)] = s
	}
	t.last = s
	return s
}
