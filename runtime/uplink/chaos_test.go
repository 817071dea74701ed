package uplink

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

// The chaos child: a process with a store and an uplink that the test kills with SIGKILL.
const (
	chaosDBEnv     = "PERCH_UPLINK_CHAOS_DB"     // set: this process is the child; the database
	chaosBrokerEnv = "PERCH_UPLINK_CHAOS_BROKER" // the broker URL
	chaosRoundEnv  = "PERCH_UPLINK_CHAOS_ROUND"  // the round, a tag of every alert
	chaosWriteEnv  = "PERCH_UPLINK_CHAOS_WRITE"  // "1": write alerts; otherwise only drain
)

func TestMain(m *testing.M) {
	if db := os.Getenv(chaosDBEnv); db != "" {
		os.Exit(runChaosChild(db))
	}
	os.Exit(m.Run())
}

// runChaosChild writes numbered alerts and summaries (if asked) while its uplink drains the
// outbox, summaries in 1s batches, gzipped (as by default, shorter). It prints
// "committed N" after each Flush, and "empty" when it writes nothing and the outbox is empty.
// It never returns on its own.
func runChaosChild(db string) int {
	ctx := context.Background()
	cfg := testConfig(os.Getenv(chaosBrokerEnv))
	cfg.Uplink.InFlight = 32
	cfg.Uplink.Summaries = config.Summaries{Batch: config.Duration(time.Second), Compress: true}
	st, err := store.Open(ctx, store.Options{Path: db, Upstream: Upstream(cfg), CommitInterval: 2 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	up, err := New(cfg, st, Options{BackoffMin: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond,
		ConnectTimeout: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	go up.Run(ctx)
	round := os.Getenv(chaosRoundEnv)
	write := os.Getenv(chaosWriteEnv) == "1"
	for n := 0; ; n++ {
		if write {
			b := abi.Append(nil, abi.KindAlert, time.Now().UnixNano(), "chaos", "alert",
				[]abi.Field{{Name: "n", Value: float64(n)}}, []abi.Tag{{Key: "round", Value: round}})
			b = abi.Append(b, abi.KindSummary, time.Now().UnixNano(), "chaos", "summary",
				[]abi.Field{{Name: "n", Value: float64(n)}}, []abi.Tag{{Key: "round", Value: round}})
			if err := st.Write(b); err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
			}
			if n%5 == 4 {
				if err := st.Flush(ctx); err == nil {
					fmt.Printf("committed %d\n", n)
				}
			}
			time.Sleep(time.Millisecond)
			continue
		}
		time.Sleep(20 * time.Millisecond)
		if s, err := st.OutboxStats(ctx); err == nil && s.Rows == 0 {
			fmt.Println("empty")
		}
	}
}

// chaosChild is a running child.
type chaosChild struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChaosChild(t *testing.T, db, brokerURL string, round int, write bool) *chaosChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	w := "0"
	if write {
		w = "1"
	}
	cmd.Env = append(os.Environ(), chaosDBEnv+"="+db, chaosBrokerEnv+"="+brokerURL,
		chaosRoundEnv+"="+strconv.Itoa(round), chaosWriteEnv+"="+w)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &chaosChild{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
	}()
	return c
}

func (c *chaosChild) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
}

// TestIntegrationChaos: the broker is stopped for a while as alerts keep coming, then the
// process that drains the outbox is killed with SIGKILL at random points, round after round.
// Every alert committed to the recorder (and so to the outbox) must reach the subscriber, in
// order, with duplicates only of the same message id; so must every summary, in batches (first
// arrivals in order of id, a duplicate only ever the same summary under the same id). By default it is short (5 rounds, a 1 s
// outage); `make chaos` sets PERCH_CHAOS_ROUNDS=50 and PERCH_CHAOS_OUTAGE=20s.
func TestIntegrationChaos(t *testing.T) {
	rounds, outage := 5, time.Second
	if v := os.Getenv("PERCH_CHAOS_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("PERCH_CHAOS_OUTAGE"); v != "" {
		outage, _ = time.ParseDuration(v)
	}
	b := mqtttest.Start(t, "")
	b.Persist = true
	b.Restart()
	sub := subscribe(t, b, testPrefix+TopicAlerts, nil)
	subS := subscribe(t, b, testPrefix+TopicSummaries, nil)
	db := filepath.Join(t.TempDir(), "perch.db")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d rounds, outage %v", seed, rounds, outage)
	rng := rand.New(rand.NewPCG(seed, 1))

	// Phase 1: alerts keep coming while the broker is down; the writer is killed now and then.
	round := 0
	child := startChaosChild(t, db, b.URL(), round, true)
	time.Sleep(200 * time.Millisecond)
	b.StopGracefully()
	deadline := time.Now().Add(outage)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		child.kill()
		round++
		child = startChaosChild(t, db, b.URL(), round, true)
	}
	b.Start()

	// Phase 2: the drain, killed at random points; each round also writes a few alerts.
	for i := 0; i < rounds; i++ {
		time.Sleep(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		child.kill()
		round++
		child = startChaosChild(t, db, b.URL(), round, rng.IntN(2) == 0)
	}
	child.kill()

	// Phase 3: drain to the end.
	child = startChaosChild(t, db, b.URL(), round+1, false)
	defer child.kill()
	drainBy := time.After(5*time.Minute + outage)
	for drained := false; !drained; {
		select {
		case l := <-child.lines:
			drained = l == "empty"
		case <-drainBy:
			t.Fatal("the outbox did not drain")
		}
	}
	child.kill()

	// What the recorder holds is what was committed: all of it must have arrived.
	st, err := store.Open(context.Background(), store.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	committed := func(table string) []string {
		var out []string
		rows, err := st.DB().Query(`SELECT json_extract(tags, '$.round') || '/' || json_extract(fields, '$.n')
			FROM ` + table + ` ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			rows.Scan(&k)
			out = append(out, k)
		}
		return out
	}
	want, wantS := committed("alerts"), committed("summaries")
	st.Close()
	msgs := sub.waitFor(time.Minute, fmt.Sprintf("%d alerts", len(want)), func(ms []message) bool {
		return len(distinct(ms)) >= len(want)
	})
	// First arrivals, in order of arrival, must be the alerts in commit order, with increasing ids.
	seen := map[int64]string{}
	var got []string
	var lastID int64
	dups := 0
	for _, m := range msgs {
		var o struct {
			ID     int64              `json:"id"`
			Fields map[string]float64 `json:"fields"`
			Tags   map[string]string  `json:"tags"`
		}
		if err := json.Unmarshal(m.payload, &o); err != nil {
			t.Fatal(err)
		}
		key := o.Tags["round"] + "/" + strconv.Itoa(int(o.Fields["n"]))
		if prev, ok := seen[o.ID]; ok {
			dups++
			if prev != key {
				t.Errorf("id %d is %s and %s", o.ID, prev, key)
			}
			continue
		}
		if o.ID < lastID {
			t.Errorf("id %d after %d", o.ID, lastID)
		}
		lastID = o.ID
		seen[o.ID] = key
		got = append(got, key)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("received %d alerts, committed %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	t.Logf("%d rounds, %d alerts committed and received, %d duplicates", round, len(want), dups)

	// The summaries, in batches.
	keyOf := func(o outMsg) string { return o.Tags["round"] + "/" + strconv.Itoa(int(o.Fields["n"])) }
	msgs = subS.waitFor(time.Minute, fmt.Sprintf("%d summaries", len(wantS)), func(ms []message) bool {
		ids := map[int64]bool{}
		for _, m := range ms {
			for _, o := range decodeBatch(t, m.payload) {
				ids[o.ID] = true
			}
		}
		return len(ids) >= len(wantS)
	})
	seen, got, lastID, dups = map[int64]string{}, nil, 0, 0
	for _, m := range msgs {
		for _, o := range decodeBatch(t, m.payload) {
			if prev, ok := seen[o.ID]; ok {
				dups++
				if prev != keyOf(o) {
					t.Errorf("summary id %d is %s and %s", o.ID, prev, keyOf(o))
				}
				continue
			}
			if o.ID < lastID {
				t.Errorf("summary id %d first seen after %d", o.ID, lastID)
			}
			lastID = o.ID
			seen[o.ID] = keyOf(o)
			got = append(got, keyOf(o))
		}
	}
	if strings.Join(got, " ") != strings.Join(wantS, " ") {
		t.Errorf("received %d summaries, committed %d; first difference at %d", len(got), len(wantS), firstDiff(got, wantS))
	}
	t.Logf("%d summaries committed and received in %d messages, %d duplicates", len(wantS), len(msgs), dups)
}

func distinct(ms []message) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		out[string(m.payload)] = true
	}
	return out
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestIntegrationKill9LastWill: when the process is killed with SIGKILL, the broker publishes
// its last will, offline; when it starts again, status is back online.
func TestIntegrationKill9LastWill(t *testing.T) {
	b := mqtttest.Start(t, "")
	sub := subscribe(t, b, testPrefix+TopicStatus, nil)
	db := filepath.Join(t.TempDir(), "perch.db")
	child := startChaosChild(t, db, b.URL(), 0, false)
	defer func() { child.kill() }()
	last := func(state string) func([]message) bool {
		return func(ms []message) bool { return len(ms) > 0 && isState(state)(ms[len(ms)-1]) }
	}
	sub.waitFor(20*time.Second, "online", last("online"))
	child.kill()
	sub.waitFor(20*time.Second, "offline after kill -9", last("offline"))
	child = startChaosChild(t, db, b.URL(), 1, false)
	sub.waitFor(20*time.Second, "online after restart", last("online"))
}
