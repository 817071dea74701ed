package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/sdk/abi"
)

// TestBulkStmt: a bulkStmt binds integers, text and blobs from its arena (empty ones stay empty,
// not NULL), returns the last rowid, reports SQLite's error with its message and stays usable
// after it, and refuses parameters that do not fit the statement or the arena. It also fails if
// go-sqlite3 no longer has the field prepareBulk reads.
func TestBulkStmt(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite3", writerDSN(filepath.Join(t.TempDir(), "bulk.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (i INTEGER NOT NULL CHECK (i >= 0), s TEXT NOT NULL,
		b BLOB NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	arena := []byte("héllo\x00\x01\x02")
	text := bytesParam(paramText, 0, len("héllo"))
	blob := bytesParam(paramBlob, len("héllo"), len(arena))
	empty := bytesParam(paramText, 3, 3)
	emptyBlob := bytesParam(paramBlob, len(arena), len(arena))
	err = conn.Raw(func(dc any) error {
		st, err := prepareBulk(dc, "INSERT OR FAIL INTO t VALUES (?, ?, ?), (?, ?, ?)")
		if err != nil {
			return err
		}
		defer st.close()
		id, err := st.exec(arena, []bulkParam{intParam(7), text, blob, intParam(1 << 40), empty, emptyBlob})
		if err != nil {
			return err
		}
		if id != 2 {
			t.Errorf("rowid %d, want 2", id)
		}
		_, err = st.exec(arena, []bulkParam{intParam(-1), text, blob, intParam(1), text, blob})
		if err == nil || !strings.Contains(err.Error(), "CHECK constraint failed") {
			t.Errorf("a failing row: %v", err)
		}
		none, noBlob := bytesParam(paramText, 0, 0), bytesParam(paramBlob, 0, 0)
		if id, err := st.exec(nil, []bulkParam{intParam(3), none, noBlob, intParam(4), none, noBlob}); err != nil || id != 4 {
			t.Errorf("after an error: rowid %d, %v", id, err)
		}
		if _, err := st.exec(arena, []bulkParam{intParam(1)}); err == nil {
			t.Error("too few parameters: no error")
		}
		if _, err := st.exec(arena, []bulkParam{intParam(1), text, bytesParam(paramBlob, 2, len(arena)+1),
			intParam(1), text, blob}); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("bytes past the arena: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := conn.QueryContext(ctx, "SELECT i, typeof(s), s, typeof(b), hex(b) FROM t ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var i int64
		var ts, s, tb, b string
		if err := rows.Scan(&i, &ts, &s, &tb, &b); err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Join([]string{ts, s, tb, b}, " "))
	}
	want := []string{"text héllo blob 000102", "text  blob ", "text  blob ", "text  blob "}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("rows:\n%q\nwant\n%q", got, want)
	}
}

// TestBackgroundCheckpoint: once the commits have put walCheckpointFrames frames in the WAL, the
// checkpointer copies them into the database file from its own connection; the WAL starts over
// instead of growing past the backstop (by more than the commits during one checkpoint), and
// every row is there.
func TestBackgroundCheckpoint(t *testing.T) {
	st := openTest(t, Options{Upstream: benchUpstream()})
	batch := benchBatch(abi.KindSummary, 100)
	ts := nowNS()
	const batches = 1000 // 100,000 summaries and as many outbox rows: ~10,000 WAL frames
	maxFrames, restarts, last := 0, 0, 0
	for i := range batches {
		ts = restamp(batch, ts)
		mustWrite(t, st, batch)
		if i%20 == 19 {
			mustFlush(t, st) // the writer is idle: its walWatch may be read
			f := st.wal.frames()
			if f < last {
				restarts++
			}
			maxFrames, last = max(maxFrames, f), f
		}
	}
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM summaries"); n != batches*100 {
		t.Errorf("%d summaries, want %d", n, batches*100)
	}
	if n := queryInt(t, st.DB(), "SELECT count(*) FROM outbox"); n != batches*100 {
		t.Errorf("%d outbox rows, want %d", n, batches*100)
	}
	s := st.Stats()
	if s.Checkpoints == 0 || restarts == 0 {
		t.Errorf("%d background checkpoints, the WAL started over %d times", s.Checkpoints, restarts)
	}
	if maxFrames > 2*walBackstopFrames {
		t.Errorf("the WAL reached %d frames; the backstop is %d", maxFrames, walBackstopFrames)
	}
	t.Logf("%d commits, %d background checkpoints, WAL up to %d frames, started over %d times",
		s.Commits, s.Checkpoints, maxFrames, restarts)
}

// TestRowBudget: rows past the budget wait until the writer releases some; a batch with an alert
// may go up to twice the budget; a batch larger than the budget goes into an empty queue; a
// waiting acquire ends with its context.
func TestRowBudget(t *testing.T) {
	ctx := context.Background()
	b := rowBudget{max: 10}
	if err := b.acquire(ctx, 25, false); err != nil { // larger than max, into an empty queue
		t.Fatal(err)
	}
	b.release(25)
	for range 2 {
		if err := b.acquire(ctx, 5, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.acquire(ctx, 10, true); err != nil { // an alert: up to 20
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.acquire(ctx, 1, false) }()
	select {
	case err := <-done:
		t.Fatalf("acquired past the budget (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(10) // the alert's rows: still 10 queued, 1 more does not fit
	select {
	case err := <-done:
		t.Fatalf("acquired past the budget (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(5)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after rows were released")
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- b.acquire(cctx, 10, false) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled acquire: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a canceled acquire still waits")
	}
	if b.used != 6 {
		t.Errorf("%d rows used, want 6", b.used)
	}
}
