package sim_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
)

func dur(s string) sim.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return sim.Duration(d)
}

func TestSignalAt(t *testing.T) {
	sine := sim.Signal{Shape: "sine", Mean: 20, Amplitude: 5, Period: dur("60s")}
	ramp := sim.Signal{Shape: "ramp", From: 10, To: 30, Start: dur("10s"), Period: dur("20s")}
	step := sim.Signal{Shape: "step", From: 1, To: 2, Start: dur("5s")}
	spike := sim.Signal{Shape: "spike", Value: 50, Amplitude: 30, Start: dur("10s"), Width: dur("2s")}
	sum := sim.Signal{Sum: []sim.Signal{sine, {Value: 100}, step}}
	tests := []struct {
		name string
		sig  sim.Signal
		at   string
		want float64
	}{
		{"zero", sim.Signal{}, "1h", 0},
		{"constant", sim.Signal{Shape: "constant", Value: 21.5}, "0s", 21.5},
		{"constant without shape", sim.Signal{Value: -3}, "5m", -3},
		{"sine start", sine, "0s", 20},
		{"sine quarter", sine, "15s", 25},
		{"sine half", sine, "30s", 20},
		{"sine three quarters", sine, "45s", 15},
		{"sine next period", sine, "75s", 25},
		{"ramp before", ramp, "0s", 10},
		{"ramp start", ramp, "10s", 10},
		{"ramp middle", ramp, "20s", 20},
		{"ramp end", ramp, "30s", 30},
		{"ramp after", ramp, "1h", 30},
		{"step before", step, "4.999s", 1},
		{"step at", step, "5s", 2},
		{"step after", step, "1m", 2},
		{"spike before", spike, "9s", 50},
		{"spike at", spike, "10s", 80},
		{"spike inside", spike, "11.5s", 80},
		{"spike end", spike, "12s", 50},
		{"sum", sum, "15s", 25 + 100 + 2},
		{"unknown shape", sim.Signal{Shape: "sinus"}, "0s", math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.sig.At(time.Duration(dur(tt.at)))
			if math.IsNaN(tt.want) && math.IsNaN(got) {
				return
			}
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("At(%s) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestSignalNoise(t *testing.T) {
	s := sim.Signal{Shape: "noise", Mean: 10, Sigma: 2, Seed: 42}
	other := sim.Signal{Shape: "noise", Mean: 10, Sigma: 2, Seed: 43}
	const n = 20000
	var sum, sumSq float64
	same := 0
	for i := range n {
		at := time.Duration(i) * time.Second
		v := s.At(at)
		if v != s.At(at) {
			t.Fatalf("At(%v) is not deterministic", at)
		}
		if v == other.At(at) {
			same++
		}
		sum += v
		sumSq += v * v
	}
	mean := sum / n
	std := math.Sqrt(sumSq/n - mean*mean)
	if math.Abs(mean-10) > 0.1 || math.Abs(std-2) > 0.1 {
		t.Errorf("noise mean %.3f std %.3f, want 10 and 2", mean, std)
	}
	if same > 0 {
		t.Errorf("seeds 42 and 43 agree at %d of %d times", same, n)
	}
}

func TestSignalJSON(t *testing.T) {
	const doc = `{
		"temperature": {"sum": [
			{"shape": "sine", "mean": 21, "amplitude": 4, "period": "24h"},
			{"shape": "noise", "sigma": 0.1, "seed": 7},
			{"shape": "spike", "amplitude": 15, "at": "1h30m", "width": "2m"}
		]},
		"pressure": {"shape": "ramp", "from": 1013.25, "to": 980, "at": "10m", "period": "1h"},
		"humidity": {"shape": "step", "from": 40, "to": 85, "at": "45s"}
	}`
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.DisallowUnknownFields()
	var got sim.Signals
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	temp := got.Temperature.Sum
	if len(temp) != 3 || temp[0].Period != dur("24h") || temp[1].Seed != 7 ||
		temp[2].Start != dur("1h30m") || temp[2].Width != dur("2m") {
		t.Errorf("temperature decoded as %+v", got.Temperature)
	}
	if p := got.Pressure; p.Shape != "ramp" || p.From != 1013.25 || p.To != 980 || p.Start != dur("10m") ||
		p.Period != dur("1h") {
		t.Errorf("pressure decoded as %+v", p)
	}
	if v := got.Humidity.At(time.Minute); v != 85 {
		t.Errorf("humidity at 1m = %v, want 85", v)
	}

	// Encoding and decoding again gives the same signals.
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"period":"24h0m0s"`) {
		t.Errorf("durations not encoded as strings: %s", b)
	}
	var again sim.Signals
	if err := json.Unmarshal(b, &again); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Duration{0, time.Hour + 31*time.Minute, 5 * time.Hour} {
		if got.Temperature.At(at) != again.Temperature.At(at) {
			t.Errorf("round trip changed the temperature at %v", at)
		}
	}

	for _, bad := range []string{`{"period": "60"}`, `{"period": 60}`, `{"at": "soon"}`} {
		var s sim.Signal
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("decoding %s: no error", bad)
		}
	}
}

func TestSignalValidate(t *testing.T) {
	good := sim.Signal{Value: 20}
	tests := []struct {
		name string
		sig  sim.Signals
		want []string // the errors, in order; none for a valid signal
	}{
		{"valid", sim.Signals{Temperature: good, Pressure: good, Humidity: good}, nil},
		{"unknown shape", sim.Signals{Temperature: sim.Signal{Shape: "sinus"}},
			[]string{`signals.temperature: unknown shape "sinus"`}},
		{"sine without period", sim.Signals{Pressure: sim.Signal{Shape: "sine", Mean: 1000}},
			[]string{`signals.pressure.period: must be positive for shape "sine"`}},
		{"ramp without period", sim.Signals{Pressure: sim.Signal{Shape: "ramp", From: 1, To: 2}},
			[]string{`signals.pressure.period: must be positive for shape "ramp"`}},
		{"spike without width", sim.Signals{Humidity: sim.Signal{Shape: "spike", Amplitude: 3}},
			[]string{`signals.humidity.width: must be positive for shape "spike"`}},
		{"negative at and sigma", sim.Signals{Humidity: sim.Signal{Shape: "noise", Sigma: -1},
			Temperature: sim.Signal{Shape: "step", Start: dur("-1s")}},
			[]string{"signals.temperature.at: must not be negative", "signals.humidity.sigma: must not be negative"}},
		{"unused field", sim.Signals{Temperature: sim.Signal{Shape: "sine", Value: 3, Period: dur("1s")}},
			[]string{`signals.temperature.value: not used by shape "sine"`}},
		{"unused field without shape", sim.Signals{Temperature: sim.Signal{Value: 3, Sigma: 1}},
			[]string{`signals.temperature.sigma: not used by shape "constant"`}},
		{"not finite", sim.Signals{Temperature: sim.Signal{Value: math.Inf(1)}},
			[]string{"signals.temperature.value: must be a finite number"}},
		{"sum with shape", sim.Signals{Temperature: sim.Signal{Shape: "constant", Value: 1, Sum: []sim.Signal{good}}},
			[]string{"signals.temperature.shape: must be empty when sum is set",
				"signals.temperature.value: not used by a sum"}},
		{"bad sum term", sim.Signals{Temperature: sim.Signal{Sum: []sim.Signal{good, {Shape: "spike", Width: dur("1s"),
			Seed: 3}}}},
			[]string{`signals.temperature.sum[1].seed: not used by shape "spike"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.sig.Validate()
			if tt.want == nil {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, sim.ErrBadSignal) {
				t.Errorf("Validate: %v, want an error matching ErrBadSignal", err)
			}
			if err == nil || err.Error() != strings.Join(tt.want, "\n") {
				t.Errorf("Validate:\n%v\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}

	// A single signal names its fields relative to "signal".
	s := sim.Signal{Shape: "sine"}
	if err := s.Validate(); err == nil || err.Error() != `signal.period: must be positive for shape "sine"` {
		t.Errorf("Signal.Validate: %v", err)
	}
	var fe *sim.FieldError
	if err := s.Validate(); !errors.As(err, &fe) || fe.Field != "signal.period" {
		t.Errorf("Signal.Validate: %v, want a FieldError for signal.period", err)
	}
}
