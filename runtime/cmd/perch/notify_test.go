package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/internal/logx"
)

func TestNotifyAddr(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr bool
	}{
		{in: "/run/systemd/notify"},
		{in: "@perch/notify"},
		{in: "relative/notify", wantErr: true},
		{in: "@", wantErr: true},
		{in: "/", wantErr: true},
	} {
		addr, err := notifyAddr(tc.in)
		switch {
		case tc.wantErr && err == nil:
			t.Errorf("notifyAddr(%q) = %v, want an error", tc.in, addr)
		case !tc.wantErr && err != nil:
			t.Errorf("notifyAddr(%q): %v", tc.in, err)
		case !tc.wantErr && (addr.Name != tc.in || addr.Net != "unixgram"):
			t.Errorf("notifyAddr(%q) = %+v, want Name %q on unixgram", tc.in, addr, tc.in)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		wantErr   bool
	}{
		{usec: "", want: 0},
		{usec: "30000000", want: 15 * time.Second},
		{usec: "200000", pid: "42", want: 100 * time.Millisecond},
		{usec: "200000", pid: "43", want: 0}, // meant for another process
		{usec: "0", wantErr: true},
		{usec: "-5", wantErr: true},
		{usec: "soon", wantErr: true},
		{usec: "200000", pid: "me", wantErr: true},
	} {
		got, err := watchdogInterval(tc.usec, tc.pid, 42)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("watchdogInterval(%q, %q, 42) = %v, %v; want %v, error %v", tc.usec, tc.pid, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNotifyMessage(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{in: []string{"READY=1"}, want: "READY=1"},
		{in: []string{"READY=1", "STATUS=running 3 modules"}, want: "READY=1\nSTATUS=running 3 modules"},
		{in: []string{"STATUS=two\nlines"}, want: "STATUS=two lines"},
	} {
		if got := string(notifyMessage(tc.in...)); got != tc.want {
			t.Errorf("notifyMessage(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNotifierUnset(t *testing.T) {
	n, err := newNotifier(func(string) string { return "" }, 1, slog.New(slog.DiscardHandler))
	if n != nil || err != nil {
		t.Fatalf("newNotifier without NOTIFY_SOCKET = %v, %v; want nil, nil", n, err)
	}
	// A nil notifier does nothing.
	n.started(t.Context(), "x", nil)
	if err := n.send("READY=1"); err != nil {
		t.Error(err)
	}
	if err := n.Close(); err != nil {
		t.Error(err)
	}
}

// listenNotify listens on a unixgram socket named name (a path, or @abstract).
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// receive reads the next datagram, waiting up to d.
func receive(t *testing.T, conn *net.UnixConn, d time.Duration) (string, error) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	n, _, err := conn.ReadFromUnix(buf)
	return string(buf[:n]), err
}

// TestNotifierAbstract sends READY=1 and watchdog pings over an abstract socket, pings only
// while the health check passes, and STOPPING=1 when the context is done.
func TestNotifierAbstract(t *testing.T) {
	if goruntime.GOOS != "linux" {
		t.Skip("abstract sockets are Linux only")
	}
	name := fmt.Sprintf("@perch-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	conn := listenNotify(t, name)
	env := map[string]string{"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "20000"}
	n, err := newNotifier(func(k string) string { return env[k] }, os.Getpid(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	healthy := make(chan bool, 1)
	healthy <- true
	check := func(ctx context.Context) error {
		ok := <-healthy
		healthy <- ok
		if !ok {
			return errors.New("unhealthy")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	n.started(ctx, "running 3 modules", check)
	if msg, err := receive(t, conn, 5*time.Second); err != nil || msg != "READY=1\nSTATUS=running 3 modules" {
		t.Fatalf("first message %q, %v; want READY=1 and a status", msg, err)
	}
	for range 2 {
		if msg, err := receive(t, conn, 5*time.Second); err != nil || msg != "WATCHDOG=1" {
			t.Fatalf("message %q, %v; want WATCHDOG=1", msg, err)
		}
	}
	<-healthy
	healthy <- false
	time.Sleep(20 * time.Millisecond) // a ping decided before the switch may still arrive
	for {
		msg, err := receive(t, conn, 100*time.Millisecond)
		if err != nil {
			break // no pings while unhealthy
		}
		if msg != "WATCHDOG=1" {
			t.Fatalf("unexpected %q", msg)
		}
	}
	cancel()
	if msg, err := receive(t, conn, 5*time.Second); err != nil || !strings.HasPrefix(msg, "STOPPING=1\n") {
		t.Fatalf("message after cancel %q, %v; want STOPPING=1", msg, err)
	}
	if err := n.Close(); err != nil {
		t.Error(err)
	}
}

// TestLogsJSONWhenStderrIsAFile runs a short pipeline with stderr on a file: every log line is a
// JSON object.
func TestLogsJSONWhenStderrIsAFile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a pipeline")
	}
	dir := t.TempDir()
	cfg := fastPipeline.write(t, dir)
	f, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if logx.IsTerminal(f) {
		t.Fatal("a file is a terminal")
	}
	var stdout strings.Builder
	if err := run(t.Context(), []string{"run", "--config", cfg, "--quiet", "--for", "300ms", "--log-level", "info"}, &stdout, f); err != nil {
		t.Fatalf("run: %v", err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	lines, started := 0, false
	for sc := bufio.NewScanner(strings.NewReader(string(b))); sc.Scan(); lines++ {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %d is not JSON: %v\n%s", lines+1, err, sc.Bytes())
		}
		if rec["level"] == nil || rec["msg"] == nil || rec["time"] == nil {
			t.Errorf("log line %d lacks time, level or msg: %s", lines+1, sc.Bytes())
		}
		if rec["event"] == "runtime.started" {
			started = true
		}
	}
	if !started {
		t.Errorf("no runtime.started line at level info in %d lines:\n%s", lines, b)
	}
}

// TestIntegrationNotify runs perch under a fake service manager: a unixgram socket in NOTIFY_SOCKET
// and WATCHDOG_USEC=200000. It must send READY=1, then WATCHDOG=1 every 100 ms, and on SIGTERM
// STOPPING=1 and exit with status 0.
func TestIntegrationNotify(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a perch process")
	}
	t.Parallel()
	dir := t.TempDir()
	cfg := fastPipeline.write(t, dir)
	// Socket paths are limited to 108 bytes; t.TempDir() may be longer.
	sockDir, err := os.MkdirTemp("", "pn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "notify")
	conn := listenNotify(t, sock)
	p := startEnv(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}, "run", "--config", cfg, "--quiet")
	msg, err := receive(t, conn, time.Minute)
	if err != nil || !strings.HasPrefix(msg, "READY=1\n") {
		t.Fatalf("first message %q, %v; want READY=1\n%s", msg, err, &p.stderr)
	}
	t.Logf("READY=1 %v after the start: %q", time.Since(p.started).Round(time.Millisecond), msg)
	for i := range 2 {
		msg, err := receive(t, conn, 5*time.Second)
		if err != nil || msg != "WATCHDOG=1" {
			t.Fatalf("message %d after READY %q, %v; want WATCHDOG=1\n%s", i+1, msg, err, &p.stderr)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := receive(t, conn, 10*time.Second)
		if err != nil {
			t.Fatalf("no STOPPING=1 after SIGTERM: %v\n%s", err, &p.stderr)
		}
		if strings.HasPrefix(msg, "STOPPING=1") {
			break
		}
		if msg != "WATCHDOG=1" {
			t.Fatalf("unexpected %q after SIGTERM", msg)
		}
	}
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("perch after SIGTERM: %v, want exit status 0\n%s", err, &p.stderr)
	}
}
