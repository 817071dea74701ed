package jsonx

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "\n\r\t\x01\x1f", "µ°C ✓", "bad\xffutf8", string([]byte{0xe2, 0x82})} {
		b := AppendString(nil, []byte(s))
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: %s is not JSON: %v", s, b, err)
		}
		if utf8.ValidString(s) {
			if got != s {
				t.Errorf("%q: round trip %q", s, got)
			}
		} else if !strings.Contains(got, "\uFFFD") || !utf8.ValidString(got) {
			t.Errorf("%q: invalid UTF-8 not replaced by U+FFFD: %q", s, got)
		}
	}
}

func TestAppendFinite(t *testing.T) {
	for _, v := range []float64{0, 1, -1.5, 21.5, 1013.25, 1e-7, 1e21, 123456789012, math.SmallestNonzeroFloat64, math.MaxFloat64} {
		b := AppendFinite(nil, v)
		var got float64
		if err := json.Unmarshal(b, &got); err != nil || got != v {
			t.Errorf("%v: %s decodes to %v (%v)", v, b, got, err)
		}
	}
	if got := string(AppendFinite(nil, 21.5)); got != "21.5" {
		t.Errorf("21.5 written as %s", got)
	}
}

func TestNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	s := []byte("temperature_c")
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendFinite(AppendString(buf[:0], s), 21.5)
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
