package artifact

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/perch-edge/perch/registry/registrytest"
)

// startRegistry runs the embedded registry on a free loopback port until the test ends and
// returns its host:port.
func startRegistry(t *testing.T) string { return registrytest.Start(t).Addr }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// fetchManifest reads a manifest straight from the registry, without Pull's checks.
func fetchManifest(t *testing.T, ctx context.Context, ref string) ocispec.Manifest {
	t.Helper()
	repo, err := remote.NewRepository(ref)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	desc, rc, err := repo.FetchReference(ctx, repo.Reference.Reference)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := content.ReadAll(rc, desc)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A real Wasm module goes up with the CNCF layout and comes back byte for byte.
func TestIntegrationModule(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	wasmPath := filepath.Join("..", "..", "build", "modules", "threshold.wasm")
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Skipf("%v: run `make modules` first", err)
	}
	ctx := testCtx(t)
	reg := startRegistry(t)
	c := &Client{PlainHTTP: true}

	desc, err := c.Push(ctx, reg+"/modules/threshold:1.0.0", Module, wasmPath)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest media type %q", desc.MediaType)
	}
	// Same bytes, same manifest digest (no time stamps), whatever the tag.
	again, err := c.Push(ctx, reg+"/modules/threshold:latest", Module, wasmPath)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != desc.Digest {
		t.Errorf("second push digest %s, first %s", again.Digest, desc.Digest)
	}

	m := fetchManifest(t, ctx, reg+"/modules/threshold@"+desc.Digest.String())
	if m.Config.MediaType != WasmConfigMediaType || m.ArtifactType != "" {
		t.Errorf("config %q artifactType %q, want %q and none", m.Config.MediaType, m.ArtifactType, WasmConfigMediaType)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != WasmLayerMediaType ||
		m.Layers[0].Annotations[ocispec.AnnotationTitle] != "threshold.wasm" || m.Layers[0].Size != int64(len(wasm)) {
		t.Fatalf("layers %+v", m.Layers)
	}
	repo, _ := remote.NewRepository(reg + "/modules/threshold")
	repo.PlainHTTP = true
	cb, err := content.FetchAll(ctx, repo, m.Config)
	if err != nil {
		t.Fatal(err)
	}
	var wc WasmConfig
	if err := json.Unmarshal(cb, &wc); err != nil {
		t.Fatal(err)
	}
	if wc.Architecture != "wasm" || wc.OS != "wasip1" || len(wc.LayerDigests) != 1 || wc.LayerDigests[0] != m.Layers[0].Digest {
		t.Errorf("config %s", cb)
	}

	dir := t.TempDir()
	got, err := c.Pull(ctx, reg+"/modules/threshold@"+desc.Digest.String(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != Module || got.Manifest.Digest != desc.Digest || len(got.Files) != 1 {
		t.Fatalf("pulled %+v", got)
	}
	if b, err := os.ReadFile(got.Files[0]); err != nil || !bytes.Equal(b, wasm) {
		t.Fatalf("pulled file differs from %s (err %v)", wasmPath, err)
	}
}

func TestIntegrationOtherKinds(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx := testCtx(t)
	reg := startRegistry(t)
	c := &Client{PlainHTTP: true}
	src := t.TempDir()
	tests := []struct {
		kind   Kind
		files  map[string][]byte // in layer order below
		order  []string
		artTyp string
		layers []string
	}{
		{Model, map[string][]byte{"ae.onnx": randomBytes(t, 4096), "ae.card.yaml": []byte("name: ae\n")}, []string{"ae.onnx", "ae.card.yaml"},
			ModelArtifactType, []string{ModelLayerMediaType, ModelCardMediaType}},
		{Deployment, map[string][]byte{"fleet.yaml": []byte("modules: []\n")}, []string{"fleet.yaml"},
			DeploymentArtifactType, []string{DeploymentMediaType}},
		{Firmware, map[string][]byte{"rootfs.img": randomBytes(t, 64<<10)}, []string{"rootfs.img"},
			FirmwareArtifactType, []string{FirmwareLayerMediaType}},
		{Runtime, map[string][]byte{"perch": randomBytes(t, 32<<10)}, []string{"perch"},
			RuntimeArtifactType, []string{RuntimeLayerMediaType}},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			var paths []string
			for _, name := range tt.order {
				paths = append(paths, write(t, src, name, tt.files[name]))
			}
			ref := reg + "/" + string(tt.kind) + "s/x:v1"
			desc, err := c.Push(ctx, ref, tt.kind, paths...)
			if err != nil {
				t.Fatal(err)
			}
			if desc.ArtifactType != tt.artTyp || ArtifactType(tt.kind) != tt.artTyp {
				t.Errorf("artifactType %q / %q, want %q", desc.ArtifactType, ArtifactType(tt.kind), tt.artTyp)
			}
			m := fetchManifest(t, ctx, ref)
			if m.ArtifactType != tt.artTyp || m.Config.MediaType != ocispec.MediaTypeEmptyJSON {
				t.Errorf("manifest artifactType %q config %q", m.ArtifactType, m.Config.MediaType)
			}
			for i, l := range m.Layers {
				if l.MediaType != tt.layers[i] {
					t.Errorf("layer %d media type %q, want %q", i, l.MediaType, tt.layers[i])
				}
			}
			dir := t.TempDir()
			got, err := c.Pull(ctx, ref, dir)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tt.kind || got.Manifest.Digest != desc.Digest || len(got.Files) != len(tt.order) {
				t.Fatalf("pulled %+v", got)
			}
			for i, name := range tt.order {
				if got.Files[i] != filepath.Join(dir, name) {
					t.Errorf("file %d is %s, want %s", i, got.Files[i], filepath.Join(dir, name))
				}
				if b, err := os.ReadFile(got.Files[i]); err != nil || !bytes.Equal(b, tt.files[name]) {
					t.Errorf("%s differs after the round trip (err %v)", name, err)
				}
			}
		})
	}
}

// rangeRecorder records the Range header of every request.
type rangeRecorder struct {
	mu     sync.Mutex
	ranges []string
}

func (r *rangeRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if h := req.Header.Get("Range"); h != "" {
		r.mu.Lock()
		r.ranges = append(r.ranges, h)
		r.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

// An interrupted pull resumes from its .part file; a corrupt .part is caught and discarded.
func TestIntegrationPullResume(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx := testCtx(t)
	reg := startRegistry(t)
	rec := &rangeRecorder{}
	c := &Client{PlainHTTP: true, HTTPClient: &http.Client{Transport: rec}}
	img := randomBytes(t, 1<<20)
	ref := reg + "/firmware/pi4:v2"
	if _, err := c.Push(ctx, ref, Firmware, write(t, t.TempDir(), "fw.img", img)); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	const have = 300 << 10
	write(t, dir, "fw.img.part", img[:have])
	got, err := c.Pull(ctx, ref, dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got.Files[0]); !bytes.Equal(b, img) {
		t.Fatal("resumed file differs")
	}
	if len(rec.ranges) != 1 || !strings.HasPrefix(rec.ranges[0], "bytes=307200-") {
		t.Errorf("Range requests %q, want one from byte 307200", rec.ranges)
	}
	if _, err := os.Stat(filepath.Join(dir, "fw.img.part")); !os.IsNotExist(err) {
		t.Errorf(".part left behind: %v", err)
	}

	// A corrupt .part: the digest check fails, the .part goes, the next pull starts afresh.
	dir = t.TempDir()
	write(t, dir, "fw.img.part", randomBytes(t, have))
	if _, err := c.Pull(ctx, ref, dir); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("pull over a corrupt .part: %v, want a digest mismatch", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "fw.img.part")); !os.IsNotExist(err) {
		t.Errorf("corrupt .part kept: %v", err)
	}
	if got, err = c.Pull(ctx, ref, dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got.Files[0]); !bytes.Equal(b, img) {
		t.Fatal("file differs after the retry")
	}

	// Already in place: nothing is fetched again.
	rec.ranges = nil
	before, _ := os.Stat(got.Files[0])
	if _, err := c.Pull(ctx, ref, dir); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(got.Files[0]); !after.ModTime().Equal(before.ModTime()) {
		t.Error("a complete file was rewritten")
	}
}

// pushRaw pushes a manifest with one layer built by the caller, bypassing Push's checks.
func pushRaw(t *testing.T, ctx context.Context, ref string, m ocispec.Manifest, layer []byte) {
	t.Helper()
	repo, err := remote.NewRepository(ref)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	cfg := []byte("{}")
	if err := repo.Push(ctx, content.NewDescriptorFromBytes(m.Config.MediaType, cfg), bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	m.Config = content.NewDescriptorFromBytes(m.Config.MediaType, cfg)
	ld := content.NewDescriptorFromBytes(m.Layers[0].MediaType, layer)
	ld.Annotations = m.Layers[0].Annotations
	if err := repo.Push(ctx, ld, bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	m.Layers[0] = ld
	m.SchemaVersion = 2
	m.MediaType = ocispec.MediaTypeImageManifest
	mb, _ := json.Marshal(m)
	if err := repo.PushReference(ctx, content.NewDescriptorFromBytes(m.MediaType, mb), bytes.NewReader(mb), repo.Reference.Reference); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationPullRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx := testCtx(t)
	reg := startRegistry(t)
	c := &Client{PlainHTTP: true}
	title := func(s string) map[string]string { return map[string]string{ocispec.AnnotationTitle: s} }
	tests := []struct {
		name string
		m    ocispec.Manifest
	}{
		{"container image", ocispec.Manifest{Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig},
			Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Annotations: title("x")}}}},
		{"escaping title", ocispec.Manifest{ArtifactType: FirmwareArtifactType, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON},
			Layers: []ocispec.Descriptor{{MediaType: FirmwareLayerMediaType, Annotations: title("../../etc/evil")}}}},
		{"no title", ocispec.Manifest{ArtifactType: FirmwareArtifactType, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON},
			Layers: []ocispec.Descriptor{{MediaType: FirmwareLayerMediaType}}}},
		{"wrong layer type", ocispec.Manifest{ArtifactType: ModelArtifactType, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON},
			Layers: []ocispec.Descriptor{{MediaType: FirmwareLayerMediaType, Annotations: title("m.onnx")}}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := reg + "/bad/x:v" + string(rune('0'+i))
			pushRaw(t, ctx, ref, tt.m, []byte("payload"))
			dir := t.TempDir()
			_, err := c.Pull(ctx, ref, filepath.Join(dir, "out"))
			if !errors.Is(err, ErrNotArtifact) {
				t.Fatalf("Pull: %v, want ErrNotArtifact", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("Pull wrote %v", entries)
			}
		})
	}
	if _, err := c.Pull(ctx, reg+"/bad/none:v1", t.TempDir()); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("pull of a missing tag: %v", err)
	}
}

func TestPushLayoutErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	wasm := write(t, dir, "a.wasm", []byte("\x00asm"))
	onnx := write(t, dir, "m.onnx", []byte("x"))
	card := write(t, dir, "m.card.yaml", []byte("x"))
	c := &Client{PlainHTTP: true}
	const reg = "127.0.0.1:1" // nothing listens: layout errors come first
	tests := []struct {
		name  string
		ref   string
		kind  Kind
		files []string
		want  error
		msg   string
	}{
		{"module with two files", reg + "/m:v1", Module, []string{wasm, wasm}, ErrLayout, "one .wasm file"},
		{"module not wasm", reg + "/m:v1", Module, []string{card}, ErrLayout, "one .wasm file"},
		{"model reversed", reg + "/m:v1", Model, []string{card, onnx}, ErrLayout, "NAME.onnx then NAME.card.yaml"},
		{"firmware none", reg + "/m:v1", Firmware, nil, ErrLayout, "one file"},
		{"runtime with two files", reg + "/m:v1", Runtime, []string{wasm, card}, ErrLayout, "a runtime is one file"},
		{"unknown kind", reg + "/m:v1", Kind("plugin"), []string{wasm}, ErrUnknownKind, "plugin"},
		{"plain HTTP off loopback", "registry.example.com/m:v1", Module, []string{wasm}, ErrPlainHTTP, "registry.example.com"},
		{"no tag", reg + "/m", Module, []string{wasm}, nil, "needs a tag"},
		{"missing file", reg + "/m:v1", Firmware, []string{filepath.Join(dir, "nope.img")}, os.ErrNotExist, "nope.img"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Push(ctx, tt.ref, tt.kind, tt.files...)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Push: %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:5000": true, "localhost:5000": true, "[::1]:5000": true, "127.8.9.1:1": true, "localhost": true,
		"10.0.0.1:5000": false, "registry.example.com": false, "0.0.0.0:5000": false, "[::]:80": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestSafeName(t *testing.T) {
	for name, want := range map[string]bool{
		"threshold.wasm": true, "ae.card.yaml": true, ".hidden": true,
		"": false, ".": false, "..": false, "a/b": false, `a\b`: false, "/etc/passwd": false, "x.part": false,
	} {
		if got := safeName(name); got != want {
			t.Errorf("safeName(%q) = %v, want %v", name, got, want)
		}
	}
}
