package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/perch-edge/perch/registry/registrytest"
	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	perchupdate "github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/sdk/perchtest"
)

func TestPushPromoteLsFlags(t *testing.T) {
	ctx := context.Background()
	common := []string{"--registry", "http://127.0.0.1:1", "--keys", t.TempDir(), "--tuf", t.TempDir()}
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"push"}, "--registry is required"},
		{[]string{"push", "--registry", "x"}, "--target is required"},
		{[]string{"push", "module"}, "want KIND FILE..."},
		{append([]string{"push", "gadget", "a", "--target", "t"}, common...), `unknown KIND "gadget"`},
		{append([]string{"push", "firmware", "fw.img", "--target", "t", "--version", "1"}, common...), "firmware needs --hardware"},
		{append([]string{"push", "model", "a.onnx", "a.card.yaml", "--target", "t"}, common...), "--version is required for a model"},
		{append([]string{"push", "module", "a.wasm", "b.wasm", "--target", "t"}, common...), "a module is one NAME.wasm file"},
		{append([]string{"push", "module", "nothere.wasm", "--target", "t"}, common...), "nothere.manifest.yaml"},
		{append([]string{"push", "deployment", "d.yaml", "--target", "t", "--version", "1", "--hardware", "amd64,,arm64"}, common...), "an empty name"},
		{[]string{"push", "deployment", "d.yaml", "--target", "t", "--version", "1", "--registry", "ftp://x", "--keys", "k", "--tuf", "u"}, `--registry "ftp://x"`},
		{[]string{"promote"}, "--registry is required"},
		{append([]string{"promote", "--deployment", "Bad Name", "--group", "pumps", "--stage", "101"}, common...), "stage: want a percentage"},
		{append([]string{"promote", "--deployment", "d", "--group", "g", "--stage", "5"}, common...), "modules: a deployment names at least one"},
		{append([]string{"promote", "--module", "f"}, common...), "want MODULE=TARGET"},
		{[]string{"registry", "ls"}, "--registry is required"},
		{[]string{"registry", "ls", "--registry", "http://127.0.0.1:1"}, "--root or --tuf is required"},
		{[]string{"registry", "ls", "--registry", "http://127.0.0.1:1", "--root", "/nonexistent/1.root.json"}, "/nonexistent/1.root.json"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := call(ctx, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPushParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	target := fs.String("target", "", "")
	pos, err := parseInterspersed(fs, []string{"module", "--target", "modules/f", "a.wasm", "--", "--b"})
	if err != nil {
		t.Fatal(err)
	}
	if *target != "modules/f" || strings.Join(pos, " ") != "module a.wasm --b" {
		t.Errorf("target %q, positional %q", *target, pos)
	}
}

// On a terminal the progress is a bar that ends at 100%; elsewhere, one line per blob.
func TestPushProgress(t *testing.T) {
	d := ocispec.Descriptor{Size: 300000, Annotations: map[string]string{ocispec.AnnotationTitle: "big.wasm"}}
	for _, tty := range []bool{true, false} {
		var buf bytes.Buffer
		p := &progress{w: &buf, tty: tty}
		n, err := io.Copy(io.Discard, p.Begin(d, bytes.NewReader(make([]byte, d.Size))))
		if err != nil || n != d.Size {
			t.Fatal(n, err)
		}
		p.End(d, nil)
		out := buf.String()
		if tty && (!strings.Contains(out, "big.wasm") || !strings.Contains(out, "100%") || !strings.Contains(out, "300 kB")) {
			t.Errorf("bar: %q", out)
		}
		if !tty && (strings.Count(out, "\n") != 1 || !strings.Contains(out, "big.wasm: 300000 bytes sent")) {
			t.Errorf("plain: %q", out)
		}
		buf.Reset()
		p.Begin(d, bytes.NewReader(nil))
		p.End(d, errors.New("connection reset"))
		if !strings.Contains(buf.String(), "big.wasm: upload failed: connection reset") {
			t.Errorf("failure (tty %v): %q", tty, buf.String())
		}
	}
}

// operator is a registry on loopback, its TUF folder and the operator's keys.
type operator struct {
	url, tuf, keys string
}

func startOperatorRegistry(t *testing.T) operator {
	r := registrytest.Start(t)
	return operator{url: r.URL, tuf: r.TUF, keys: r.Keys}
}

func (o operator) flags() []string {
	return []string{"--registry", o.url, "--keys", o.keys, "--tuf", o.tuf}
}

// moduleFiles copies build/modules/NAME.wasm into a new folder with its manifest, whose
// version is set to version, and returns the .wasm path.
func moduleFiles(t *testing.T, name, version string) string {
	t.Helper()
	src := perchtest.Built(t, name)
	bin, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	man, err := os.ReadFile(strings.TrimSuffix(src, ".wasm") + ".manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(man), "\n") {
		if strings.HasPrefix(l, "version:") {
			l = "version: " + version
		}
		lines = append(lines, l)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name+".manifest.yaml"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".wasm")
	if err := os.WriteFile(path, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestIntegrationPushPromoteLs: an operator pushes a module and promotes a deployment with the
// CLI; ls lists both; a release that does not grow is refused; and a box's update agent takes
// the deployment once its stage includes the box, running the pushed module.
func TestIntegrationPushPromoteLs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, TUF keys, a runtime, Wasm modules")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	op := startOperatorRegistry(t)
	wasm := moduleFiles(t, "scale", "0.2.0")
	wasmBytes, _ := os.ReadFile(wasm)

	stdout, stderr, err := call(ctx, append([]string{"push", "module", wasm, "--target", "modules/f"}, op.flags()...)...)
	if err != nil {
		t.Fatalf("push: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "modules/f: module 0.2.0 release 1 signed and published") ||
		!strings.Contains(stderr, fmt.Sprintf("scale.wasm: %d bytes sent", len(wasmBytes))) {
		t.Fatalf("push output:\n%s\n%s", stdout, stderr)
	}

	// The same release again is refused, before anything is uploaded; so is a version that
	// disagrees with the manifest.
	_, stderr, err = call(ctx, append([]string{"push", "module", wasm, "--target", "modules/f", "--release", "1"}, op.flags()...)...)
	if !errors.Is(err, trust.ErrRelease) || !strings.Contains(err.Error(), "--release 1 is not above the current release 1") {
		t.Fatalf("a second release 1: %v", err)
	}
	if strings.Contains(stderr, "pushing") {
		t.Errorf("a refused release was uploaded: %s", stderr)
	}
	if _, _, err := call(ctx, append([]string{"push", "module", wasm, "--target", "modules/g", "--version", "9"}, op.flags()...)...); err == nil ||
		!strings.Contains(err.Error(), `says version "0.2.0"`) {
		t.Errorf("a --version that disagrees with the manifest: %v", err)
	}
	if _, _, err := call(ctx, append([]string{"promote", "--deployment", "pumps-1", "--group", "pumps", "--stage", "5",
		"--module", "f=modules/nothere"}, op.flags()...)...); err == nil || !strings.Contains(err.Error(), "push it first") {
		t.Errorf("promote to a target that is not signed: %v", err)
	}

	// A box whose bucket is at or above the first stage does not take it.
	stage := perchupdate.Bucket("box-7", "pumps-1")
	first := max(stage, 1)
	t.Logf("box-7 is in bucket %d of pumps-1: first stage %d%%", stage, first)
	promote := func(stage int) string {
		t.Helper()
		stdout, stderr, err := call(ctx, append([]string{"promote", "--deployment", "pumps-1", "--group", "pumps",
			"--stage", fmt.Sprint(stage), "--module", "f=modules/f"}, op.flags()...)...)
		if err != nil {
			t.Fatalf("promote %d: %v\n%s", stage, err, stderr)
		}
		return stdout
	}
	if out := promote(first); !strings.Contains(out, fmt.Sprintf("deployments/pumps: deployment pumps-1 for group pumps at stage %d%% signed as release 1", first)) {
		t.Fatalf("promote: %s", out)
	}

	b := startUpdatingBox(t, op)
	if err := b.agent.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := b.rt.Health("f"); stage > 0 && h.Swaps != 0 {
		t.Fatalf("a box outside stage %d%% (bucket %d) took the deployment: %+v", first, stage, h)
	}

	if out := promote(100); !strings.Contains(out, "release 2") || (first < 100 && !strings.Contains(out, fmt.Sprintf("stage raised from %d%% to 100%%", first))) {
		t.Fatalf("raising the stage: %s", out)
	}

	// ls lists both targets, from the verified metadata.
	stdout, stderr, err = call(ctx, "registry", "ls", "--registry", op.url, "--tuf", op.tuf, "--json")
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, stderr)
	}
	var entries []lsEntry
	if err := json.Unmarshal([]byte(stdout), &entries); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, stdout)
	}
	if len(entries) != 2 {
		t.Fatalf("ls: %+v", entries)
	}
	dep, mod := entries[0], entries[1]
	if dep.Name != "deployments/pumps" || dep.Kind != "deployment" || dep.Release != 2 || dep.Version != "pumps-1 at 100%" || dep.SizeBytes <= 0 {
		t.Errorf("deployment entry %+v", dep)
	}
	if mod.Name != "modules/f" || mod.Kind != "module" || mod.Version != "0.2.0" || mod.Release != 1 || mod.ABI != "perch:v1" ||
		strings.Join(mod.Hardware, ",") != "any" || !strings.HasPrefix(mod.Digest, "sha256:") || mod.SizeBytes <= int64(len(wasmBytes)) || mod.Error != "" {
		t.Errorf("module entry %+v (wasm %d bytes)", mod, len(wasmBytes))
	}
	stdout, _, err = call(ctx, "registry", "ls", "--registry", op.url, "--root", filepath.Join(op.tuf, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"2 targets", "NAME", "modules/f", "module", "0.2.0", mod.Digest[:19], fmt.Sprint(mod.SizeBytes)} {
		if !strings.Contains(stdout, w) {
			t.Errorf("ls lacks %q:\n%s", w, stdout)
		}
	}
	// Another registry's root does not verify this one's metadata.
	other := t.TempDir()
	if _, err := trust.Init(filepath.Join(other, "keys"), filepath.Join(other, "tuf"), trust.InitOptions{RootKeys: 1, RootThreshold: 1, TargetsKeys: 1, TargetsThreshold: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := call(ctx, "registry", "ls", "--registry", op.url, "--tuf", filepath.Join(other, "tuf")); err == nil {
		t.Error("ls trusted metadata signed by other keys")
	}

	// The box now takes the deployment and runs the pushed module.
	if err := b.agent.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := b.rt.Health("f"); h.Version != "0.2.0" || h.Swaps != 1 {
		t.Fatalf("after the update: %+v", h)
	}
	in, err := b.rt.Store().InstalledAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 1 || in[0].Target != "modules/f" || in[0].Release != 1 || in[0].Digest != mod.Digest {
		t.Errorf("installed %+v", in)
	}
}

// updatingBox runs a pipeline (a simulated BME280 into module f, the scale filter) with an
// update agent for group pumps pointed at op's registry.
type updatingBox struct {
	rt    *runtime.Runtime
	agent *perchupdate.Agent
}

// updatingBoxConfig is the pipeline of an updating box with its recorder in dir: a simulated
// BME280 read by module env, into module f (the scale filter), which deployments update.
func updatingBoxConfig(t *testing.T, dir string) string {
	return fmt.Sprintf(`site: test
device: box-7
store: {path: %q}
engine: {cache_dir: %q}
devices:
  - {name: env0, backend: sim, type: bme280, bus: 1, address: 0x76}
modules:
  - name: env
    wasm: %q
    poll: 20ms
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: f
    wasm: %q
    inputs: [env]
    config: {factor: 1}
`, filepath.Join(dir, "perch.db"), filepath.Join(shared, "cache"), perchtest.Built(t, "bme280"), perchtest.Built(t, "scale"))
}

func startUpdatingBox(t *testing.T, op operator) *updatingBox {
	t.Helper()
	dir := t.TempDir()
	cfgText := updatingBoxConfig(t, dir)
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(cfgText))
	if err != nil {
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
	root, err := os.ReadFile(filepath.Join(op.tuf, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := perchupdate.New(perchupdate.Config{Device: "box-7", Group: "pumps", Hardware: "amd64", Registry: op.url,
		Dir: filepath.Join(dir, "updates"), Root: root, HealthWindow: 300 * time.Millisecond}, cfg, rt, rt.Store())
	if err != nil {
		t.Fatal(err)
	}
	return &updatingBox{rt: rt, agent: a}
}

// A second push or promote on the same TUF folder waits for the first to finish.
func TestPushLockDir(t *testing.T) {
	dir := t.TempDir()
	first, err := lockDir(dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	got := make(chan error, 1)
	go func() {
		second, err := lockDir(dir, pw)
		if err == nil {
			second.Close()
		}
		got <- err
	}()
	line := make([]byte, 200)
	n, err := pr.Read(line) // the second says it waits, and does
	if err != nil || !strings.Contains(string(line[:n]), "waiting for another push or promote") {
		t.Fatalf("%q %v", line[:n], err)
	}
	select {
	case err := <-got:
		t.Fatalf("the second lock was taken while the first was held (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the second lock was not taken after the first was released")
	}
	if _, err := lockDir(filepath.Join(dir, "nothere"), io.Discard); err == nil {
		t.Error("locked a folder that does not exist")
	}
}
