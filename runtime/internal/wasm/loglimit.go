package wasm

import "time"

// logLinesPerSecond is how many log lines one instance may write per second of wall time.
const logLinesPerSecond = 20

// logLimit rate-limits one instance's perch:log/v1 lines: at most [logLinesPerSecond] in each
// one-second window; the lines beyond it are counted, and the count is reported with the first
// line of a later window. The zero value is ready. Like the Instance, it is used by one goroutine
// at a time.
type logLimit struct {
	start   time.Time // the current window's start
	lines   int       // lines allowed in the current window
	dropped int       // lines dropped since the last report
}

// allow reports whether a line written at now may be logged, and how many lines were dropped
// since the last report, if a new window starts with this line (0 otherwise).
func (l *logLimit) allow(now time.Time) (ok bool, dropped int) {
	if l.start.IsZero() || now.Sub(l.start) >= time.Second {
		l.start, l.lines = now, 0
		dropped, l.dropped = l.dropped, 0
	}
	if l.lines >= logLinesPerSecond {
		l.dropped++
		return false, dropped
	}
	l.lines++
	return true, dropped
}
