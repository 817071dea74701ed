// Package logx makes the log handler Perch's commands share: text on a terminal, one JSON
// object a line otherwise (journald, files, pipes).
package logx

import (
	"io"
	"log/slog"
	"os"
)

// Handler returns a handler writing to w at level: text if w is a terminal, else JSON.
func Handler(w io.Writer, level slog.Leveler) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if IsTerminal(w) {
		return slog.NewTextHandler(w, opts)
	}
	return slog.NewJSONHandler(w, opts)
}

// IsTerminal reports whether w is a character device such as a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
