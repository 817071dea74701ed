package update_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/perch-edge/perch/registry/server"
	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/sdk/perchtest"

	"github.com/opencontainers/go-digest"
)

// registryFixture is a real registry on loopback with a TUF repository whose keys the test
// holds (as an operator would, off the box).
type registryFixture struct {
	t    *testing.T
	url  string
	root []byte // 1.root.json: what a box embeds
	repo *trust.Repo
}

func newRegistry(t *testing.T) *registryFixture {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(t.TempDir(), "keys")
	res, err := trust.Init(keys, filepath.Join(dir, "tuf"), trust.InitOptions{RootKeys: 1, RootThreshold: 1, TargetsKeys: 1, TargetsThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(res.Root)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := trust.LoadKeyDir(keys)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := trust.OpenRepo(filepath.Join(dir, "tuf"), priv, trust.RepoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Root: dir, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return &registryFixture{t: t, url: srv.URL(), root: root, repo: repo}
}

// blob uploads data to repository repo (POST, then PUT with the digest) and returns its
// descriptor.
func (f *registryFixture) blob(repo, mediaType string, data []byte) ocispec.Descriptor {
	f.t.Helper()
	d := digest.FromBytes(data)
	resp, err := http.Post(f.url+"/v2/"+repo+"/blobs/uploads/", "application/octet-stream", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		f.t.Fatalf("upload: %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		f.t.Fatal(err)
	}
	u, _ := url.Parse(f.url)
	loc = u.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("upload %s: %s", d, resp.Status)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// push pushes an artifact (one layer) and signs a TUF target for it.
func (f *registryFixture) push(target, kind, version string, release uint64, mediaType string, data []byte, annotations map[string]string) {
	f.t.Helper()
	repo := target
	cfg := f.blob(repo, "application/vnd.wasm.config.v0+json", []byte(`{"architecture":"wasm","os":"wasip1"}`))
	layer := f.blob(repo, mediaType, data)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}, Annotations: annotations}
	m.SchemaVersion = 2
	raw, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	d := digest.FromBytes(raw)
	req, _ := http.NewRequest(http.MethodPut, f.url+"/v2/"+repo+"/manifests/"+d.String(), bytes.NewReader(raw))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("manifest: %s", resp.Status)
	}
	sum := sha256.Sum256(raw)
	if err := f.repo.AddTarget(target, int64(len(raw)), trust.Hashes{"sha256": hex.EncodeToString(sum[:])},
		trust.Custom{Kind: kind, Version: version, Hardware: []string{trust.HardwareAny}, Release: release, Repository: repo, Digest: d.String()}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.repo.Publish(); err != nil {
		f.t.Fatal(err)
	}
}

// pushModule pushes build/modules/<file>.wasm as release of target, with its manifest's
// version set to version.
func (f *registryFixture) pushModule(target, file, version string, release uint64) {
	f.t.Helper()
	perchtest.Built(f.t, file)
	bin, err := os.ReadFile(filepath.Join("..", "..", "build", "modules", file+".wasm"))
	if err != nil {
		f.t.Fatal(err)
	}
	man, err := os.ReadFile(filepath.Join("..", "..", "build", "modules", file+".manifest.yaml"))
	if err != nil {
		f.t.Fatal(err)
	}
	text := string(man)
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "version:") {
			text = strings.Replace(text, l, "version: "+version, 1)
		}
	}
	text = strings.Replace(text, "name: bad\n", "name: scale\n", 1)
	f.push(target, trust.KindModule, version, release, "application/wasm", bin, map[string]string{update.ModuleManifestAnnotation: text})
}

const pipeline = `site: test
device: box-7
devices:
  - {name: env0, backend: sim, type: bme280, bus: 1, address: 0x76}
modules:
  - name: env
    wasm: ../../build/modules/bme280.wasm
    deadline: 2s
    poll: 20ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: f
    wasm: ../../build/modules/scale.wasm
    deadline: 300ms
    inputs: [env]
    config: {factor: 1}
`

// box runs the pipeline with an agent pointed at reg.
type box struct {
	rt    *runtime.Runtime
	agent *update.Agent
	cfg   *config.Config
}

func startBox(t *testing.T, reg *registryFixture, dir string, window time.Duration) *box {
	t.Helper()
	perchtest.Built(t, "bme280")
	perchtest.Built(t, "scale")
	abs, err := filepath.Abs("box.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(abs, []byte(pipeline))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	if err := update.ApplyInstalled(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{BackoffMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		rt.Close()
	})
	a, err := update.New(update.Config{Device: "box-7", Group: "pumps", Hardware: "amd64", Registry: reg.url,
		Dir: filepath.Join(dir, "updates"), Root: reg.root, HealthWindow: window}, cfg, rt, rt.Store())
	if err != nil {
		t.Fatal(err)
	}
	return &box{rt: rt, agent: a, cfg: cfg}
}

func (b *box) steps(t *testing.T) map[string]string {
	t.Helper()
	last, err := b.rt.Store().LastSteps(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range last {
		out[s.Target] = s.Step + ": " + s.Detail
	}
	return out
}

// TestIntegrationAgent: a signed deployment moves a running module to a new release, which is
// committed after its health window; bad releases (crashing at start, hanging, failing its
// health check) are rolled back to the running one within the window; after a restart the box
// runs what was committed.
func TestIntegrationAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	reg := newRegistry(t)
	reg.push("deployments/pumps", trust.KindDeployment, "1", 1, "application/vnd.perch.deployment.v1+yaml",
		[]byte("name: pumps-1\ngroup: pumps\nstage: 100\nmodules:\n  - {module: f, target: modules/f}\n"), nil)
	reg.pushModule("modules/f", "scale", "0.2.0", 1)
	dir := t.TempDir()
	b := startBox(t, reg, dir, 500*time.Millisecond)
	ctx := context.Background()
	if err := b.agent.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := b.rt.Health("f"); h.Version != "0.2.0" || h.Swaps != 1 {
		t.Fatalf("after the update: %+v; journal %v", h, b.steps(t))
	}
	if s := b.steps(t)["modules/f"]; !strings.HasPrefix(s, "committed") {
		t.Fatalf("journal: %s", s)
	}
	// Polling again changes nothing.
	if err := b.agent.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := b.rt.Health("f"); h.Swaps != 1 {
		t.Errorf("a second poll swapped again: %+v", h)
	}

	for i, bad := range []string{"badcrash", "badhang", "baderror"} {
		release := uint64(2 + i)
		reg.pushModule("modules/f", bad, fmt.Sprintf("0.3.%d", i), release)
		t0 := time.Now()
		err := b.agent.Once(ctx)
		took := time.Since(t0)
		if err == nil || !strings.Contains(err.Error(), "rolled back") {
			t.Fatalf("%s: err = %v", bad, err)
		}
		h, _ := b.rt.Health("f")
		if h.Version != "0.2.0" || !h.Up {
			t.Fatalf("%s: after the rollback: %+v", bad, h)
		}
		t.Logf("%s: %s (poll took %v)", bad, b.steps(t)["modules/f"], took.Round(time.Millisecond))
	}
	// The journal holds every step of every release, in order.
	var steps []string
	rows, err := b.rt.Store().DB().Query(`SELECT release || ' ' || step FROM update_journal WHERE target = 'modules/f' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		steps = append(steps, s)
	}
	rows.Close()
	want := "1 found,1 downloaded,1 staged,1 swapped,1 committed"
	for r := 2; r <= 4; r++ {
		want += fmt.Sprintf(",%d found,%d downloaded,%d staged,%d swapped,%d rolled_back", r, r, r, r, r)
	}
	if got := strings.Join(steps, ","); got != want {
		t.Errorf("journal:\n got %s\nwant %s", got, want)
	}

	// A restart runs what was committed (0.2.0), re-verified by hash, not the config's binary.
	abs, _ := filepath.Abs("box.yaml")
	cfg, err := config.Parse(abs, []byte(pipeline))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = b.cfg.Store.Path
	if err := update.ApplyInstalled(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if f := cfg.Modules[1]; f.Manifest.Version != "0.2.0" || !strings.HasPrefix(f.Wasm, filepath.Join(dir, "updates")) {
		t.Errorf("after ApplyInstalled: %s %s", f.Wasm, f.Manifest.Version)
	}
}

// TestIntegrationAgentStage: a device outside the deployment's stage does not take it, and
// says so once in the journal.
func TestIntegrationAgentStage(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	reg := newRegistry(t)
	// Find a stage that leaves box-7 out.
	stage := update.Bucket("box-7", "pumps-1")
	if stage == 0 {
		t.Skip("box-7 is in bucket 0: every stage takes it")
	}
	reg.push("deployments/pumps", trust.KindDeployment, "1", 1, "application/vnd.perch.deployment.v1+yaml",
		[]byte(fmt.Sprintf("name: pumps-1\ngroup: pumps\nstage: %d\nmodules:\n  - {module: f, target: modules/f}\n", stage)), nil)
	reg.pushModule("modules/f", "scale", "0.2.0", 1)
	b := startBox(t, reg, t.TempDir(), 200*time.Millisecond)
	for range 2 {
		if err := b.agent.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if h, _ := b.rt.Health("f"); h.Swaps != 0 {
		t.Errorf("a device outside the stage swapped: %+v", h)
	}
	var n int
	b.rt.Store().DB().QueryRow(`SELECT count(*) FROM update_journal WHERE step = 'skipped'`).Scan(&n)
	if n != 1 {
		t.Errorf("%d skipped steps, want 1", n)
	}
}
