// Package mqtttest starts real mosquitto brokers on loopback ports for tests, and makes the
// certificate authorities and certificates that TLS tests need. It is imported by tests only.
package mqtttest

import (
	"bytes"
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
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// MosquittoPath is the broker the tests start (Debian package mosquitto).
const MosquittoPath = "/usr/sbin/mosquitto"

// Broker is a mosquitto a test started on a loopback port. Its methods are for the test's
// goroutine.
type Broker struct {
	t    testing.TB
	Dir  string // the broker's folder: its config, and its persistence file if Persist
	Port int
	// Listener holds extra lines for the listener's section (such as TLS settings); with any,
	// URL says tls://.
	Listener string
	// Persist keeps sessions and queued messages across a graceful restart.
	Persist bool
	cmd     *exec.Cmd
	log     *bytes.Buffer
}

// Start starts mosquitto on a free loopback port with listener as extra listener lines, and
// stops it when the test ends. It skips the test with -short or when mosquitto is missing.
func Start(t testing.TB, listener string) *Broker {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	if _, err := os.Stat(MosquittoPath); err != nil {
		t.Skipf("no mosquitto: %v", err)
	}
	b := &Broker{t: t, Dir: t.TempDir(), Port: FreePort(t), Listener: listener}
	// mosquitto started as root runs as the user mosquitto: let it read and write its folder.
	os.Chmod(b.Dir, 0o777)
	os.Chmod(filepath.Dir(b.Dir), 0o755)
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URL is the broker's address, tcp:// or (with listener lines) tls://.
func (b *Broker) URL() string {
	scheme := "tcp"
	if b.Listener != "" {
		scheme = "tls"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, b.Port)
}

// Log is what the broker has printed since it was last started.
func (b *Broker) Log() string {
	if b.log == nil {
		return ""
	}
	return b.log.String()
}

// Start starts (or restarts, on the same port) the broker and waits until it accepts
// connections.
func (b *Broker) Start() {
	b.t.Helper()
	conf := filepath.Join(b.Dir, "mosquitto.conf")
	persist := "persistence false\n"
	if b.Persist {
		persist = "persistence true\npersistence_location " + b.Dir + "/\nautosave_interval 1\n"
	}
	text := fmt.Sprintf("%slog_dest stderr\nlog_type error\nlog_type warning\nmax_queued_messages 100000\n"+
		"listener %d 127.0.0.1\nallow_anonymous true\n%s", persist, b.Port, b.Listener)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.log = &bytes.Buffer{}
	b.cmd = exec.Command(MosquittoPath, "-c", conf)
	b.cmd.Stderr = b.log
	b.cmd.Stdout = b.log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.Port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto did not start: %v\n%s", err, b.log)
		}
	}
}

// Stop kills the broker (SIGKILL: as abrupt as an outage) and waits for it.
func (b *Broker) Stop() { b.signal(syscall.SIGKILL) }

// StopGracefully stops the broker with SIGTERM: it saves its sessions if Persist is set.
func (b *Broker) StopGracefully() { b.signal(syscall.SIGTERM) }

// Restart stops the broker gracefully and starts it again on the same port.
func (b *Broker) Restart() {
	b.StopGracefully()
	b.Start()
}

func (b *Broker) signal(sig syscall.Signal) {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(sig)
	b.cmd.Wait()
	b.cmd = nil
}

// CA is a certificate authority made for one test.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // the CA certificate, PEM-encoded
}

var serial atomic.Int64

// NewCA makes a CA named name, valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Issue writes a certificate signed by ca, valid until notAfter, and its key to dir/name.pem and
// dir/name.key (readable by all: mosquitto runs as its own user). A server certificate is for
// 127.0.0.1; a client certificate is for client authentication.
func (ca *CA) Issue(t testing.TB, dir, name string, server bool, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	WriteFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	WriteFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

// WriteFile writes data to path, readable by all, or fails the test.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// MutualTLS is a broker that requires client certificates from CA, with the files a client needs.
type MutualTLS struct {
	*Broker
	CA     *CA
	CAFile string // the CA certificate, for clients to trust the broker
	Dir    string // where the certificates are
}

// StartMutualTLS makes a CA and a server certificate and starts a broker that requires client
// certificates signed by that CA. Issue client certificates with m.CA.Issue(t, m.Dir, ...).
func StartMutualTLS(t testing.TB) *MutualTLS {
	t.Helper()
	dir := t.TempDir()
	// mosquitto started as root reads its files as the user mosquitto.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	ca := NewCA(t, "perch test CA")
	caFile := filepath.Join(dir, "ca.pem")
	WriteFile(t, caFile, ca.PEM)
	srvCert, srvKey := ca.Issue(t, dir, "broker", true, time.Now().Add(24*time.Hour))
	b := Start(t, fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n", caFile, srvCert, srvKey))
	return &MutualTLS{Broker: b, CA: ca, CAFile: caFile, Dir: dir}
}
