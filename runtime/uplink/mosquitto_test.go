package uplink

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/internal/mqtttest"
)

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
func subscribe(t testing.TB, b *mqtttest.Broker, topic string, opts *paho.ClientOptions) *subscriber {
	t.Helper()
	s := &subscriber{t: t, wake: make(chan struct{}, 1)}
	if opts == nil {
		opts = paho.NewClientOptions()
	}
	opts.AddBroker(b.URL()).SetClientID(fmt.Sprintf("sub-%d", time.Now().UnixNano())).
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
