package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// notifier speaks the service manager's notify socket protocol (sd_notify(3)) without a
// dependency: each message is one datagram of newline-separated KEY=VALUE assignments, sent to
// the unixgram socket named by NOTIFY_SOCKET (a path, or an abstract name starting with @).
//
// A nil *notifier (no NOTIFY_SOCKET) is valid: every method does nothing. Methods are safe for
// concurrent use. Close it when done.
type notifier struct {
	conn     *net.UnixConn
	log      *slog.Logger
	watchdog time.Duration // the ping interval (WATCHDOG_USEC/2); 0: no watchdog
	// healthy reports whether the pipeline is alive; the watchdog pings only while it returns
	// nil. Set by started, before the watchdog goroutine starts.
	healthy func(ctx context.Context) error

	stop chan struct{} // closed by Close
	done sync.WaitGroup
	once sync.Once
}

// newNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through getenv and connects
// to the socket. It returns nil, nil if NOTIFY_SOCKET is unset.
func newNotifier(getenv func(string) string, pid int, log *slog.Logger) (*notifier, error) {
	name := getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil, nil
	}
	addr, err := notifyAddr(name)
	if err != nil {
		return nil, err
	}
	wd, err := watchdogInterval(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), pid)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return nil, fmt.Errorf("perch: NOTIFY_SOCKET: %w", err)
	}
	return &notifier{conn: conn, log: log, watchdog: wd, stop: make(chan struct{})}, nil
}

// notifyAddr returns the socket address for NOTIFY_SOCKET: an absolute path, or @name for a
// Linux abstract socket (Go maps the leading @ to the NUL byte).
func notifyAddr(name string) (*net.UnixAddr, error) {
	if (!strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@")) || len(name) < 2 {
		return nil, fmt.Errorf("perch: NOTIFY_SOCKET %q: want an absolute path or @name", name)
	}
	return &net.UnixAddr{Name: name, Net: "unixgram"}, nil
}

// watchdogInterval returns how often to ping: half of WATCHDOG_USEC, or 0 if it is unset or
// meant for another process (WATCHDOG_PID set and not pid).
func watchdogInterval(usec, wdPID string, pid int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if wdPID != "" {
		p, err := strconv.Atoi(wdPID)
		if err != nil {
			return 0, fmt.Errorf("perch: WATCHDOG_PID %q: %w", wdPID, err)
		}
		if p != pid {
			return 0, nil
		}
	}
	n, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("perch: WATCHDOG_USEC %q: want a positive number of microseconds", usec)
	}
	return time.Duration(n) * time.Microsecond / 2, nil
}

// notifyMessage joins assignments into one datagram. A newline inside a value would start a new
// assignment, so it becomes a space.
func notifyMessage(assignments ...string) []byte {
	for i, a := range assignments {
		assignments[i] = strings.ReplaceAll(a, "\n", " ")
	}
	return []byte(strings.Join(assignments, "\n"))
}

// send sends one message of assignments ("READY=1", "STATUS=...").
func (n *notifier) send(assignments ...string) error {
	if n == nil {
		return nil
	}
	_, err := n.conn.Write(notifyMessage(assignments...))
	return err
}

// started sends READY=1 and a status, then, until ctx is done or Close, pings the watchdog while
// healthy returns nil; when ctx is done it sends STOPPING=1. It is the runtime's OnStarted hook.
func (n *notifier) started(ctx context.Context, status string, healthy func(context.Context) error) {
	if n == nil {
		return
	}
	n.healthy = healthy
	if err := n.send("READY=1", "STATUS="+status); err != nil {
		n.log.Warn("notify: sending READY=1 failed", "err", err)
	}
	n.done.Add(1)
	go func() {
		defer n.done.Done()
		var tick <-chan time.Time
		if n.watchdog > 0 {
			t := time.NewTicker(n.watchdog)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-n.stop:
				return
			case <-ctx.Done():
				if err := n.send("STOPPING=1", "STATUS=draining the pipeline and flushing the recorder"); err != nil {
					n.log.Warn("notify: sending STOPPING=1 failed", "err", err)
				}
				return
			case <-tick:
				n.ping(ctx)
			}
		}
	}()
}

// ping sends WATCHDOG=1 if healthy answers nil within the ping interval.
func (n *notifier) ping(ctx context.Context) {
	if n.healthy != nil {
		hctx, cancel := context.WithTimeout(ctx, n.watchdog)
		err := n.healthy(hctx)
		cancel()
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				n.log.Warn("notify: the pipeline is not healthy; no watchdog ping", "err", err)
			}
			return
		}
	}
	if err := n.send("WATCHDOG=1"); err != nil {
		n.log.Warn("notify: sending WATCHDOG=1 failed", "err", err)
	}
}

// Close stops the watchdog and closes the socket.
func (n *notifier) Close() error {
	if n == nil {
		return nil
	}
	var err error
	n.once.Do(func() {
		close(n.stop)
		n.done.Wait()
		err = n.conn.Close()
	})
	return err
}
