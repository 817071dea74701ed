package artifact

import (
	"io"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// recorder is a Progress that counts the bytes read through it.
type recorder struct {
	begun, ended []string // media types
	bytes        int64
	errs         []error
}

func (r *recorder) Begin(d ocispec.Descriptor, rd io.Reader) io.Reader {
	r.begun = append(r.begun, d.MediaType)
	return readFunc(func(p []byte) (int, error) {
		n, err := rd.Read(p)
		r.bytes += int64(n)
		return n, err
	})
}

func (r *recorder) End(d ocispec.Descriptor, err error) {
	r.ended = append(r.ended, d.MediaType)
	r.errs = append(r.errs, err)
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// Manifest annotations go into the manifest (and its digest), come back from Pull, and progress
// sees every byte of the blobs sent, and no blob the registry already has.
func TestIntegrationPushAnnotations(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx := testCtx(t)
	reg := startRegistry(t)
	c := &Client{PlainHTTP: true}
	wasm := randomBytes(t, 100<<10)
	path := write(t, t.TempDir(), "m.wasm", wasm)
	const key = "dev.perch.test"
	var rec recorder
	desc, err := c.PushWith(ctx, reg+"/modules/m:r1", Module, PushOptions{Annotations: map[string]string{key: "name: m\n"}, Progress: &rec}, path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rec.begun, ","); got != WasmConfigMediaType+","+WasmLayerMediaType || len(rec.ended) != 2 || rec.errs[0] != nil || rec.errs[1] != nil {
		t.Fatalf("progress: begun %s, ended %v, errs %v", got, rec.ended, rec.errs)
	}
	m := fetchManifest(t, ctx, reg+"/modules/m@"+desc.Digest.String())
	if rec.bytes != m.Config.Size+int64(len(wasm)) {
		t.Errorf("progress saw %d bytes, want %d", rec.bytes, m.Config.Size+int64(len(wasm)))
	}
	if m.Annotations[key] != "name: m\n" {
		t.Errorf("manifest annotations %v", m.Annotations)
	}
	got, err := c.Pull(ctx, reg+"/modules/m@"+desc.Digest.String(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got.Annotations[key] != "name: m\n" {
		t.Errorf("pulled annotations %v", got.Annotations)
	}

	// Another annotation value: another manifest digest; the blobs are not sent again.
	rec = recorder{}
	other, err := c.PushWith(ctx, reg+"/modules/m:r2", Module, PushOptions{Annotations: map[string]string{key: "name: m2\n"}, Progress: &rec}, path)
	if err != nil {
		t.Fatal(err)
	}
	if other.Digest == desc.Digest {
		t.Error("the annotation does not change the manifest digest")
	}
	if len(rec.begun) != 0 || rec.bytes != 0 {
		t.Errorf("blobs the registry has were sent again: %v, %d bytes", rec.begun, rec.bytes)
	}
	// Without annotations, Push gives the manifest it always gave (no annotations field).
	plain, err := c.Push(ctx, reg+"/modules/m:plain", Module, path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fetchManifest(t, ctx, reg+"/modules/m@"+plain.Digest.String()); m.Annotations != nil {
		t.Errorf("plain push has annotations %v", m.Annotations)
	}
	if _, err := c.PushWith(ctx, reg+"/modules/m:bad", Module, PushOptions{Annotations: map[string]string{"": "x"}}, path); err == nil {
		t.Error("an empty annotation key was accepted")
	}
}
