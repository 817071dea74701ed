package trust

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// FuzzTrustCustom: decoding a target's custom metadata never panics, and what it accepts is
// valid and survives a round trip.
func FuzzTrustCustom(f *testing.F) {
	sum := strings.Repeat("ab", 32)
	f.Add([]byte(`{"kind":"module","version":"1","hardware":["arm64"],"release":3,"repository":"modules/x","digest":"sha256:`+sum+`"}`), sum)
	f.Add([]byte(`{"kind":"firmware","version":"1","hardware":["any"],"abi":"x","release":18446744073709551615,"repository":"f","digest":"sha256:`+sum+`"}`), sum)
	f.Add([]byte(`{}`), "")
	f.Add([]byte(`null`), sum)
	f.Fuzz(func(t *testing.T, raw []byte, sha string) {
		c, err := decodeCustom(raw, sha)
		if err != nil {
			return
		}
		if err := c.validate(sha); err != nil {
			t.Fatalf("accepted an invalid custom: %v", err)
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeCustom(again, sha)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %+v → %+v, %v", c, c2, err)
		}
	})
}

// FuzzTrustCachedRoot: whatever a power cut (or anything else) leaves in the cached root.json
// and the other cached files, the client never panics, starts from the embedded root unless the
// cached one is a newer, self-signed root, and stages only files that parse.
func FuzzTrustCachedRoot(f *testing.F) {
	base := f.TempDir()
	if _, err := Init(filepath.Join(base, "keys"), filepath.Join(base, "tuf"), InitOptions{}); err != nil {
		f.Fatal(err)
	}
	root1, err := os.ReadFile(filepath.Join(base, "tuf", "1.root.json"))
	if err != nil {
		f.Fatal(err)
	}
	ts, err := os.ReadFile(filepath.Join(base, "tuf", "timestamp.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(root1, ts)
	f.Add([]byte{}, []byte{})
	f.Add(root1[:len(root1)/2], ts[:len(ts)/3])
	f.Add(bytes.Replace(root1, []byte(`"version": 1`), []byte(`"version": 2`), 1), []byte(`{"signed":{"_type":"timestamp"}}`))
	f.Fuzz(func(t *testing.T, cachedRoot, cachedTimestamp []byte) {
		cache := t.TempDir()
		if err := os.WriteFile(filepath.Join(cache, "root.json"), cachedRoot, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cache, "timestamp.json"), cachedTimestamp, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(ClientConfig{Root: root1, CacheDir: cache, BaseURL: "http://127.0.0.1:1/tuf/"})
		if err != nil {
			t.Fatal(err)
		}
		got := c.trustedRoot()
		if !bytes.Equal(got, root1) {
			r, err := metadata.Root().FromBytes(got)
			if err != nil || r.Signed.Version <= 1 || r.VerifyDelegate(metadata.ROOT, r) != nil {
				t.Fatalf("preferred a cached root that is not a newer self-signed root: %v", err)
			}
		}
		stage := t.TempDir()
		if err := c.stageCache(stage); err != nil {
			t.Fatal(err)
		}
		if data, err := os.ReadFile(filepath.Join(stage, "timestamp.json")); err == nil {
			if err := parseRole(metadata.TIMESTAMP, data); err != nil {
				t.Fatalf("staged a timestamp that does not parse: %v", err)
			}
		}
	})
}
