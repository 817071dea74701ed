package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/sirupsen/logrus"
)

// distribution logs through logrus' process-wide standard logger, tagging entries with the
// "instance.id" context value. The bridge silences that logger's own output and forwards each
// entry to the slog.Logger registered for its instance id.

var (
	bridgeOnce sync.Once
	loggers    sync.Map // instance id (string) -> *slog.Logger
)

func installLogBridge() {
	bridgeOnce.Do(func() {
		std := logrus.StandardLogger()
		std.SetOutput(io.Discard)
		std.SetLevel(logrus.InfoLevel)
		std.AddHook(bridgeHook{})
	})
}

func registerLogger(id string, log *slog.Logger) { loggers.Store(id, log) }
func unregisterLogger(id string)                 { loggers.Delete(id) }

type bridgeHook struct{}

func (bridgeHook) Levels() []logrus.Level { return logrus.AllLevels }

func (bridgeHook) Fire(e *logrus.Entry) error {
	log := slog.Default()
	if id, ok := e.Data["instance.id"].(string); ok {
		if l, ok := loggers.Load(id); ok {
			log = l.(*slog.Logger)
		}
	}
	level := slogLevel(e.Level)
	// distribution logs every error response at its error level; a 4xx (a HEAD for a blob the
	// client does not know we have, a missing tag) is normal traffic, not a server fault.
	if status, ok := e.Data["http.response.status"].(int); ok && status < 500 {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !log.Enabled(ctx, level) {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(e.Data)+1)
	attrs = append(attrs, slog.String("lib", "distribution"))
	for k, v := range e.Data {
		if k == "instance.id" || k == "go.version" {
			continue
		}
		if err, ok := v.(error); ok {
			v = err.Error()
		} else if s, ok := v.(fmt.Stringer); ok {
			v = s.String()
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	log.LogAttrs(ctx, level, e.Message, attrs...)
	return nil
}

// slogLevel maps distribution's levels: its info level is one line per request, so it becomes
// debug; warnings and errors keep their level (but see Fire for error responses).
func slogLevel(l logrus.Level) slog.Level {
	switch {
	case l <= logrus.ErrorLevel: // panic, fatal, error
		return slog.LevelError
	case l == logrus.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}
