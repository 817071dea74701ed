package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/registry/trust"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func TestKeygen(t *testing.T) {
	out := filepath.Join(t.TempDir(), "registry")
	var stdout, stderr bytes.Buffer
	err := cmdRegistryKeygen([]string{"--out", out, "--root-keys", "3", "--root-threshold", "2",
		"--targets-keys", "2", "--targets-threshold", "2", "--timestamp-expires", "12h"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, w := range []string{"keep OFF", "root-1.key", "targets-2.key", "timestamp-1.key", "1.root.json", "root 2 of 3, targets 2 of 2"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, stdout.String())
		}
	}
	keysDir, tufDir := filepath.Join(out, "keys"), filepath.Join(out, "tuf")
	if fi, err := os.Stat(keysDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("keys folder mode: %v %v", fi.Mode(), err)
	}
	entries, err := os.ReadDir(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v %v", e.Name(), fi.Mode(), err)
		}
		names = append(names, e.Name())
	}
	if want := "root-1.key root-2.key root-3.key snapshot-1.key targets-1.key targets-2.key timestamp-1.key"; strings.Join(names, " ") != want {
		t.Fatalf("key files %v, want %s", names, want)
	}
	root, err := metadata.Root().FromFile(filepath.Join(tufDir, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r, tg := root.Signed.Roles["root"], root.Signed.Roles["targets"]; r.Threshold != 2 || len(r.KeyIDs) != 3 || tg.Threshold != 2 || len(tg.KeyIDs) != 2 {
		t.Fatalf("root role %+v, targets role %+v", r, tg)
	}
	if d := time.Until(root.Signed.Expires); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Fatalf("root expires in %s, want about a year", d)
	}
	ts, err := metadata.Timestamp().FromFile(filepath.Join(tufDir, "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(ts.Signed.Expires); d < 11*time.Hour || d > 12*time.Hour {
		t.Fatalf("timestamp expires in %s, want 12h", d)
	}

	// What keygen wrote is a repository a box can trust at once, and the keys sign it.
	srv := httptest.NewServer(http.StripPrefix("/tuf/", http.FileServer(http.Dir(tufDir))))
	defer srv.Close()
	keys, err := trust.LoadKeyDir(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := trust.OpenRepo(tufDir, keys, trust.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sum := strings.Repeat("ab", 32)
	if err := repo.AddTarget("modules/thermo", 100, trust.Hashes{"sha256": sum}, trust.Custom{Kind: trust.KindModule,
		Version: "1.0.0", Hardware: []string{"arm64"}, Release: 1, Repository: "modules/thermo"}); err != nil {
		t.Fatal(err)
	}
	if err := repo.Publish(); err != nil {
		t.Fatal(err)
	}
	embedded, err := os.ReadFile(filepath.Join(tufDir, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := trust.NewClient(trust.ClientConfig{Root: embedded, CacheDir: t.TempDir(), BaseURL: srv.URL + "/tuf/"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Check("modules/thermo", trust.Custom{}, "arm64"); err != nil {
		t.Fatal(err)
	}
}

func TestKeygenRefuses(t *testing.T) {
	taken := t.TempDir()
	if err := cmdRegistryKeygen([]string{"--out", taken}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no out", []string{}, "--out is required"},
		{"positional", []string{"--out", t.TempDir(), "extra"}, "unexpected arguments"},
		{"zero keys", []string{"--out", t.TempDir(), "--root-keys", "0"}, "--root-keys: want at least 1"},
		{"threshold above keys", []string{"--out", t.TempDir(), "--targets-keys", "2", "--targets-threshold", "3"}, "targets threshold: 3 out of range 1..2"},
		{"short expiry", []string{"--out", t.TempDir(), "--timestamp-expires", "1s"}, "timestamp expiry 1s"},
		{"bad duration", []string{"--out", t.TempDir(), "--root-expires", "1y"}, "invalid value"},
		{"existing keys", []string{"--out", taken}, "refusing to overwrite keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := cmdRegistryKeygen(tc.args, &bytes.Buffer{}, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
				t.Fatalf("got %v (stderr %q), want %q", err, stderr.String(), tc.want)
			}
		})
	}
}
