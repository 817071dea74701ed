package perchtest

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/sdk/abi"
)

func TestNear(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		want bool
	}{
		{1, 1, true}, {math.NaN(), math.NaN(), true}, {1, 1 + 1e-12, true}, {1, 1 + 1e-6, false},
		{0, 1e-300, false}, {math.Inf(1), math.Inf(1), true}, {math.Inf(1), math.Inf(-1), false}, {math.Inf(1), 1, false}, {1, math.NaN(), false},
	} {
		if got := Near(c.a, c.b, 1e-9); got != c.want {
			t.Errorf("Near(%v, %v) = %v", c.a, c.b, got)
		}
	}
}

func TestClockLogsErrno(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	c.Add(time.Second)
	c.Add(time.Second)
	if got := c.Now(); !got.Equal(start.Add(2 * time.Second)) {
		t.Errorf("after Add: %v", got)
	}
	c.Set(time.Minute)
	if got := c.NS(); got != start.Add(time.Minute).UnixNano() {
		t.Errorf("after Set: %d", got)
	}

	l := &Logs{}
	log := slog.New(l).With("a", 1)
	log.Warn("one")
	log.Error("two")
	if got := l.String(); got != "WARN one\nERROR two" {
		t.Errorf("logs %q", got)
	}

	if Errno(nil) != 0 || Errno(errors.New("x")) != 0 {
		t.Error("Errno of a non-errno error")
	}
	if got := Errno(fmt.Errorf("wrapped: %w", &runtime.ErrnoError{Errno: abi.ENACK})); got != abi.ENACK {
		t.Errorf("Errno = %v", got)
	}
}

func TestGoConfig(t *testing.T) {
	var v struct {
		N int `json:"n"`
	}
	for raw, want := range map[string]string{
		``:           "",
		` `:          "",
		`{"n":1}`:    "",
		`{"n":"x"}`:  `perch: config field "n": a JSON string cannot be a int`,
		`{"m":1}`:    `perch: config: json: unknown field "m"`,
		`{"n":1} {}`: "perch: config: data after the JSON object",
	} {
		err := GoConfig(raw, &v)
		if got := fmt.Sprint(err); (err == nil) != (want == "") || err != nil && got != want {
			t.Errorf("GoConfig(%q) = %v, want %q", raw, err, want)
		}
	}
}

func TestRender(t *testing.T) {
	b := abi.Append(nil, abi.KindSummary, 1.5e9, "mod", "env", []abi.Field{{Name: "x", Value: 1.0 / 3}}, []abi.Tag{{Key: "k", Value: "v"}})
	if got, want := Render(b, "mod", "%.6g"), `summary t=1.5s src="" series=env x=0.333333 k:v`; got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
	if got, want := Render(append(b, 1), "", "%g"), `summary t=1.5s src="mod" series=env x=0.3333333333333333 k:v`+
		"\nerror: abi: record truncated at byte 38"; got != want {
		t.Errorf("Render of a bad batch = %q", got)
	}
}
