package uplink

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/mqtttest"
	"github.com/perch-edge/perch/runtime/store"
)

// TestIntegrationMutualTLS: a broker that requires client certificates from its CA accepts the
// right one and refuses one from another CA and an expired one.
func TestIntegrationMutualTLS(t *testing.T) {
	m := mqtttest.StartMutualTLS(t)
	b, ca, caFile, dir := m.Broker, m.CA, m.CAFile, m.Dir
	other := mqtttest.NewCA(t, "someone else")

	good, goodKey := ca.Issue(t, dir, "box1", false, time.Now().Add(24*time.Hour))
	foreign, foreignKey := other.Issue(t, dir, "intruder", false, time.Now().Add(24*time.Hour))
	expired, expiredKey := ca.Issue(t, dir, "old", false, time.Now().Add(-time.Hour))

	// A subscriber with the good certificate watches status.
	tc, err := config.TLS{CAFile: caFile, CertFile: good, KeyFile: goodKey}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, testPrefix+TopicStatus, paho.NewClientOptions().SetTLSConfig(tc))

	for _, tc := range []struct {
		name, cert, key string
		ok              bool
	}{
		{"right certificate", good, goodKey, true},
		{"another CA", foreign, foreignKey, false},
		{"expired", expired, expiredKey, false},
		{"no certificate", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(b.URL())
			cfg.Uplink.ClientID = "perch-" + filepath.Base(tc.cert)
			cfg.Uplink.TLS = config.TLS{CAFile: caFile, CertFile: tc.cert, KeyFile: tc.key}
			u, err := newUplink(cfg, nopOutbox{}, Options{ConnectTimeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res := make(chan error, 1)
			go func() {
				connected, err := u.session(ctx)
				if !connected && err == nil {
					err = fmt.Errorf("not connected")
				}
				res <- err
			}()
			if tc.ok {
				sub.waitFor(10*time.Second, "online", func(ms []message) bool { return count(ms, testPrefix+TopicStatus, isState("online")) > 0 })
				cancel()
				if err := <-res; err != nil {
					t.Errorf("session: %v", err)
				}
				return
			}
			select {
			case err := <-res:
				if err == nil {
					t.Error("connected")
				}
				t.Logf("refused: %v", err)
			case <-time.After(10 * time.Second):
				t.Error("neither connected nor refused")
			}
		})
	}
}

// nopOutbox is an empty outbox.
type nopOutbox struct{}

func (nopOutbox) OutboxPending(context.Context, store.OutboxCursor, int) ([]store.OutboxRow, error) {
	return nil, nil
}
func (nopOutbox) Ack(context.Context, []int64) error { return nil }
func (nopOutbox) OutboxStats(context.Context) (store.OutboxStats, error) {
	return store.OutboxStats{}, nil
}
func (nopOutbox) OutboxNotify() <-chan struct{}                         { return nil }
func (nopOutbox) LastSteps(context.Context) ([]store.UpdateStep, error) { return nil, nil }
