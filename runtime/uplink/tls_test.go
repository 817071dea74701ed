package uplink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
)

// certAuthority is a CA made for one test.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64

func newCA(t *testing.T, name string) *certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &certAuthority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate signed by ca and its key to dir/name.pem and dir/name.key.
func (ca *certAuthority) issue(t *testing.T, dir, name string, server bool, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	write(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationMutualTLS: a broker that requires client certificates from its CA accepts the
// right one and refuses one from another CA and an expired one.
func TestIntegrationMutualTLS(t *testing.T) {
	dir := t.TempDir()
	// mosquitto started as root reads its files as the user mosquitto.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	ca, other := newCA(t, "perch test CA"), newCA(t, "someone else")
	caFile := filepath.Join(dir, "ca.pem")
	write(t, caFile, ca.pem)
	srvCert, srvKey := ca.issue(t, dir, "broker", true, time.Now().Add(24*time.Hour))
	os.Chmod(srvKey, 0o644)
	b := startBroker(t, fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n", caFile, srvCert, srvKey))

	good, goodKey := ca.issue(t, dir, "box1", false, time.Now().Add(24*time.Hour))
	foreign, foreignKey := other.issue(t, dir, "intruder", false, time.Now().Add(24*time.Hour))
	expired, expiredKey := ca.issue(t, dir, "old", false, time.Now().Add(-time.Hour))

	// A subscriber with the good certificate watches status.
	tc, err := tlsConfig(config.TLS{CAFile: caFile, CertFile: good, KeyFile: goodKey})
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
			cfg := testConfig(b.url())
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
func (nopOutbox) OutboxNotify() <-chan struct{} { return nil }
