package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// ErrBadSignal is matched (with errors.Is) by every error of [Signal.Validate] and
// [Signals.Validate].
var ErrBadSignal = errors.New("sim: invalid signal")

// Duration is a [time.Duration] that encodes as a Go duration string such as "60s" or "1h30m",
// in JSON and in YAML (through encoding.TextMarshaler and encoding.TextUnmarshaler).
type Duration time.Duration

// MarshalText encodes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText decodes a Go duration string such as "60s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Signal is a scripted physical quantity: a function of the time since the simulation started.
// Its unit is that of the quantity it drives (°C, hPa or %RH for a [BME280]). It is plain data,
// decoded from configuration; the zero value is the constant 0.
//
// Shape selects the function and the fields it uses:
//
//	constant  value                        (also when shape is empty)
//	sine      mean + amplitude·sin(2π·t/period)
//	ramp      from until at, then linearly to `to` at at+period, then to
//	step      from before at, to from at on
//	noise     mean + a Gaussian of standard deviation sigma, seeded by seed
//	spike     value, plus amplitude during [at, at+width)
//
// A signal with Sum set (and no shape) is the sum of its terms. A field that the shape does not
// use must be left zero. Fields are named here as in configuration; the Go field for "at" is
// Start (At is the method that evaluates the signal).
type Signal struct {
	Shape     string   `json:"shape,omitempty" yaml:"shape,omitempty"`
	Value     float64  `json:"value,omitempty" yaml:"value,omitempty"`
	Mean      float64  `json:"mean,omitempty" yaml:"mean,omitempty"`
	Amplitude float64  `json:"amplitude,omitempty" yaml:"amplitude,omitempty"`
	Period    Duration `json:"period,omitempty" yaml:"period,omitempty"`
	From      float64  `json:"from,omitempty" yaml:"from,omitempty"`
	To        float64  `json:"to,omitempty" yaml:"to,omitempty"`
	Start     Duration `json:"at,omitempty" yaml:"at,omitempty"`       // "at": from the simulation start
	Width     Duration `json:"width,omitempty" yaml:"width,omitempty"` // spike
	Seed      int64    `json:"seed,omitempty" yaml:"seed,omitempty"`   // noise
	Sigma     float64  `json:"sigma,omitempty" yaml:"sigma,omitempty"` // noise standard deviation
	Sum       []Signal `json:"sum,omitempty" yaml:"sum,omitempty"`
}

// Signals are the quantities a [BME280] measures.
type Signals struct {
	Temperature Signal `json:"temperature" yaml:"temperature"` // °C
	Pressure    Signal `json:"pressure" yaml:"pressure"`       // hPa
	Humidity    Signal `json:"humidity" yaml:"humidity"`       // %RH
}

// shapeFields lists, per shape, the fields it uses (by their configuration names).
var shapeFields = map[string][]string{
	"constant": {"value"},
	"sine":     {"mean", "amplitude", "period"},
	"ramp":     {"from", "to", "at", "period"},
	"step":     {"from", "to", "at"},
	"noise":    {"mean", "sigma", "seed"},
	"spike":    {"value", "amplitude", "at", "width"},
}

// At evaluates s at t since the start of the simulation. It is deterministic: noise is a hash of
// seed and t, so the same t always gives the same value. A signal that fails [Signal.Validate]
// because of an unknown shape evaluates to NaN; other invalid fields evaluate to something finite.
func (s *Signal) At(t time.Duration) float64 {
	if len(s.Sum) > 0 {
		var v float64
		for i := range s.Sum {
			v += s.Sum[i].At(t)
		}
		return v
	}
	at, period := time.Duration(s.Start), time.Duration(s.Period)
	switch s.Shape {
	case "", "constant":
		return s.Value
	case "sine":
		if period <= 0 {
			return s.Mean
		}
		phase := float64(t%period) / float64(period)
		return s.Mean + s.Amplitude*math.Sin(2*math.Pi*phase)
	case "ramp":
		switch {
		case t < at:
			return s.From
		case t >= at+period:
			return s.To
		}
		return s.From + (s.To-s.From)*float64(t-at)/float64(period)
	case "step":
		if t < at {
			return s.From
		}
		return s.To
	case "noise":
		return s.Mean + s.Sigma*gauss(uint64(s.Seed), uint64(t))
	case "spike":
		if t >= at && t < at+time.Duration(s.Width) {
			return s.Value + s.Amplitude
		}
		return s.Value
	}
	return math.NaN()
}

// gauss returns a standard normal deviate that depends only on seed and key (Box-Muller over two
// splitmix64 hashes).
func gauss(seed, key uint64) float64 {
	h1 := splitmix(seed ^ splitmix(key))
	h2 := splitmix(h1)
	u1 := (float64(h1>>11) + 1) / (1 << 53) // (0, 1]
	u2 := float64(h2>>11) / (1 << 53)       // [0, 1)
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Validate reports every problem of s at once (joined with errors.Join), each naming its field
// relative to "signal", such as `signal.period: must be positive for shape "sine"`. Each error
// matches [ErrBadSignal].
func (s *Signal) Validate() error { return errors.Join(s.validate("signal")...) }

// Validate reports every problem of the three signals at once, each naming its field, such as
// `signals.temperature: unknown shape "sinus"`. Each error matches [ErrBadSignal].
func (s *Signals) Validate() error {
	var errs []error
	errs = append(errs, s.Temperature.validate("signals.temperature")...)
	errs = append(errs, s.Pressure.validate("signals.pressure")...)
	errs = append(errs, s.Humidity.validate("signals.humidity")...)
	return errors.Join(errs...)
}

// FieldError is one problem found by Validate: Field is its path, such as
// "signals.temperature.sum[1].period".
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap returns [ErrBadSignal].
func (e *FieldError) Unwrap() error { return ErrBadSignal }

func (s *Signal) validate(path string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		if field != "" {
			field = path + "." + field
		} else {
			field = path
		}
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"value", s.Value}, {"mean", s.Mean}, {"amplitude", s.Amplitude}, {"from", s.From},
		{"to", s.To}, {"sigma", s.Sigma}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			bad(f.name, "must be a finite number")
		}
	}
	if len(s.Sum) > 0 {
		if s.Shape != "" {
			bad("shape", "must be empty when sum is set")
		}
		for _, name := range s.setFields() {
			if name != "sum" {
				bad(name, "not used by a sum")
			}
		}
		for i := range s.Sum {
			errs = append(errs, s.Sum[i].validate(fmt.Sprintf("%s.sum[%d]", path, i))...)
		}
		return errs
	}
	shape := s.Shape
	if shape == "" {
		shape = "constant"
	}
	uses, ok := shapeFields[shape]
	if !ok {
		bad("", "unknown shape %q", s.Shape)
		return errs
	}
	for _, name := range s.setFields() {
		if !slices.Contains(uses, name) {
			bad(name, "not used by shape %q", shape)
		}
	}
	if s.Start < 0 {
		bad("at", "must not be negative")
	}
	if s.Sigma < 0 {
		bad("sigma", "must not be negative")
	}
	if (shape == "sine" || shape == "ramp") && s.Period <= 0 {
		bad("period", "must be positive for shape %q", shape)
	}
	if shape == "spike" && s.Width <= 0 {
		bad("width", "must be positive for shape %q", shape)
	}
	return errs
}

// setFields returns the names of the fields of s that are not zero.
func (s *Signal) setFields() []string {
	var names []string
	add := func(name string, set bool) {
		if set {
			names = append(names, name)
		}
	}
	add("value", s.Value != 0)
	add("mean", s.Mean != 0)
	add("amplitude", s.Amplitude != 0)
	add("period", s.Period != 0)
	add("from", s.From != 0)
	add("to", s.To != 0)
	add("at", s.Start != 0)
	add("width", s.Width != 0)
	add("seed", s.Seed != 0)
	add("sigma", s.Sigma != 0)
	add("sum", len(s.Sum) > 0)
	return names
}
