package update_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/registry/artifact"
	"github.com/perch-edge/perch/registry/registrytest"
	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/sdk/perchtest"
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
	r := registrytest.Start(t)
	return &registryFixture{t: t, url: r.URL, root: r.RootJSON, repo: r.Repo(t)}
}

// push pushes files as an artifact of kind to OCI repository target (tag rN) with the
// registry/artifact client, as perch push does, and signs a TUF target pinning its manifest.
func (f *registryFixture) push(target string, kind artifact.Kind, version string, release uint64, annotations map[string]string, files ...string) {
	f.t.Helper()
	host := strings.TrimPrefix(f.url, "http://")
	c := &artifact.Client{PlainHTTP: true}
	desc, err := c.PushWith(context.Background(), fmt.Sprintf("%s/%s:r%d", host, target, release), kind,
		artifact.PushOptions{Annotations: annotations}, files...)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.repo.AddTarget(target, desc.Size, trust.Hashes{"sha256": desc.Digest.Encoded()},
		trust.Custom{Kind: string(kind), Version: version, Hardware: []string{trust.HardwareAny}, Release: release, Repository: target, Digest: desc.Digest.String()}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.repo.Publish(); err != nil {
		f.t.Fatal(err)
	}
}

// pushDeployment pushes a deployment document as release of target.
func (f *registryFixture) pushDeployment(target string, release uint64, doc string) {
	f.t.Helper()
	path := filepath.Join(f.t.TempDir(), "deployment.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.push(target, artifact.Deployment, fmt.Sprint(release), release, nil, path)
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
	path := filepath.Join(f.t.TempDir(), file+".wasm")
	if err := os.WriteFile(path, bin, 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.push(target, artifact.Module, version, release, map[string]string{update.ModuleManifestAnnotation: text}, path)
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
	return runBox(t, reg, dir, cfg, runtime.Options{BackoffMin: 20 * time.Millisecond}, window)
}

// runBox runs cfg's pipeline until the test ends, with an agent (device box-7 of group pumps)
// pointed at reg, its files in dir/updates.
func runBox(t *testing.T, reg *registryFixture, dir string, cfg *config.Config, opts runtime.Options, window time.Duration) *box {
	t.Helper()
	rt, err := runtime.New(context.Background(), cfg, opts)
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
	reg.pushDeployment("deployments/pumps", 1, "name: pumps-1\ngroup: pumps\nstage: 100\nmodules:\n  - {module: f, target: modules/f}\n")
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
		// Polling again does not try the rolled-back release a second time.
		swaps := h.Swaps
		if err := b.agent.Once(ctx); err != nil {
			t.Fatalf("%s: poll after the rollback: %v", bad, err)
		}
		if h, _ := b.rt.Health("f"); h.Swaps != swaps {
			t.Fatalf("%s: the rolled-back release was tried again: %+v", bad, h)
		}
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
	reg.pushDeployment("deployments/pumps", 1, fmt.Sprintf("name: pumps-1\ngroup: pumps\nstage: %d\nmodules:\n  - {module: f, target: modules/f}\n", stage))
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
