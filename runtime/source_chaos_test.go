package runtime

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/store"
)

// sourceChildEnv, when set, makes the test binary a child that runs the runtime on the config
// the variable names, until it is killed.
const sourceChildEnv = "PERCH_SOURCE_CHAOS_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(sourceChildEnv); path != "" {
		os.Exit(runSourceChild(path))
	}
	os.Exit(m.Run())
}

func runSourceChild(path string) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	rt, err := New(context.Background(), cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if err := rt.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	return 0
}

// TestIntegrationSourceKill9: devices publish numbered readings (QoS 1) without pause while the
// runtime that subscribes to them is killed with SIGKILL at random moments, round after round.
// Afterwards every reading the broker accepted is in the recorder: a message is acknowledged only
// once its reading is committed, so the broker sends again what a killed runtime had not
// committed.
func TestIntegrationSourceKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs mosquitto and kills child processes")
	}
	rounds := 8
	if v, err := strconv.Atoi(os.Getenv("PERCH_CHAOS_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	b := mqtttest.Start(t, "")
	dir := t.TempDir()
	db := filepath.Join(dir, "perch.db")
	cfgPath := filepath.Join(dir, "perch.yaml")
	text := fmt.Sprintf(`site: chaos
device: box
store: {path: %q}
sources:
  - name: devices
    broker: %s
    topics: ["seq/#"]
    client_id: perch-source-chaos-%d
    format: value
    batch_wait: 20ms
`, db, b.URL(), time.Now().UnixNano())
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run", "^$")
		cmd.Env = append(os.Environ(), sourceChildEnv+"="+cfgPath)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	query := func(q string) int {
		t.Helper()
		rdb, err := store.OpenReadOnly(db)
		if err != nil {
			return -1 // not created yet
		}
		defer rdb.Close()
		var n int
		if err := rdb.QueryRow(q).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	waitFor := func(what, q string, want int) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); query(q) < want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %d, want %d", what, query(q), want)
			}
		}
	}
	// The first run makes the broker's persistent session: from then on the broker keeps our
	// messages while the runtime is down.
	cmd := start()
	waitFor("the source to subscribe", `SELECT count(*) FROM events WHERE kind = 'source.connected'`, 1)

	pub := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID(fmt.Sprintf("dev-%d", time.Now().UnixNano())))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	stop := make(chan struct{})
	acked := make(chan int, 1)
	go func() {
		n := 0
		defer func() { acked <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// n+1 is accepted by the broker once Publish's token completes without error.
			if tok := pub.Publish("seq/dev1", 1, false, strconv.Itoa(n+1)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("publish %d: %v", n+1, tok.Error())
				return
			}
			n++
			if n%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for range rounds {
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		cmd = start()
	}
	close(stop)
	n := <-acked
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if n < 100 {
		t.Fatalf("only %d messages published", n)
	}
	// Every accepted message reaches the recorder, some perhaps twice (sent again after a kill).
	distinct := `SELECT count(DISTINCT json_extract(fields, '$.value')) FROM readings WHERE source = 'devices/dev1'`
	waitFor(fmt.Sprintf("all %d readings", n), distinct, n)
	if got := query(`SELECT max(json_extract(fields, '$.value')) FROM readings WHERE source = 'devices/dev1'`); got != n {
		t.Errorf("largest reading %d, want %d", got, n)
	}
	t.Logf("%d rounds: %d messages published, %d readings recorded (%d distinct)", rounds, n,
		query(`SELECT count(*) FROM readings WHERE source = 'devices/dev1'`), query(distinct))
}
