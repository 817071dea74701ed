// Package registrytest runs Perch's registry for tests: the embedded OCI registry
// (registry/server) on a free loopback port, with a fresh TUF repository whose keys the test
// holds, as an operator would. It is imported by tests only.
package registrytest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/perch-edge/perch/registry/server"
	"github.com/perch-edge/perch/registry/trust"
)

// Registry is a running registry and its operator's files.
type Registry struct {
	URL  string // http://127.0.0.1:PORT
	Addr string // 127.0.0.1:PORT
	Root string // the storage root: oci/ and tuf/
	TUF  string // the TUF folder the registry serves under /tuf/
	Keys string // the operator's private keys (one per role)
	// RootJSON is 1.root.json: what a box embeds at provisioning.
	RootJSON []byte
}

// Start runs a registry until the test ends, with a TUF repository of one key per role and
// thresholds of 1 (already published, empty).
func Start(t testing.TB) *Registry {
	t.Helper()
	r := &Registry{Root: t.TempDir(), Keys: filepath.Join(t.TempDir(), "keys")}
	r.TUF = filepath.Join(r.Root, "tuf")
	res, err := trust.Init(r.Keys, r.TUF, trust.InitOptions{RootKeys: 1, RootThreshold: 1, TargetsKeys: 1, TargetsThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.RootJSON, err = os.ReadFile(res.Root); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Root: r.Root, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("registry: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("the registry did not stop")
		}
		srv.Close()
	})
	r.URL, r.Addr = srv.URL(), srv.Addr()
	return r
}

// Repo opens the registry's TUF repository with the operator's keys.
func (r *Registry) Repo(t testing.TB) *trust.Repo {
	t.Helper()
	keys, err := trust.LoadKeyDir(r.Keys)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := trust.OpenRepo(r.TUF, keys, trust.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return repo
}
