package trust

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// The tests in this file attack a client through a loopback registry. Each asserts the kind of
// error (so it fails if the attack gets through, or is stopped for another reason) and that the
// client's trusted state is unchanged.

func TestTrustHappyPath(t *testing.T) {
	f := newFixture(t, InitOptions{})
	manifest := f.addArtifact("modules/thermo", 1)
	f.publish()
	c := f.client()
	f.refresh(c)
	if got, want := c.Versions(), (Versions{Root: 1, Timestamp: 2, Snapshot: 2, Targets: 2}); got != want {
		t.Fatalf("versions: got %+v, want %+v", got, want)
	}
	cu, info, err := c.Target("modules/thermo")
	if err != nil {
		t.Fatal(err)
	}
	if cu.Release != 1 || cu.Kind != KindModule || cu.Repository != "modules/thermo" || info.Length != int64(len(manifest)) ||
		cu.Digest != "sha256:"+info.Hashes["sha256"] {
		t.Fatalf("target: %+v %+v", cu, info)
	}
	if err := f.fetchVerify(info); err != nil {
		t.Fatal(err)
	}
	if err := c.Check("modules/thermo", Custom{}, "arm64"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Target("modules/none"); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("missing target: got %v, want ErrNoTarget", err)
	}
	// A second refresh with nothing new keeps the state.
	before := stateOf(t, c)
	f.refresh(c)
	assertUnchanged(t, c, before)
}

func TestTrustTamperedTarget(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	c := f.client()
	f.refresh(c)
	_, info, err := c.Target("modules/thermo")
	if err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, c)
	path := filepath.Join(f.base, "manifests", info.Hashes["sha256"])
	good := readBytes(t, path)
	for _, tc := range []struct {
		name   string
		tamper func([]byte) []byte
		want   string
	}{
		{"one byte flipped", func(b []byte) []byte { b[10] ^= 1; return b }, "sha256 differs"},
		{"one byte cut", func(b []byte) []byte { return b[:len(b)-1] }, "bytes, its target says"},
		{"one byte added", func(b []byte) []byte { return append(b, ' ') }, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.tamper(bytes.Clone(good)), 0o644); err != nil {
				t.Fatal(err)
			}
			err := f.fetchVerify(info)
			if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrMismatch with %q", err, tc.want)
			}
			// A cached copy is refused the same way.
			if err := VerifyFile(path, info); !errors.Is(err, ErrMismatch) {
				t.Fatalf("VerifyFile: got %v, want ErrMismatch", err)
			}
			assertUnchanged(t, c, before)
		})
	}
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := VerifyFile(path, info); err != nil {
		t.Fatalf("the untampered file: %v", err)
	}
}

// TestTrustTamperedTargetsMetadata: with the online (snapshot and timestamp) keys stolen, an
// attacker rewrites a target's hash and re-signs snapshot and timestamp; the targets signature
// (offline key) no longer verifies.
func TestTrustTamperedTargetsMetadata(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	c := f.client()
	f.refresh(c)
	before := stateOf(t, c)

	targets, err := metadata.Targets().FromBytes(f.readTUF("2.targets.json"))
	if err != nil {
		t.Fatal(err)
	}
	targets.Signed.Version = 3
	targets.Signed.Targets["modules/thermo"].Hashes["sha256"][0] ^= 1
	data, err := targets.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	online := f.openRepo(append(f.keysFor("snapshot"), f.keysFor("timestamp")...))
	if err := online.publishTargets(data, 3); err != nil {
		t.Fatal(err)
	}
	err = c.Refresh(context.Background())
	if !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("got %v, want ErrUnsignedMetadata", err)
	}
	assertUnchanged(t, c, before)
	// A fresh client is refused too.
	if err := f.client().Refresh(context.Background()); !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("fresh client: got %v, want ErrUnsignedMetadata", err)
	}
}

// rollbackFixture publishes three times (targets 2 and 3 each add a target) and returns a
// client that trusts the last publish.
func rollbackFixture(t *testing.T) (*fixture, *Client) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish() // version 2
	f.addArtifact("modules/thermo", 2)
	f.publish() // version 3
	c := f.client()
	f.refresh(c)
	if got, want := c.Versions(), (Versions{Root: 1, Timestamp: 3, Snapshot: 3, Targets: 3}); got != want {
		t.Fatalf("versions: got %+v, want %+v", got, want)
	}
	return f, c
}

func TestTrustRollbackTimestamp(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	oldTS := f.readTUF("timestamp.json") // version 2
	f.addArtifact("modules/thermo", 2)
	f.publish()
	c := f.client()
	f.refresh(c)
	before := stateOf(t, c)
	f.writeTUF("timestamp.json", oldTS)
	err := c.Refresh(context.Background())
	if !errors.Is(err, &metadata.ErrBadVersionNumber{}) || !strings.Contains(err.Error(), "new timestamp version 2 must be >= 3") {
		t.Fatalf("got %v, want ErrBadVersionNumber for the timestamp", err)
	}
	assertUnchanged(t, c, before)
}

// TestTrustRollbackSnapshot: with the timestamp key stolen, the attacker signs a newer
// timestamp that points at the older snapshot.
func TestTrustRollbackSnapshot(t *testing.T) {
	f, c := rollbackFixture(t)
	before := stateOf(t, c)
	ts := f.openRepo(f.keysFor("timestamp"))
	_, data, err := ts.buildTimestamp(4, f.readTUF("2.snapshot.json"), 2)
	if err != nil {
		t.Fatal(err)
	}
	f.writeTUF("timestamp.json", data)
	err = c.Refresh(context.Background())
	if !errors.Is(err, &metadata.ErrBadVersionNumber{}) || !strings.Contains(err.Error(), "new snapshot version 2 must be >= 3") {
		t.Fatalf("got %v, want ErrBadVersionNumber for the snapshot", err)
	}
	assertUnchanged(t, c, before)
}

// TestTrustRollbackTargets: with the snapshot and timestamp keys stolen, the attacker signs a
// newer snapshot that lists the older targets.
func TestTrustRollbackTargets(t *testing.T) {
	f, c := rollbackFixture(t)
	before := stateOf(t, c)
	online := f.openRepo(append(f.keysFor("snapshot"), f.keysFor("timestamp")...))
	snap, snapData, err := online.buildSnapshot(4, f.readTUF("2.targets.json"), 2)
	if err != nil {
		t.Fatal(err)
	}
	_, tsData, err := online.buildTimestamp(4, snapData, snap.Signed.Version)
	if err != nil {
		t.Fatal(err)
	}
	f.writeTUF("4.snapshot.json", snapData)
	f.writeTUF("timestamp.json", tsData)
	err = c.Refresh(context.Background())
	if !errors.Is(err, &metadata.ErrBadVersionNumber{}) || !strings.Contains(err.Error(), "targets.json") {
		t.Fatalf("got %v, want ErrBadVersionNumber for targets.json", err)
	}
	assertUnchanged(t, c, before)
}

// TestTrustOlderRelease: a box that lost its metadata cache (or a new box) cannot tell a replay
// of older, still valid metadata; the release counter it keeps with the installed artifact can.
func TestTrustOlderRelease(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	old := t.TempDir()
	copyDir(t, f.tufDir, old)
	f.addArtifact("modules/thermo", 2)
	f.publish()

	c := f.client()
	f.refresh(c)
	installed, _, err := c.Target("modules/thermo")
	if err != nil {
		t.Fatal(err)
	}
	if installed.Release != 2 {
		t.Fatalf("installed release %d, want 2", installed.Release)
	}
	// The same release again is not an update either.
	if err := c.Check("modules/thermo", installed, "arm64"); !errors.Is(err, ErrRelease) {
		t.Fatalf("equal release: got %v, want ErrRelease", err)
	}

	// The attacker serves the metadata of the first publish.
	if err := os.RemoveAll(f.tufDir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, old, f.tufDir)
	before := stateOf(t, c)
	if err := c.Refresh(context.Background()); !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Fatalf("client with a cache: got %v, want ErrBadVersionNumber", err)
	}
	assertUnchanged(t, c, before)

	fresh := f.client()
	f.refresh(fresh) // nothing in the metadata tells it is old
	cu, _, err := fresh.Target("modules/thermo")
	if err != nil {
		t.Fatal(err)
	}
	if cu.Release != 1 {
		t.Fatalf("replayed release %d, want 1", cu.Release)
	}
	err = fresh.Check("modules/thermo", installed, "arm64")
	if !errors.Is(err, ErrRelease) || errors.Is(err, ErrHardware) || errors.Is(err, ErrKind) {
		t.Fatalf("got %v, want only ErrRelease", err)
	}

	// The repository refuses to sign an older release in the first place.
	err = f.repo.AddTarget("modules/thermo", 10, Hashes{"sha256": strings.Repeat("a", 64)},
		Custom{Kind: KindModule, Version: "0.9", Hardware: []string{"arm64"}, Release: 1, Repository: "modules/thermo"})
	if !errors.Is(err, ErrRelease) {
		t.Fatalf("AddTarget of an older release: got %v, want ErrRelease", err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

func TestTrustExpired(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name    string
		advance time.Duration
		resign  func(*fixture) error // what the repository re-signs at the new time
		want    string
	}{
		{"timestamp", 25 * time.Hour, func(*fixture) error { return nil }, "timestamp.json is expired"},
		{"snapshot", 8 * day, func(f *fixture) error { return f.repo.RefreshTimestamp() }, "snapshot.json is expired"},
		{"targets", 91 * day, func(f *fixture) error { return f.repo.RefreshSnapshot() }, "new targets is expired"},
		{"root", 366 * day, func(f *fixture) error { return f.repo.Publish() }, "final root.json is expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, InitOptions{})
			f.addArtifact("modules/thermo", 1)
			f.publish()
			c := f.client()
			f.refresh(c)
			before := stateOf(t, c)
			f.clock.advance(tc.advance)
			if err := tc.resign(f); err != nil {
				t.Fatal(err)
			}
			err := c.Refresh(context.Background())
			if !errors.Is(err, &metadata.ErrExpiredMetadata{}) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrExpiredMetadata %q", err, tc.want)
			}
			assertUnchanged(t, c, before)
			if _, _, err := c.Target("modules/thermo"); !errors.Is(err, ErrExpired) {
				t.Fatalf("Target after expiry: got %v, want ErrExpired", err)
			}
			if err := f.client().Refresh(context.Background()); !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
				t.Fatalf("fresh client: got %v, want ErrExpiredMetadata", err)
			}
		})
	}
}

func TestTrustNoTrustedTime(t *testing.T) {
	f := newFixture(t, InitOptions{})
	c, err := NewClient(ClientConfig{Root: f.root1, CacheDir: t.TempDir(), BaseURL: f.srv.URL + "/tuf/",
		Clock: SystemClock{NotBefore: time.Now().Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background()); !errors.Is(err, ErrNoTrustedTime) {
		t.Fatalf("got %v, want ErrNoTrustedTime", err)
	}
	if c.Versions() != (Versions{}) {
		t.Fatalf("versions after a refused refresh: %+v", c.Versions())
	}
	// The default clock (floor DefaultNotBefore) works on a box whose clock is set.
	c, err = NewClient(ClientConfig{Root: f.root1, CacheDir: t.TempDir(), BaseURL: f.srv.URL + "/tuf/"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestTrustMixAndMatch serves a snapshot or targets file of one publish under the name of
// another: the hashes in the timestamp and the snapshot catch it.
func TestTrustMixAndMatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to string
	}{
		{"targets of publish 2 as targets 3", "2.targets.json", "3.targets.json"},
		{"snapshot of publish 2 as snapshot 3", "2.snapshot.json", "3.snapshot.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, InitOptions{})
			f.addArtifact("modules/thermo", 1)
			f.publish()
			c := f.client()
			f.refresh(c) // trusts publish 2
			f.addArtifact("modules/other", 1)
			f.publish()
			before := stateOf(t, c)
			f.writeTUF(tc.to, f.readTUF(tc.from))
			for name, cl := range map[string]*Client{"client at publish 2": c, "fresh client": f.client()} {
				err := cl.Refresh(context.Background())
				if !errors.Is(err, &metadata.ErrLengthOrHashMismatch{}) {
					t.Fatalf("%s: got %v, want ErrLengthOrHashMismatch", name, err)
				}
			}
			assertUnchanged(t, c, before)
		})
	}
}

func TestTrustEndlessData(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	c := f.client()
	f.refresh(c)
	before := stateOf(t, c)
	_, info, err := c.Target("modules/thermo")
	if err != nil {
		t.Fatal(err)
	}

	// The artifact: the server sends the right bytes and then never stops.
	good := readBytes(t, filepath.Join(f.base, "manifests", info.Hashes["sha256"]))
	f.override("/endless", endless(good))
	resp, err := f.srv.Client().Get(f.srv.URL + "/endless")
	if err != nil {
		t.Fatal(err)
	}
	body := &countingReader{r: resp.Body}
	err = VerifyReader(body, info)
	resp.Body.Close()
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("got %v, want ErrMismatch (longer than)", err)
	}
	if body.n != info.Length+1 {
		t.Fatalf("read %d bytes of an endless body, want length+1 = %d", body.n, info.Length+1)
	}

	// The metadata: an endless timestamp.json is cut at go-tuf's limit.
	f.override("/tuf/timestamp.json", endless(nil))
	err = c.Refresh(context.Background())
	if !errors.Is(err, &metadata.ErrDownloadLengthMismatch{}) {
		t.Fatalf("endless timestamp: got %v, want ErrDownloadLengthMismatch", err)
	}
	assertUnchanged(t, c, before)
}

// endless serves prefix and then spaces until the client goes away (at most 1 GiB).
func endless(prefix []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := w.Write(prefix); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte(" "), 32<<10)
		for range (1 << 30) / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
}

// TestTrustThreshold: the targets role needs 2 of its 2 keys; metadata signed by one valid key
// is refused, by the repository and by the client.
func TestTrustThreshold(t *testing.T) {
	f := newFixture(t, InitOptions{TargetsKeys: 2, TargetsThreshold: 2})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	c := f.client()
	f.refresh(c)
	before := stateOf(t, c)

	targetsKeys := f.keysFor("targets")
	if len(targetsKeys) != 2 {
		t.Fatalf("%d targets keys, want 2", len(targetsKeys))
	}
	oneKey := f.openRepo(append([]ed25519.PrivateKey{targetsKeys[0]}, append(f.keysFor("snapshot"), f.keysFor("timestamp")...)...))
	oneKey.addArtifactUnchecked(t, f, "modules/thermo", 2)
	if err := oneKey.Publish(); !errors.Is(err, ErrMissingKeys) {
		t.Fatalf("repo Publish with 1 of 2 targets keys: got %v, want ErrMissingKeys", err)
	}

	// The attacker holds one targets key and the online keys, and signs anyway.
	targets, err := cloneMetadata(oneKey.targets, metadata.Targets())
	if err != nil {
		t.Fatal(err)
	}
	targets.Signatures = []metadata.Signature{}
	targets.Signed.Version = 3
	s, err := signature.LoadED25519Signer(targetsKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := targets.Sign(s); err != nil {
		t.Fatal(err)
	}
	data, err := targets.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := oneKey.publishTargets(data, 3); err != nil {
		t.Fatal(err)
	}
	err = c.Refresh(context.Background())
	if !errors.Is(err, &metadata.ErrUnsignedMetadata{}) || !strings.Contains(err.Error(), "got 1, want 2") {
		t.Fatalf("got %v, want ErrUnsignedMetadata (got 1, want 2)", err)
	}
	assertUnchanged(t, c, before)
}

func TestTrustWrongHardwareAndKind(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("firmware/rpi4", 1, "rpi4")
	f.addArtifact("modules/any", 1, HardwareAny)
	f.publish()
	c := f.client()
	f.refresh(c)
	before := stateOf(t, c)
	if err := c.Check("firmware/rpi4", Custom{}, "rpi4"); err != nil {
		t.Fatalf("right hardware: %v", err)
	}
	err := c.Check("firmware/rpi4", Custom{}, "jetson-orin-nano")
	if !errors.Is(err, ErrHardware) || errors.Is(err, ErrRelease) {
		t.Fatalf("wrong hardware: got %v, want only ErrHardware", err)
	}
	if err := c.Check("firmware/rpi4", Custom{}, ""); !errors.Is(err, ErrHardware) {
		t.Fatalf("no hardware: got %v, want ErrHardware", err)
	}
	if err := c.Check("modules/any", Custom{}, "riscv64"); err != nil {
		t.Fatalf("hardware any: %v", err)
	}
	err = c.Check("modules/any", Custom{Kind: KindFirmware}, "arm64")
	if !errors.Is(err, ErrKind) {
		t.Fatalf("wrong kind: got %v, want ErrKind", err)
	}
	err = c.Check("firmware/rpi4", Custom{Kind: KindFirmware, Release: 5}, "amd64")
	if !errors.Is(err, ErrKind) || !errors.Is(err, ErrHardware) || !errors.Is(err, ErrRelease) {
		t.Fatalf("everything wrong: got %v, want ErrKind, ErrHardware and ErrRelease", err)
	}
	assertUnchanged(t, c, before)
}

func TestTrustRootRotation(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	var newRoot []ed25519.PrivateKey
	for range 3 {
		k, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		newRoot = append(newRoot, k)
	}
	// The repo holds the old root key (from the fixture) and gets the 3 new ones.
	if err := f.repo.RotateRoot(2, newRoot...); err != nil {
		t.Fatal(err)
	}
	f.addArtifact("modules/thermo", 2)
	f.publish()

	c := f.client() // holds only root 1
	f.refresh(c)
	if v := c.Versions(); v.Root != 2 {
		t.Fatalf("root version %d after rotation, want 2", v.Root)
	}
	if cu, _, err := c.Target("modules/thermo"); err != nil || cu.Release != 2 {
		t.Fatalf("target after rotation: %+v %v", cu, err)
	}
	// A restarted client starts from the cached root 2.
	again := f.clientAt(c.cacheDir)
	if got := again.trustedRoot(); bytes.Equal(got, f.root1) {
		t.Fatal("restarted client ignores the cached root 2")
	}
	f.refresh(again)

	// Root 3 signed only by a key of its own (none of root 2's) is refused.
	before := stateOf(t, c)
	next, err := cloneMetadata(f.repo.root, metadata.Root())
	if err != nil {
		t.Fatal(err)
	}
	next.Signatures = []metadata.Signature{}
	next.Signed.Version = 3
	for _, id := range append([]string(nil), next.Signed.Roles[metadata.ROOT].KeyIDs...) {
		if err := next.Signed.RevokeKey(id, metadata.ROOT); err != nil {
			t.Fatal(err)
		}
	}
	rogue, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := addKeys(&next.Signed, metadata.ROOT, 1, publicKeys([]ed25519.PrivateKey{rogue})); err != nil {
		t.Fatal(err)
	}
	s, err := signature.LoadED25519Signer(rogue)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.Sign(s); err != nil {
		t.Fatal(err)
	}
	data, err := next.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	f.writeTUF("3.root.json", data)
	if err := c.Refresh(context.Background()); !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("rogue root 3: got %v, want ErrUnsignedMetadata", err)
	}
	assertUnchanged(t, c, before)

	// A rotation the repo cannot sign with the old threshold is refused before writing.
	onlyNew := f.openRepo(nil)
	if err := onlyNew.RotateRoot(1, rogue); !errors.Is(err, ErrMissingKeys) {
		t.Fatalf("rotation without old root keys: got %v, want ErrMissingKeys", err)
	}
}

// TestTrustCorruptCache: after a power cut the cache can hold empty or partial files. The client
// drops them and starts from the embedded root; go-tuf alone would stop at them.
func TestTrustCorruptCache(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	cache := filepath.Join(t.TempDir(), "cache")
	f.refresh(f.clientAt(cache))
	for _, role := range cachedRoles {
		if err := os.WriteFile(filepath.Join(cache, role+".json"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cache, "snapshot.json"), []byte(`{"signed": {"_type": "snap`), 0o600); err != nil {
		t.Fatal(err)
	}
	// go-tuf alone stops at the empty timestamp.json instead of fetching a new one.
	cfg, err := config.New(f.srv.URL+"/tuf/", f.root1)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LocalMetadataDir, cfg.LocalTargetsDir = cache, cache
	up, err := updater.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err == nil || errors.Is(err, &metadata.ErrRepository{}) {
		t.Fatalf("go-tuf with an empty cached timestamp.json: got %v, want a JSON error", err)
	}
	if err := os.WriteFile(filepath.Join(cache, "root.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	c := f.clientAt(cache)
	if got := c.trustedRoot(); !bytes.Equal(got, f.root1) {
		t.Fatal("an empty cached root.json was preferred over the embedded root")
	}
	f.refresh(c)
	if cu, _, err := c.Target("modules/thermo"); err != nil || cu.Release != 1 {
		t.Fatalf("after a corrupt cache: %+v %v", cu, err)
	}
	for _, role := range cachedRoles {
		if err := parseRole(role, readBytes(t, filepath.Join(cache, role+".json"))); err != nil {
			t.Fatalf("cached %s after the refresh: %v", role, err)
		}
	}
}
