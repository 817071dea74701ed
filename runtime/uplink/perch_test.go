package uplink

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/internal/mqtttest"
)

// TestIntegrationPerchKill9 runs the perch binary on the demo pipeline with an uplink: its
// summaries arrive on the summaries topic, in gzipped batches, status goes offline (the last will) when the process
// is killed with SIGKILL, and online again when it starts again.
func TestIntegrationPerchKill9(t *testing.T) {
	b := mqtttest.Start(t, "")
	modules, err := filepath.Abs("../../build/modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"bme280", "window", "threshold"} {
		if _, err := os.Stat(filepath.Join(modules, m+".wasm")); err != nil {
			t.Skipf("%v: run `make modules` first", err)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "perch")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/perch-edge/perch/runtime/cmd/perch").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	demo, err := os.ReadFile("../../examples/demo/perch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(demo), "../../build/", filepath.Dir(modules)+"/")
	text = strings.ReplaceAll(text, "../../var/perch.db", filepath.Join(dir, "perch.db"))
	// The default summaries batches, shortened.
	text += "\nuplink:\n  broker: " + b.URL() + "\n  heartbeat: 1s\n  summaries: {batch: 2s}\n"
	cfgPath := filepath.Join(dir, "perch.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, "perch/demo/sim-01/#", nil)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--config", cfgPath, "--quiet")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	status := "perch/demo/sim-01/" + TopicStatus
	lastStatus := func(state string) func([]message) bool {
		return func(ms []message) bool {
			for i := len(ms) - 1; i >= 0; i-- {
				if ms[i].topic == status {
					return isState(state)(ms[i])
				}
			}
			return false
		}
	}
	cmd := start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	msgs := sub.waitFor(60*time.Second, "a summary", func(ms []message) bool {
		return count(ms, "perch/demo/sim-01/"+TopicSummaries, nil) > 0 && lastStatus("online")(ms)
	})
	for _, m := range msgs {
		if m.topic == "perch/demo/sim-01/"+TopicSummaries {
			for _, o := range decodeBatch(t, m.payload) {
				if o.ID <= 0 || o.Source != "env-window" || o.Kind != "summary" {
					t.Errorf("summary %+v", o)
				}
			}
		}
	}
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
	sub.waitFor(20*time.Second, "offline after kill -9", lastStatus("offline"))
	cmd = start()
	sub.waitFor(30*time.Second, "online after restart", lastStatus("online"))
}
