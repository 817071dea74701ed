package trust

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testClock is a settable Clock shared by a fixture's repo and clients.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now, nil
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fixture is a registry on loopback: base/tuf holds the TUF metadata (served under /tuf/) and
// base/manifests the artifacts' bytes (served under /manifests/<sha256 hex>).
type fixture struct {
	t       testing.TB
	base    string
	tufDir  string
	keysDir string
	keys    []ed25519.PrivateKey
	root1   []byte
	clock   *testClock
	repo    *Repo
	srv     *httptest.Server

	mu        sync.Mutex
	overrides map[string]http.Handler // URL path → handler, ahead of the file server
}

func newFixture(t testing.TB, o InitOptions) *fixture {
	t.Helper()
	f := &fixture{t: t, base: t.TempDir(), clock: &testClock{now: time.Now().UTC()}, overrides: map[string]http.Handler{}}
	f.tufDir = filepath.Join(f.base, "tuf")
	f.keysDir = filepath.Join(t.TempDir(), "keys")
	o.Now = f.now
	if _, err := Init(f.keysDir, f.tufDir, o); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadKeyDir(f.keysDir)
	if err != nil {
		t.Fatal(err)
	}
	f.keys = keys
	f.root1 = readBytes(t, filepath.Join(f.tufDir, "1.root.json"))
	f.repo = f.openRepo(keys)
	if err := os.MkdirAll(filepath.Join(f.base, "manifests"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(f.base))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		h := f.overrides[r.URL.Path]
		f.mu.Unlock()
		if h != nil {
			h.ServeHTTP(w, r)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) now() time.Time {
	now, _ := f.clock.Now()
	return now
}

func (f *fixture) openRepo(keys []ed25519.PrivateKey) *Repo {
	f.t.Helper()
	r, err := OpenRepo(f.tufDir, keys, RepoOptions{Now: f.now})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// keysFor returns the fixture's private keys of role, in file order.
func (f *fixture) keysFor(role string) []ed25519.PrivateKey {
	f.t.Helper()
	paths, err := filepath.Glob(filepath.Join(f.keysDir, role+"-*.key"))
	if err != nil || len(paths) == 0 {
		f.t.Fatalf("no %s keys: %v", role, err)
	}
	var out []ed25519.PrivateKey
	for _, p := range paths {
		k, err := LoadKey(p)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

func (f *fixture) override(path string, h http.Handler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h == nil {
		delete(f.overrides, path)
		return
	}
	f.overrides[path] = h
}

// client returns a client with a fresh cache that trusts root 1 and uses the fixture's clock.
func (f *fixture) client() *Client {
	f.t.Helper()
	return f.clientAt(filepath.Join(f.t.TempDir(), "cache"))
}

func (f *fixture) clientAt(cache string) *Client {
	f.t.Helper()
	c, err := NewClient(ClientConfig{Root: f.root1, CacheDir: cache, BaseURL: f.srv.URL + "/tuf/", Clock: f.clock})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) refresh(c *Client) {
	f.t.Helper()
	if err := c.Refresh(context.Background()); err != nil {
		f.t.Fatalf("refresh: %v", err)
	}
}

// addArtifact writes a new OCI-manifest-like artifact for name and stages it as a target.
func (f *fixture) addArtifact(name string, release uint64, hardware ...string) []byte {
	f.t.Helper()
	if len(hardware) == 0 {
		hardware = []string{"arm64", "amd64"}
	}
	layer := make([]byte, 32)
	rand.Read(layer)
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"artifactType":"application/wasm","layers":[{"mediaType":"application/wasm","digest":"sha256:%x","size":1234}],`+
		`"annotations":{"release":"%d"}}`, layer, release))
	sum := sha256.Sum256(manifest)
	hexSum := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(f.base, "manifests", hexSum), manifest, 0o644); err != nil {
		f.t.Fatal(err)
	}
	err := f.repo.AddTarget(name, int64(len(manifest)), Hashes{"sha256": hexSum}, Custom{
		Kind: KindModule, Version: fmt.Sprintf("1.%d.0", release), Hardware: hardware,
		ABI: "perch:v1", Release: release, Repository: "modules/" + filepath.Base(name),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return manifest
}

func (f *fixture) publish() {
	f.t.Helper()
	if err := f.repo.Publish(); err != nil {
		f.t.Fatal(err)
	}
}

// fetch GETs the artifact of info from the fixture's /manifests/ and verifies it.
func (f *fixture) fetchVerify(info TargetInfo) error {
	f.t.Helper()
	resp, err := f.srv.Client().Get(f.srv.URL + "/manifests/" + info.Hashes["sha256"])
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("GET manifest: %s", resp.Status)
	}
	return VerifyReader(resp.Body, info)
}

func (f *fixture) readTUF(name string) []byte {
	f.t.Helper()
	return readBytes(f.t, filepath.Join(f.tufDir, name))
}

func (f *fixture) writeTUF(name string, data []byte) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.tufDir, name), data, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func readBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clientState is what an attack must leave unchanged: the trusted versions, every target's
// custom metadata and file info, and the bytes of the cached metadata.
type clientState struct {
	versions Versions
	targets  map[string]string
	cache    map[string][]byte
}

func stateOf(t testing.TB, c *Client) clientState {
	t.Helper()
	st := clientState{versions: c.Versions(), targets: map[string]string{}, cache: map[string][]byte{}}
	c.mu.Lock()
	if c.state != nil {
		for name, tf := range c.state.targets {
			cu, err := customOf(tf)
			st.targets[name] = fmt.Sprintf("%+v %+v %v", cu, infoOf(name, tf), err)
		}
	}
	c.mu.Unlock()
	for _, role := range cachedRoles {
		if b, err := os.ReadFile(filepath.Join(c.cacheDir, role+".json")); err == nil {
			st.cache[role] = b
		}
	}
	return st
}

func (s clientState) equal(o clientState) bool {
	if s.versions != o.versions || len(s.targets) != len(o.targets) || len(s.cache) != len(o.cache) {
		return false
	}
	for k, v := range s.targets {
		if o.targets[k] != v {
			return false
		}
	}
	for k, v := range s.cache {
		if !bytes.Equal(o.cache[k], v) {
			return false
		}
	}
	return true
}

func assertUnchanged(t testing.TB, c *Client, before clientState) {
	t.Helper()
	after := stateOf(t, c)
	if before.equal(after) {
		return
	}
	var changed []string
	for _, role := range cachedRoles {
		if !bytes.Equal(before.cache[role], after.cache[role]) {
			changed = append(changed, "cached "+role+".json")
		}
	}
	t.Fatalf("the client's trusted state changed (%v):\nbefore %+v\nafter  %+v", changed, before.versions, after.versions)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// addArtifactUnchecked stages a target in r like fixture.addArtifact.
func (r *Repo) addArtifactUnchecked(t testing.TB, f *fixture, name string, release uint64) {
	t.Helper()
	saved := f.repo
	f.repo = r
	defer func() { f.repo = saved }()
	f.addArtifact(name, release)
}
