package trust

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func TestTrustInitFiles(t *testing.T) {
	base := t.TempDir()
	keysDir, tufDir := filepath.Join(base, "keys"), filepath.Join(base, "tuf")
	res, err := Init(keysDir, tufDir, InitOptions{RootKeys: 3, RootThreshold: 2, TargetsKeys: 2, TargetsThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keysDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("keys folder: %v %v", fi.Mode(), err)
	}
	ids := map[string]string{}
	count := map[string]int{}
	for _, k := range res.Keys {
		fi, err := os.Stat(k.Path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v %v", k.Path, fi.Mode(), err)
		}
		if other, dup := ids[k.ID]; dup {
			t.Fatalf("key %s used by %s and %s", k.ID, other, k.Role)
		}
		ids[k.ID] = k.Role
		count[k.Role]++
	}
	if want := map[string]int{"root": 3, "targets": 2, "snapshot": 1, "timestamp": 1}; len(count) != 4 ||
		count["root"] != want["root"] || count["targets"] != want["targets"] || count["snapshot"] != 1 || count["timestamp"] != 1 {
		t.Fatalf("keys per role: %v", count)
	}
	root, err := metadata.Root().FromFile(res.Root)
	if err != nil {
		t.Fatal(err)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		t.Fatal(err)
	}
	for role, want := range map[string]int{"root": 2, "targets": 1, "snapshot": 1, "timestamp": 1} {
		r := root.Signed.Roles[role]
		if r.Threshold != want || len(r.KeyIDs) != count[role] {
			t.Fatalf("%s: threshold %d keys %d", role, r.Threshold, len(r.KeyIDs))
		}
		for _, id := range r.KeyIDs {
			if ids[id] != role {
				t.Fatalf("%s key %s is a %s key file", role, id, ids[id])
			}
		}
	}
	if len(root.Signatures) != 3 || !root.Signed.ConsistentSnapshot {
		t.Fatalf("root: %d signatures, consistent snapshot %v", len(root.Signatures), root.Signed.ConsistentSnapshot)
	}
	for _, name := range []string{"1.targets.json", "1.snapshot.json", "timestamp.json"} {
		if fi, err := os.Stat(filepath.Join(tufDir, name)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// No private key material in the served folder.
	entries, _ := os.ReadDir(tufDir)
	for _, e := range entries {
		if data := string(readBytes(t, filepath.Join(tufDir, e.Name()))); strings.Contains(data, "PRIVATE") {
			t.Fatalf("%s holds a private key", e.Name())
		}
	}

	if _, err := Init(keysDir, filepath.Join(base, "tuf2"), InitOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("init over existing keys: got %v", err)
	}
	if _, err := Init(filepath.Join(base, "keys2"), tufDir, InitOptions{}); err == nil || !strings.Contains(err.Error(), "already holds metadata") {
		t.Fatalf("init over existing metadata: got %v", err)
	}
	_, err = Init(filepath.Join(base, "keys3"), filepath.Join(base, "tuf3"), InitOptions{RootKeys: 2, RootThreshold: 3, TargetsKeys: 99})
	if err == nil || !strings.Contains(err.Error(), "root threshold: 3 out of range 1..2") || !strings.Contains(err.Error(), "targets keys: 99") {
		t.Fatalf("bad counts: got %v", err)
	}
}

// TestTrustRepoKeys: each operation needs only its roles' keys.
func TestTrustRepoKeys(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	for _, tc := range []struct {
		name  string
		roles []string
		op    func(*Repo) error
	}{
		{"timestamp refresh with the timestamp key", []string{"timestamp"}, (*Repo).RefreshTimestamp},
		{"snapshot refresh with snapshot and timestamp keys", []string{"snapshot", "timestamp"}, (*Repo).RefreshSnapshot},
		{"publish with targets, snapshot and timestamp keys", []string{"targets", "snapshot", "timestamp"}, (*Repo).Publish},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var keys []ed25519.PrivateKey
			for _, role := range tc.roles {
				keys = append(keys, f.keysFor(role)...)
			}
			r := f.openRepo(keys)
			tv, sv, tsv := r.Versions()
			if err := tc.op(r); err != nil {
				t.Fatal(err)
			}
			tv2, sv2, tsv2 := r.Versions()
			if tsv2 != tsv+1 || sv2 < sv || tv2 < tv {
				t.Fatalf("versions %d/%d/%d → %d/%d/%d", tv, sv, tsv, tv2, sv2, tsv2)
			}
			// One key fewer is refused, before anything is written.
			less := f.openRepo(keys[1:])
			before := f.readTUF("timestamp.json")
			if err := tc.op(less); !errors.Is(err, ErrMissingKeys) || !strings.Contains(err.Error(), tc.roles[0]) {
				t.Fatalf("without the %s key: got %v, want ErrMissingKeys", tc.roles[0], err)
			}
			if string(f.readTUF("timestamp.json")) != string(before) {
				t.Fatal("a refused operation rewrote timestamp.json")
			}
			c := f.client()
			f.refresh(c)
			if got := c.Versions(); got.Timestamp != tsv2 || got.Snapshot != sv2 || got.Targets != tv2 {
				t.Fatalf("client sees %+v, repo %d/%d/%d", got, tv2, sv2, tsv2)
			}
		})
	}
}

// TestTrustPublishInterrupted: a crash after N.targets.json and N.snapshot.json but before
// timestamp.json leaves clients on the previous, consistent publish; the next publish recovers.
func TestTrustPublishInterrupted(t *testing.T) {
	f := newFixture(t, InitOptions{})
	f.addArtifact("modules/thermo", 1)
	f.publish()
	f.addArtifact("modules/thermo", 2)
	crash := errors.New("power cut")
	testHookBeforeTimestamp = func() error { return crash }
	err := f.repo.Publish()
	testHookBeforeTimestamp = nil
	if !errors.Is(err, crash) {
		t.Fatalf("got %v, want the crash", err)
	}
	for _, name := range []string{"3.targets.json", "3.snapshot.json"} {
		if _, err := os.Stat(filepath.Join(f.tufDir, name)); err != nil {
			t.Fatalf("%s not written before the timestamp: %v", name, err)
		}
	}
	c := f.client()
	f.refresh(c)
	if cu, _, err := c.Target("modules/thermo"); err != nil || cu.Release != 1 || c.Versions().Targets != 2 {
		t.Fatalf("after the crash the client sees %+v %+v %v, want release 1 at targets 2", cu, c.Versions(), err)
	}
	// Reopened, the repo continues from what the timestamp says.
	r := f.openRepo(f.keys)
	if tv, sv, tsv := r.Versions(); tv != 2 || sv != 2 || tsv != 2 {
		t.Fatalf("reopened at %d/%d/%d, want 2/2/2", tv, sv, tsv)
	}
	f.repo = r
	f.addArtifact("modules/thermo", 2)
	f.publish()
	f.refresh(c)
	if cu, _, err := c.Target("modules/thermo"); err != nil || cu.Release != 2 || c.Versions().Targets != 3 {
		t.Fatalf("after recovery: %+v %+v %v", cu, c.Versions(), err)
	}
}

func TestTrustAddTargetValidation(t *testing.T) {
	f := newFixture(t, InitOptions{})
	good := Custom{Kind: KindModel, Version: "2", Hardware: []string{"arm64"}, Release: 1, Repository: "models/anomaly"}
	h := Hashes{"sha256": strings.Repeat("ab", 32)}
	for _, tc := range []struct {
		name   string
		target string
		length int64
		hashes Hashes
		mod    func(*Custom)
		want   []string
	}{
		{"bad name", "../x", 10, h, nil, []string{`".." path part`}},
		{"upper case name", "Modules/X", 10, h, nil, []string{"character 'M'"}},
		{"zero length", "m", 0, h, nil, []string{"length: want > 0"}},
		{"no sha256", "m", 10, Hashes{"sha512": strings.Repeat("ab", 64)}, nil, []string{"sha256 is required"}},
		{"short sha256", "m", 10, Hashes{"sha256": "abcd"}, nil, []string{"want 64 lowercase hex"}},
		{"md5", "m", 10, Hashes{"sha256": strings.Repeat("ab", 32), "md5": "00"}, nil, []string{`unknown algorithm "md5"`}},
		{"everything wrong in custom", "m", 10, h, func(c *Custom) {
			*c = Custom{Kind: "plugin", Hardware: []string{" arm64"}, Repository: "a b", Digest: "sha256:00"}
		}, []string{`kind: want one of`, "version: empty", "hardware[0]", "release: must be at least 1", "repository:", "digest: want"}},
		{"no hardware", "m", 10, h, func(c *Custom) { c.Hardware = nil }, []string{"hardware: empty"}},
		{"release beyond int64", "m", 10, h, func(c *Custom) { c.Release = 1 << 63 }, []string{"release: 9223372036854775808 is above"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			if tc.mod != nil {
				tc.mod(&c)
			}
			err := f.repo.AddTarget(tc.target, tc.length, tc.hashes, c)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if err := f.repo.AddTarget("models/anomaly", 10, h, good); err != nil {
		t.Fatal(err)
	}
	cu, info, err := f.repo.Target("models/anomaly")
	if err != nil || cu.Digest != "sha256:"+h["sha256"] || info.Length != 10 {
		t.Fatalf("staged target: %+v %+v %v", cu, info, err)
	}
	if err := f.repo.AddTarget("models/anomaly", 10, h, good); !errors.Is(err, ErrRelease) {
		t.Fatalf("same release again: got %v, want ErrRelease", err)
	}
	if err := f.repo.RemoveTarget("models/anomaly"); err != nil {
		t.Fatal(err)
	}
	if err := f.repo.RemoveTarget("models/anomaly"); err == nil {
		t.Fatal("removed a missing target")
	}
}

func TestTrustCustomStrict(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	good := `{"kind":"module","version":"1","hardware":["arm64"],"release":3,"repository":"modules/x","digest":"sha256:` + sum + `"}`
	if c, err := decodeCustom([]byte(good), sum); err != nil || c.Release != 3 {
		t.Fatalf("good: %+v %v", c, err)
	}
	for name, raw := range map[string]string{
		"unknown field":  strings.Replace(good, `"version"`, `"min_runtime":"2","version"`, 1),
		"trailing data":  good + `{}`,
		"wrong digest":   strings.Replace(good, "sha256:ab", "sha256:cd", 1),
		"negative":       strings.Replace(good, `"release":3`, `"release":-3`, 1),
		"empty":          ``,
		"release string": strings.Replace(good, `"release":3`, `"release":"3"`, 1),
	} {
		if _, err := decodeCustom([]byte(raw), sum); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestTrustClientConfig(t *testing.T) {
	_, err := NewClient(ClientConfig{BaseURL: "ftp://x"})
	for _, w := range []string{"Root: empty", "CacheDir: empty", "BaseURL: want an http or https URL"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v lacks %q", err, w)
		}
	}
	_, err = NewClient(ClientConfig{Root: []byte(`{"signed":{"_type":"root"}}`), CacheDir: t.TempDir(), BaseURL: "http://127.0.0.1:1/tuf/"})
	if err == nil || !strings.Contains(err.Error(), "Root:") {
		t.Errorf("unsigned root: got %v", err)
	}
	f := newFixture(t, InitOptions{})
	c := f.client()
	if _, _, err := c.Target("x"); !errors.Is(err, ErrNotRefreshed) {
		t.Fatalf("before refresh: got %v, want ErrNotRefreshed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Refresh(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled refresh: got %v, want context.Canceled", err)
	}
}
