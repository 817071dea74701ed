package wasm

import (
	"testing"
	"time"
)

func TestLogLimit(t *testing.T) {
	var l logLimit
	t0 := time.Unix(1000, 0)
	// A burst of 50 lines in the first second: 20 pass, 30 are counted.
	for n := range 50 {
		ok, dropped := l.allow(t0.Add(time.Duration(n) * time.Millisecond))
		if ok != (n < logLinesPerSecond) || dropped != 0 {
			t.Fatalf("line %d: allow = %v, %d; want %v, 0", n, ok, dropped, n < logLinesPerSecond)
		}
	}
	// The first line of the next window passes and reports the 30.
	if ok, dropped := l.allow(t0.Add(1500 * time.Millisecond)); !ok || dropped != 30 {
		t.Fatalf("next window: allow = %v, %d; want true, 30", ok, dropped)
	}
	// Reported once.
	if ok, dropped := l.allow(t0.Add(1600 * time.Millisecond)); !ok || dropped != 0 {
		t.Fatalf("second line of the window: allow = %v, %d; want true, 0", ok, dropped)
	}
	// Two lines over in this window (two are used already), then a quiet spell: the count
	// waits for the next line.
	for range logLinesPerSecond {
		l.allow(t0.Add(1700 * time.Millisecond))
	}
	if ok, dropped := l.allow(t0.Add(10 * time.Second)); !ok || dropped != 2 {
		t.Fatalf("after a quiet spell: allow = %v, %d; want true, 2", ok, dropped)
	}
}
