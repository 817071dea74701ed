package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// start runs a server on a free loopback port until the test ends.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	return s
}

func do(t *testing.T, c *http.Client, method, url string, body []byte, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pushBlob uploads b monolithically (POST then PUT) and returns its digest.
func pushBlob(t *testing.T, base, repo string, b []byte) string {
	t.Helper()
	resp, _ := do(t, nil, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	if strings.HasPrefix(loc, "/") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	d := digest(b)
	resp, body := do(t, nil, http.MethodPut, loc+sep+"digest="+d, b, "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: %s %s", resp.Status, body)
	}
	return d
}

func pushManifest(t *testing.T, base, repo, tag string, config, layer []byte) string {
	t.Helper()
	cd, ld := pushBlob(t, base, repo, config), pushBlob(t, base, repo, layer)
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.wasm.config.v0+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/wasm","digest":%q,"size":%d}]}`, cd, len(config), ld, len(layer))
	resp, body := do(t, nil, http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, []byte(m),
		"Content-Type", "application/vnd.oci.image.manifest.v1+json")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %s %s", resp.Status, body)
	}
	return digest([]byte(m))
}

// recorder is a slog handler that keeps every record.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var comp string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "lib" {
			comp = a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, comp+": "+rec.Level.String()+" "+rec.Message)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.msgs, "\n")
}

// Two registries in one process keep their content and their logs apart, and delete works.
func TestIntegrationTwoServers(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	var logA, logB recorder
	a := start(t, Config{Logger: slog.New(&logA)})
	b := start(t, Config{Logger: slog.New(&logB)})
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers on %s", a.Addr())
	}
	for _, s := range []*Server{a, b} {
		resp, _ := do(t, nil, http.MethodGet, s.URL()+"/v2/", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Fatalf("GET /v2/ on %s: %s %v", s.Addr(), resp.Status, resp.Header)
		}
	}

	wasm := []byte("\x00asm\x01\x00\x00\x00")
	md := pushManifest(t, a.URL(), "modules/threshold", "v1", []byte(`{"architecture":"wasm","os":"wasip1"}`), wasm)

	resp, body := do(t, nil, http.MethodGet, a.URL()+"/v2/modules/threshold/manifests/v1", nil,
		"Accept", "application/vnd.oci.image.manifest.v1+json")
	if resp.StatusCode != http.StatusOK || digest(body) != md || resp.Header.Get("Docker-Content-Digest") != md {
		t.Fatalf("GET manifest from a: %s digest %s, want %s", resp.Status, digest(body), md)
	}
	resp, body = do(t, nil, http.MethodGet, a.URL()+"/v2/modules/threshold/blobs/"+digest(wasm), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, wasm) {
		t.Fatalf("GET blob from a: %s %q", resp.Status, body)
	}
	if resp, _ := do(t, nil, http.MethodGet, b.URL()+"/v2/modules/threshold/manifests/v1", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET manifest from b: %s, want 404 (separate roots)", resp.Status)
	}

	resp, body = do(t, nil, http.MethodDelete, a.URL()+"/v2/modules/threshold/manifests/"+md, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE manifest: %s %s", resp.Status, body)
	}
	if resp, _ := do(t, nil, http.MethodGet, a.URL()+"/v2/modules/threshold/manifests/"+md, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET deleted manifest: %s, want 404", resp.Status)
	}

	// The 404 from b was logged by distribution, at debug level (a client error is no server
	// fault), through b's logger only.
	const entry = "distribution: DEBUG response completed with error"
	if !strings.Contains(logB.all(), entry) {
		t.Errorf("b's log lacks %q:\n%s", entry, logB.all())
	}
	if strings.Contains(logA.all(), "ERROR") || strings.Contains(logB.all(), "ERROR") {
		t.Errorf("a client error was logged as a server error:\na:\n%s\nb:\n%s", logA.all(), logB.all())
	}
	// a did the push and the delete: its own request lines are there, b's 404 is not.
	if strings.Count(logA.all(), "response completed with error") != 1 { // the GET after DELETE
		t.Errorf("a's log:\n%s", logA.all())
	}
}

func TestTUF(t *testing.T) {
	root := t.TempDir()
	tuf := filepath.Join(root, "tuf")
	files := map[string]string{
		"1.root.json":       `{"signed":{"_type":"root"}}`,
		"timestamp.json":    `{"signed":{"_type":"timestamp"}}`,
		"2.snapshot.json":   `{"signed":{"_type":"snapshot"}}`,
		"sub/3.targets.txt": "x",
	}
	for name, body := range files {
		p := filepath.Join(tuf, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(root, "secret.json")
	if err := os.WriteFile(secret, []byte(`{"key":"private"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(tuf, "escape.json")); err != nil {
		t.Fatal(err)
	}
	s := start(t, Config{Root: root})
	base := s.URL() + "/tuf/"

	tests := []struct {
		method, path string
		status       int
		ctype, cache string
		body         string
	}{
		{"GET", "1.root.json", 200, "application/json", "public, max-age=31536000, immutable", files["1.root.json"]},
		{"GET", "2.snapshot.json", 200, "application/json", "public, max-age=31536000, immutable", files["2.snapshot.json"]},
		{"GET", "timestamp.json", 200, "application/json", "no-cache", files["timestamp.json"]},
		{"HEAD", "timestamp.json", 200, "application/json", "no-cache", ""},
		{"GET", "sub/3.targets.txt", 200, "application/octet-stream", "public, max-age=31536000, immutable", "x"},
		{"GET", "", 404, "", "", ""},
		{"GET", "sub/", 404, "", "", ""},
		{"GET", "sub", 404, "", "", ""},
		{"GET", "missing.json", 404, "", "", ""},
		{"GET", "escape.json", 403, "", "", ""},
		{"PUT", "timestamp.json", 405, "", "", ""},
		{"DELETE", "1.root.json", 405, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := do(t, nil, tt.method, base+tt.path, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %s, want %d (body %q)", resp.Status, tt.status, body)
			}
			if tt.status != 200 {
				if strings.Contains(string(body), "private") || strings.Contains(string(body), "<a href") {
					t.Fatalf("body leaks a file or a listing: %q", body)
				}
				return
			}
			if got := resp.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if got := resp.Header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control %q, want %q", got, tt.cache)
			}
			if string(body) != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
		})
	}

	// A file published after start is served at once (no caching in the server).
	if err := os.WriteFile(filepath.Join(tuf, "timestamp.json"), []byte(`{"v":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, body := do(t, nil, "GET", base+"timestamp.json", nil); string(body) != `{"v":2}` {
		t.Errorf("after republish: %q", body)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"everything wrong", Config{Addr: "nope", TLSCert: "c.pem", DrainTimeout: -time.Second},
			[]string{"root folder is required", `listen address "nope"`, "TLS needs both", "drain timeout -1s is negative"}},
		{"missing cert files", Config{Root: dir, Addr: "127.0.0.1:0", TLSCert: filepath.Join(dir, "c.pem"), TLSKey: filepath.Join(dir, "k.pem")},
			[]string{"c.pem", "no such file"}},
		{"root is a file", Config{Root: filepath.Join(dir, "file"), Addr: "127.0.0.1:0"}, []string{"file"}},
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	// A port in use is an error naming the address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if s, err := New(Config{Root: t.TempDir(), Addr: ln.Addr().String()}); err == nil {
		s.Close()
		t.Fatal("New on a busy port succeeded")
	} else if !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("error %q does not name %s", err, ln.Addr())
	}
}

func TestDefaultAddrIsLoopback(t *testing.T) {
	host, _, err := net.SplitHostPort(DefaultAddr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		t.Fatalf("DefaultAddr %q is not a loopback address", DefaultAddr)
	}
}

func TestIntegrationTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	s := start(t, Config{TLSCert: certFile, TLSKey: keyFile})
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("URL %s", s.URL())
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, _ := do(t, c, http.MethodGet, s.URL()+"/v2/", nil)
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("GET /v2/ over TLS: %s", resp.Status)
	}
	// Plain HTTP to the TLS port is refused.
	if resp, err := http.Get("http://" + s.Addr() + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP accepted on the TLS port")
		}
	}
}

// Serve returns after its context ends, and the port is free again.
func TestIntegrationServeShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	s, err := New(Config{Root: t.TempDir(), Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	resp, _ := do(t, nil, http.MethodGet, s.URL()+"/v2/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/: %s", resp.Status)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Serve did not return")
	}
	ln, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	ln.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "perch-registry-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
