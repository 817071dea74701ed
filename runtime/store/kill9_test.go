package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

const (
	kill9ChildEnv    = "PERCH_STORE_KILL9_DIR"   // set: this process is the child, writing there
	kill9RoundEnv    = "PERCH_STORE_KILL9_ROUND" // the child's round: its records' series
	kill9Readings    = 20                        // readings per batch, plus one alert
	kill9FlushEvery  = 5                         // batches between two Flushes
	kill9Rounds      = 5
	kill9ChildReport = "committed "
)

// runKill9Child is the process TestIntegrationKill9 kills. It writes batches of readings and an
// alert, numbered from 0, and after each Flush prints "committed N": batches 0..N-1 are durable.
// Events and state writes run beside it. It never returns on its own.
func runKill9Child(dir string) int {
	ctx := context.Background()
	series := "round" + os.Getenv(kill9RoundEnv)
	st, err := Open(ctx, Options{Path: filepath.Join(dir, "perch.db"), ReadingsMaxRows: 1 << 30,
		CommitInterval: 5 * time.Millisecond, Upstream: testUpstream})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	go func() { // more writers, so that the kill also lands in their transactions
		for i := 0; ; i++ {
			if err := st.Event(ctx, Event{Kind: "test.noise", Module: series, Fields: map[string]any{"i": i}}); err != nil {
				fmt.Fprintln(os.Stderr, "child: event:", err)
			}
			if err := st.SetState(ctx, series, "i", []byte(strconv.Itoa(i))); err != nil {
				fmt.Fprintln(os.Stderr, "child: state:", err)
			}
		}
	}()
	var b []byte
	for n := 0; ; n++ {
		b = b[:0]
		ts := time.Now().UnixNano()
		for i := 0; i < kill9Readings; i++ {
			b = abi.Append(b, abi.KindReading, ts, "child", series,
				[]abi.Field{{Name: "batch", Value: float64(n)}, {Name: "i", Value: float64(i)}}, nil)
		}
		b = abi.Append(b, abi.KindAlert, ts, "child", series, []abi.Field{{Name: "batch", Value: float64(n)}},
			[]abi.Tag{{Key: "severity", Value: "critical"}})
		if err := st.Write(b); err != nil {
			fmt.Fprintln(os.Stderr, "child: write:", err)
			return 2
		}
		if n%kill9FlushEvery == kill9FlushEvery-1 {
			if err := st.Flush(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "child: flush:", err)
				return 2
			}
			fmt.Printf("%s%d\n", kill9ChildReport, n+1) // one write(2): a line is all or nothing
		}
	}
}

// TestIntegrationKill9 runs a child process that writes and flushes in a loop, kills it with
// SIGKILL at a random moment, and checks that every batch the child reported committed is in
// the database, whole, that each alert and event is in the outbox exactly when it is in its table
// (the same transaction), and that the database is sound. Each round reopens the database the
// last one left behind.
func TestIntegrationKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs and kills child processes")
	}
	dir := t.TempDir()
	committed := map[string]int{} // series -> batches reported committed
	for round := 0; round < kill9Rounds; round++ {
		series := "round" + strconv.Itoa(round)
		committed[series] = killChild(t, dir, round)
		t.Logf("round %d: child killed after reporting %d batches committed", round, committed[series])

		st := openTest(t, Options{Path: filepath.Join(dir, "perch.db"), ReadingsMaxRows: 1 << 30})
		db := st.DB()
		if got := queryString(t, db, "PRAGMA integrity_check"); got != "ok" {
			t.Fatalf("round %d: integrity_check: %s", round, got)
		}
		for s, n := range committed { // this round's and every earlier one's
			if got := queryInt(t, db, `SELECT count(*) FROM alerts WHERE series = ? AND json_extract(fields, '$.batch') < ?`, s, n); got != int64(n) {
				t.Errorf("round %d: %s: %d of the %d alerts reported committed are there", round, s, got, n)
			}
			if got := queryInt(t, db, `SELECT count(*) FROM readings WHERE series = ? AND json_extract(fields, '$.batch') < ?`, s, n); got != int64(n*kill9Readings) {
				t.Errorf("round %d: %s: %d of the %d readings reported committed are there", round, s, got, n*kill9Readings)
			}
			alerts := queryInt(t, db, "SELECT count(*) FROM alerts WHERE series = ?", s)
			queued := queryInt(t, db, `SELECT count(*) FROM outbox WHERE priority = ?
				AND json_extract(CAST(payload AS TEXT), '$.series') = ?`, PriorityAlert, s)
			if queued != alerts {
				t.Errorf("round %d: %s: %d alerts, %d of them in the outbox", round, s, alerts, queued)
			}
		}
		events := queryInt(t, db, "SELECT count(*) FROM events WHERE kind = 'test.noise'")
		queued := queryInt(t, db, `SELECT count(*) FROM outbox WHERE priority = ?
			AND json_extract(CAST(payload AS TEXT), '$.series') = 'test.noise'`, PriorityEvent)
		if events == 0 || queued != events {
			t.Errorf("round %d: %d events, %d of them in the outbox", round, events, queued)
		}
		if n, c := queryInt(t, db, "SELECT count(*) FROM outbox"), queryInt(t, db,
			"SELECT outbox_rows FROM uplink_counters"); n != c {
			t.Errorf("round %d: %d outbox rows, the counter says %d", round, n, c)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// killChild starts the child for a round, lets it commit for a random few hundred ms, kills it
// with SIGKILL and returns the last count of batches it reported committed.
func killChild(t *testing.T, dir string, round int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), kill9ChildEnv+"="+dir, kill9RoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last atomic.Int64        // the child's last report
	first := make(chan struct{}) // closed at its first report
	done := make(chan struct{})  // closed when its stdout ends
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n, ok := strings.CutPrefix(sc.Text(), kill9ChildReport)
			v, err := strconv.Atoi(n)
			if !ok || err != nil {
				continue
			}
			if last.Swap(int64(v)) == 0 {
				close(first)
			}
		}
	}()

	select {
	case <-first:
	case <-done:
		cmd.Wait()
		t.Fatalf("round %d: the child exited before its first commit: %s", round, stderr.String())
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("round %d: no commit from the child in 2 minutes", round)
	}
	time.Sleep(time.Duration(100+rand.IntN(500)) * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done // what it printed before it died is read
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child ended with %v, not by SIGKILL: %s", round, err, stderr.String())
	}
	return int(last.Load())
}
