package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestIntegrationRunUplink runs `perch run` with an uplink to a mosquitto started by the test:
// the status heartbeat carries this binary's version, and state/desired {"log_level": "info"}
// changes the level of the run's own logger (from --log-level warn).
func TestIntegrationRunUplink(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs mosquitto and Wasm modules")
	}
	const mosquitto = "/usr/sbin/mosquitto"
	if _, err := os.Stat(mosquitto); err != nil {
		t.Skipf("no mosquitto: %v", err)
	}
	t.Parallel()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("persistence false\nlog_dest stderr\nlog_type error\n"+
		"listener %d 127.0.0.1\nallow_anonymous true\n", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	var brokerLog bytes.Buffer
	broker := exec.Command(mosquitto, "-c", conf)
	broker.Stdout, broker.Stderr = &brokerLog, &brokerLog
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Process.Kill(); broker.Wait() })
	url := "tcp://127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not start\n%s", brokerLog.String())
		}
	}

	cfg := fastPipeline.write(t, dir)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "uplink:\n  broker: %s\n  heartbeat: 1s\n", url)
	f.Close()

	// A subscriber to everything the device publishes.
	var mu sync.Mutex
	got := map[string][]string{} // payloads by topic
	wake := make(chan struct{}, 1)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("sub-%d", time.Now().UnixNano())))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	const prefix = "perch/test/sim-01/"
	tok := sub.Subscribe(prefix+"#", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got[m.Topic()] = append(got[m.Topic()], string(m.Payload()))
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	waitFor := func(what, topic string, cond func(payload string) bool) {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			mu.Lock()
			msgs := append([]string(nil), got[topic]...)
			mu.Unlock()
			for _, p := range msgs {
				if cond(p) {
					return
				}
			}
			select {
			case <-wake:
			case <-time.After(50 * time.Millisecond):
			case <-deadline:
				t.Fatalf("timed out waiting for %s on %s; got %q", what, topic, msgs)
			}
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--config", cfg, "--quiet", "--log-level", "warn"}, &syncBuffer{}, stderr)
	}()

	waitFor("a heartbeat with the version", prefix+"status", func(p string) bool {
		var s struct{ State, Version string }
		return json.Unmarshal([]byte(p), &s) == nil && s.State == "online" && s.Version == Version
	})
	// stderr is not a terminal: the logs are JSON lines.
	if strings.Contains(stderr.String(), `"level":"INFO"`) {
		t.Errorf("info lines at --log-level warn:\n%s", stderr.String())
	}
	if tok := sub.Publish(prefix+"state/desired", 1, false, `{"log_level": "info"}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	waitFor("the log level applied", prefix+"state/reported", func(p string) bool {
		var r struct {
			Applied map[string]string `json:"applied"`
		}
		return json.Unmarshal([]byte(p), &r) == nil && r.Applied["log_level"] == "info"
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	// The runtime logs its stop at info: the new level let it through.
	if !strings.Contains(stderr.String(), `"level":"INFO","msg":"drained and stopped"`) {
		t.Errorf("no info line after log_level info:\n%s", stderr.String())
	}
}
