// Package artifact packs Perch artifacts (Wasm modules, models, deployments, firmware, the perch
// binary) as OCI
// artifacts and moves them to and from an OCI registry with oras-go.
//
// # Overview
//
// Every artifact is one OCI image manifest (application/vnd.oci.image.manifest.v1+json) whose
// layers are the artifact's files, each with an org.opencontainers.image.title annotation that
// names the file (so `oras pull` writes the same files). Manifests carry no creation time stamp:
// the same files always give the same manifest digest, which is what TUF targets pin.
//
//   - A Wasm module follows the CNCF TAG Runtime "Wasm OCI Artifact layout": config media type
//     [WasmConfigMediaType] (a JSON config with architecture "wasm", os "wasip1" and the layer
//     digests) and one [WasmLayerMediaType] layer. That layout sets no manifest artifactType: the
//     config media type is the artifact's type, as the OCI image spec prescribes when the config
//     is not empty. [ArtifactType] reports it.
//   - Models, deployments, firmware and the runtime (the perch binary, for its A/B self-update)
//     use our own types: the OCI empty config, a manifest artifactType ([ModelArtifactType],
//     ...), and one layer per file ([ModelLayerMediaType] for the .onnx file and
//     [ModelCardMediaType] for its .card.yaml, [DeploymentMediaType], [FirmwareLayerMediaType],
//     [RuntimeLayerMediaType]).
//
// # Usage
//
//	c := &artifact.Client{PlainHTTP: true} // loopback registry only
//	desc, err := c.Push(ctx, "127.0.0.1:5000/modules/threshold:1.2.0", artifact.Module, "build/modules/threshold.wasm")
//	got, err := c.Pull(ctx, "127.0.0.1:5000/modules/threshold@"+desc.Digest.String(), "/var/lib/perch/staging")
//
// [Client.PushWith] also sets manifest annotations (a Wasm module's Perch manifest travels in one,
// so the TUF target that pins the manifest covers it) and reports upload progress.
//
// Pull verifies every byte against its digest and size, writes each file as NAME.part, fsyncs it
// and renames it into place; a NAME.part left by an interrupted pull is resumed with an HTTP range
// request when the registry supports it (distribution does), and a file already in place with
// the right digest is not fetched again. Pull by digest (as the update agent does, from TUF) to
// get exactly the bytes that were signed; a tag can move.
package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// Kind is what an artifact is.
type Kind string

// The kinds of artifact (the same words as the kind in TUF targets' custom metadata).
const (
	Module     Kind = "module"     // one .wasm file
	Model      Kind = "model"      // NAME.onnx and NAME.card.yaml
	Deployment Kind = "deployment" // one deployment document (YAML)
	Firmware   Kind = "firmware"   // one firmware image
	Runtime    Kind = "runtime"    // one perch binary (the runtime's self-update)
)

// Media types. The Wasm ones are the CNCF TAG Runtime Wasm OCI Artifact layout's; the rest are ours.
const (
	WasmConfigMediaType = "application/vnd.wasm.config.v0+json"
	WasmLayerMediaType  = "application/wasm"

	ModelArtifactType   = "application/vnd.perch.model.v1"
	ModelLayerMediaType = "application/vnd.perch.model.v1+onnx"
	ModelCardMediaType  = "application/vnd.perch.model.card.v1+yaml"

	DeploymentArtifactType = "application/vnd.perch.deployment.v1"
	DeploymentMediaType    = "application/vnd.perch.deployment.v1+yaml"

	FirmwareArtifactType   = "application/vnd.perch.firmware.v1"
	FirmwareLayerMediaType = "application/vnd.perch.firmware.image.v1"

	RuntimeArtifactType   = "application/vnd.perch.runtime.v1"
	RuntimeLayerMediaType = "application/vnd.perch.runtime.binary.v1"
)

// ArtifactType is the type a registry reports for an artifact of kind k: the manifest's
// artifactType, or for a Wasm module (which has none) its config media type. It is empty for an
// unknown kind.
func ArtifactType(k Kind) string {
	switch k {
	case Module:
		return WasmConfigMediaType
	case Model:
		return ModelArtifactType
	case Deployment:
		return DeploymentArtifactType
	case Firmware:
		return FirmwareArtifactType
	case Runtime:
		return RuntimeArtifactType
	}
	return ""
}

// Errors.
var (
	ErrLayout      = errors.New("artifact: files do not fit the kind's layout")
	ErrUnknownKind = errors.New("artifact: unknown kind")
	ErrNotArtifact = errors.New("artifact: manifest is not a Perch artifact")
	ErrPlainHTTP   = errors.New("artifact: plain HTTP is allowed only to a loopback registry")
)

// WasmConfig is the config blob of a Wasm module artifact ([WasmConfigMediaType]).
type WasmConfig struct {
	Architecture string          `json:"architecture"` // always "wasm"
	OS           string          `json:"os"`           // "wasip1": Perch modules are core modules
	LayerDigests []digest.Digest `json:"layerDigests"`
}

// Client pushes and pulls artifacts. The zero value talks HTTPS with oras-go's default HTTP
// client. A Client is safe for concurrent use once set up.
type Client struct {
	// PlainHTTP talks HTTP instead of HTTPS. It is refused (ErrPlainHTTP) unless the registry's
	// host is loopback: localhost, 127.0.0.0/8 or ::1.
	PlainHTTP bool
	// HTTPClient sends the requests; nil means oras-go's auth.DefaultClient (anonymous, with
	// retries).
	HTTPClient *http.Client
}

// Pulled is what [Client.Pull] fetched.
type Pulled struct {
	Manifest ocispec.Descriptor // the manifest's descriptor: its digest is the artifact's identity
	Kind     Kind
	Files    []string // paths of the files written, in layer order
	// Annotations are the manifest's annotations (see [PushOptions.Annotations]); nil if none.
	Annotations map[string]string
}

func (c *Client) repository(ref string) (*remote.Repository, registry.Reference, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, r, fmt.Errorf("artifact: reference %q: %w", ref, err)
	}
	if c.PlainHTTP && !isLoopback(r.Host()) {
		return nil, r, fmt.Errorf("%w (reference %q)", ErrPlainHTTP, ref)
	}
	repo := &remote.Repository{Reference: r, PlainHTTP: c.PlainHTTP}
	if c.HTTPClient != nil {
		repo.Client = c.HTTPClient
	}
	return repo, r, nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.Trim(hostport, "[]")
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// file is one layer to push.
type file struct {
	path string
	desc ocispec.Descriptor
}

// layout checks that files fit kind k and returns each file's layer media type, in layer order.
func layout(k Kind, files []string) ([]string, error) {
	one := func(mediaType, suffix string) ([]string, error) {
		if len(files) != 1 || (suffix != "" && !strings.HasSuffix(files[0], suffix)) {
			want := "one file"
			if suffix != "" {
				want = "one " + suffix + " file"
			}
			return nil, fmt.Errorf("%w: a %s is %s, got %q", ErrLayout, k, want, files)
		}
		return []string{mediaType}, nil
	}
	switch k {
	case Module:
		return one(WasmLayerMediaType, ".wasm")
	case Deployment:
		return one(DeploymentMediaType, "")
	case Firmware:
		return one(FirmwareLayerMediaType, "")
	case Runtime:
		return one(RuntimeLayerMediaType, "")
	case Model:
		if len(files) == 2 && strings.HasSuffix(files[0], ".onnx") && strings.HasSuffix(files[1], ".card.yaml") {
			return []string{ModelLayerMediaType, ModelCardMediaType}, nil
		}
		return nil, fmt.Errorf("%w: a model is NAME.onnx then NAME.card.yaml, got %q", ErrLayout, files)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKind, k)
}

// PushOptions are the optional parts of a push ([Client.PushWith]). The zero value is
// [Client.Push]'s behaviour.
type PushOptions struct {
	// Annotations are set on the OCI manifest (so the manifest digest, and the TUF target that
	// pins it, covers them). A Wasm module's Perch manifest travels this way, under the key
	// runtime/update.ModuleManifestAnnotation. Keys must not be empty.
	Annotations map[string]string
	// Progress, if not nil, watches each blob upload.
	Progress Progress
}

// Progress watches the blob uploads of a push. Push calls Begin before each blob it sends (not
// for blobs the registry already has), reads the blob's bytes through the reader Begin returns,
// and calls End with the upload's outcome. Calls come from the pushing goroutine, one blob at a
// time.
type Progress interface {
	Begin(desc ocispec.Descriptor, r io.Reader) io.Reader
	End(desc ocispec.Descriptor, err error)
}

// Push uploads files as an artifact of kind k and tags it with ref's tag (ref is
// REGISTRY/REPOSITORY:TAG). Blobs the repository already has are not sent again. It returns the
// manifest's descriptor.
func (c *Client) Push(ctx context.Context, ref string, k Kind, files ...string) (ocispec.Descriptor, error) {
	return c.PushWith(ctx, ref, k, PushOptions{}, files...)
}

// PushWith is [Client.Push] with options: manifest annotations and upload progress.
func (c *Client) PushWith(ctx context.Context, ref string, k Kind, o PushOptions, files ...string) (ocispec.Descriptor, error) {
	for key := range o.Annotations {
		if key == "" {
			return ocispec.Descriptor{}, fmt.Errorf("artifact: push %q: an annotation has an empty key", ref)
		}
	}
	repo, r, err := c.repository(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := r.ValidateReferenceAsTag(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("artifact: push %q needs a tag: %w", ref, err)
	}
	mediaTypes, err := layout(k, files)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layers := make([]file, len(files))
	for i, p := range files {
		d, err := describe(p, mediaTypes[i])
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		layers[i] = file{path: p, desc: d}
	}

	m := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Annotations: o.Annotations,
	}
	var configBytes []byte
	if k == Module {
		configBytes, err = json.Marshal(WasmConfig{Architecture: "wasm", OS: "wasip1", LayerDigests: []digest.Digest{layers[0].desc.Digest}})
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		m.Config = content.NewDescriptorFromBytes(WasmConfigMediaType, configBytes)
	} else {
		m.ArtifactType = ArtifactType(k)
		m.Config = ocispec.DescriptorEmptyJSON
		configBytes = ocispec.DescriptorEmptyJSON.Data
	}
	if err := pushBlob(ctx, repo, m.Config, o.Progress, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(configBytes)), nil
	}); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("artifact: push config: %w", err)
	}
	for _, l := range layers {
		if err := pushBlob(ctx, repo, l.desc, o.Progress, func() (io.ReadCloser, error) { return os.Open(l.path) }); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("artifact: push %s: %w", l.path, err)
		}
		m.Layers = append(m.Layers, l.desc)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	md := content.NewDescriptorFromBytes(m.MediaType, mb)
	md.ArtifactType = m.ArtifactType
	if err := repo.PushReference(ctx, md, bytes.NewReader(mb), r.Reference); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("artifact: push manifest %s: %w", ref, err)
	}
	return md, nil
}

// describe hashes the file at path into a layer descriptor named by its base name.
func describe(path, mediaType string) (ocispec.Descriptor, error) {
	f, err := os.Open(path)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("artifact: %w", err)
	}
	defer f.Close()
	dg := digest.SHA256.Digester()
	n, err := io.Copy(dg.Hash(), f)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("artifact: read %s: %w", path, err)
	}
	return ocispec.Descriptor{
		MediaType:   mediaType,
		Digest:      dg.Digest(),
		Size:        n,
		Annotations: map[string]string{ocispec.AnnotationTitle: filepath.Base(path)},
	}, nil
}

func pushBlob(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor, p Progress, open func() (io.ReadCloser, error)) error {
	if ok, err := repo.Exists(ctx, desc); err != nil {
		return err
	} else if ok {
		return nil
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if p == nil {
		return repo.Push(ctx, desc, rc)
	}
	err = repo.Push(ctx, desc, p.Begin(desc, rc))
	p.End(desc, err)
	return err
}
