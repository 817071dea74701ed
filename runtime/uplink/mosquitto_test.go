package uplink

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// mosquittoPath is the broker the integration tests start (Debian package mosquitto).
const mosquittoPath = "/usr/sbin/mosquitto"

// broker is a mosquitto the test started on a loopback port.
type broker struct {
	t    testing.TB
	dir  string
	port int
	conf string // extra listener lines (TLS)
	// persist keeps sessions and queued messages across a graceful restart.
	persist bool
	cmd     *exec.Cmd
	log     *bytes.Buffer
}

// startBroker starts mosquitto on a free loopback port with a generated config, and stops it when
// the test ends. extra is added to the listener's section (such as TLS settings).
func startBroker(t testing.TB, extra string) *broker {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	if _, err := os.Stat(mosquittoPath); err != nil {
		t.Skipf("no mosquitto: %v", err)
	}
	b := &broker{t: t, dir: t.TempDir(), port: freePort(t), conf: extra}
	// mosquitto started as root runs as the user mosquitto: let it write its persistence file.
	os.Chmod(b.dir, 0o777)
	os.Chmod(filepath.Dir(b.dir), 0o755)
	b.start()
	t.Cleanup(b.stop)
	return b
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (b *broker) url() string {
	scheme := "tcp"
	if b.conf != "" {
		scheme = "tls"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, b.port)
}

// start starts (or restarts, on the same port) the broker and waits until it accepts connections.
func (b *broker) start() {
	b.t.Helper()
	conf := filepath.Join(b.dir, "mosquitto.conf")
	persist := "persistence false\n"
	if b.persist {
		persist = "persistence true\npersistence_location " + b.dir + "/\nautosave_interval 1\n"
	}
	text := fmt.Sprintf("%slog_dest stderr\nlog_type error\nlog_type warning\nmax_queued_messages 100000\n"+
		"listener %d 127.0.0.1\nallow_anonymous true\n%s", persist, b.port, b.conf)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.log = &bytes.Buffer{}
	b.cmd = exec.Command(mosquittoPath, "-c", conf)
	b.cmd.Stderr = b.log
	b.cmd.Stdout = b.log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto did not start: %v\n%s", err, b.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the broker (SIGKILL: as abrupt as an outage) and waits for it.
func (b *broker) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Kill()
	b.cmd.Wait()
	b.cmd = nil
}

// stopGracefully stops the broker with SIGTERM: it saves its sessions if persist is set.
func (b *broker) stopGracefully() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	b.cmd.Wait()
	b.cmd = nil
}

// restart stops the broker gracefully and starts it again on the same port.
func (b *broker) restart() {
	b.stopGracefully()
	b.start()
}

// message is one message a subscriber received.
type message struct {
	topic    string
	payload  []byte
	retained bool
}

// subscriber is a test client subscribed to perch/#.
type subscriber struct {
	t      testing.TB
	client paho.Client
	mu     sync.Mutex
	msgs   []message
	wake   chan struct{}
}

// subscribe connects a client to the broker and subscribes to topic with QoS 1.
func subscribe(t testing.TB, b *broker, topic string, opts *paho.ClientOptions) *subscriber {
	t.Helper()
	s := &subscriber{t: t, wake: make(chan struct{}, 1)}
	if opts == nil {
		opts = paho.NewClientOptions()
	}
	opts.AddBroker(b.url()).SetClientID(fmt.Sprintf("sub-%d", time.Now().UnixNano())).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).SetCleanSession(false).SetOrderMatters(true)
	opts.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
			s.mu.Lock()
			s.msgs = append(s.msgs, message{topic: m.Topic(), payload: m.Payload(), retained: m.Retained()})
			s.mu.Unlock()
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}).Wait()
	})
	s.client = paho.NewClient(opts)
	if tok := s.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	return s
}

// waitFor waits until cond holds for the messages so far.
func (s *subscriber) waitFor(timeout time.Duration, what string, cond func([]message) bool) []message {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		msgs := append([]message(nil), s.msgs...)
		s.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-s.wake:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			s.t.Fatalf("timed out waiting for %s; %d messages", what, len(msgs))
		}
	}
}
