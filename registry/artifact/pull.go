package artifact

import (
	"context"
	_ "crypto/sha256" // go-digest verifies sha256 and sha512 digests only if they are linked in
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
)

// maxConfigBytes bounds the config blob Pull reads into memory.
const maxConfigBytes = 1 << 20

// Pull fetches the artifact ref names (REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@DIGEST)
// into folder dir (created if missing) and returns what it wrote. It refuses a manifest that is
// not a Perch artifact (ErrNotArtifact) and any layer whose bytes do not match its descriptor.
func (c *Client) Pull(ctx context.Context, ref, dir string) (Pulled, error) {
	repo, r, err := c.repository(ref)
	if err != nil {
		return Pulled{}, err
	}
	if err := r.ValidateReference(); err != nil {
		return Pulled{}, fmt.Errorf("artifact: pull %q needs a tag or a digest: %w", ref, err)
	}
	md, rc, err := repo.FetchReference(ctx, r.Reference)
	if err != nil {
		return Pulled{}, fmt.Errorf("artifact: pull %s: %w", ref, err)
	}
	mb, err := content.ReadAll(rc, md)
	rc.Close()
	if err != nil {
		return Pulled{}, fmt.Errorf("artifact: pull %s: manifest: %w", ref, err)
	}
	if want, err := r.Digest(); err == nil && want != md.Digest {
		return Pulled{}, fmt.Errorf("artifact: pull %s: registry returned manifest %s", ref, md.Digest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return Pulled{}, fmt.Errorf("%w: %s: %v", ErrNotArtifact, ref, err)
	}
	k, err := kindOf(m)
	if err != nil {
		return Pulled{}, fmt.Errorf("%s: %w", ref, err)
	}
	if k == Module {
		if err := checkWasmConfig(ctx, repo, m); err != nil {
			return Pulled{}, fmt.Errorf("%w: %s: %v", ErrNotArtifact, ref, err)
		}
	}
	names := make([]string, len(m.Layers))
	for i, l := range m.Layers {
		name := l.Annotations[ocispec.AnnotationTitle]
		if !safeName(name) {
			return Pulled{}, fmt.Errorf("%w: %s: layer %d has title %q, not a plain file name", ErrNotArtifact, ref, i, name)
		}
		names[i] = name
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Pulled{}, fmt.Errorf("artifact: %w", err)
	}
	out := Pulled{Manifest: md, Kind: k, Annotations: m.Annotations}
	for i, l := range m.Layers {
		path := filepath.Join(dir, names[i])
		if err := fetchLayer(ctx, repo, l, path); err != nil {
			return Pulled{}, fmt.Errorf("artifact: pull %s: %s: %w", ref, names[i], err)
		}
		out.Files = append(out.Files, path)
	}
	if err := syncDir(dir); err != nil {
		return Pulled{}, fmt.Errorf("artifact: %w", err)
	}
	return out, nil
}

// kindOf recognises a Perch artifact from its manifest and checks its layers' media types.
func kindOf(m ocispec.Manifest) (Kind, error) {
	var k Kind
	switch {
	case m.Config.MediaType == WasmConfigMediaType:
		k = Module
	case m.ArtifactType == ModelArtifactType:
		k = Model
	case m.ArtifactType == DeploymentArtifactType:
		k = Deployment
	case m.ArtifactType == FirmwareArtifactType:
		k = Firmware
	case m.ArtifactType == RuntimeArtifactType:
		k = Runtime
	default:
		return "", fmt.Errorf("%w: config %q, artifactType %q", ErrNotArtifact, m.Config.MediaType, m.ArtifactType)
	}
	var want []string
	switch k {
	case Module:
		want = []string{WasmLayerMediaType}
	case Model:
		want = []string{ModelLayerMediaType, ModelCardMediaType}
	case Deployment:
		want = []string{DeploymentMediaType}
	case Firmware:
		want = []string{FirmwareLayerMediaType}
	case Runtime:
		want = []string{RuntimeLayerMediaType}
	}
	got := make([]string, len(m.Layers))
	for i, l := range m.Layers {
		got[i] = l.MediaType
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		return "", fmt.Errorf("%w: a %s has layers %q, this one %q", ErrNotArtifact, k, want, got)
	}
	return k, nil
}

func checkWasmConfig(ctx context.Context, repo *remote.Repository, m ocispec.Manifest) error {
	if m.Config.Size > maxConfigBytes {
		return fmt.Errorf("config is %d bytes, more than %d", m.Config.Size, maxConfigBytes)
	}
	b, err := content.FetchAll(ctx, repo, m.Config)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var wc WasmConfig
	if err := json.Unmarshal(b, &wc); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if wc.Architecture != "wasm" {
		return fmt.Errorf("config: architecture %q, want \"wasm\"", wc.Architecture)
	}
	return nil
}

// safeName reports whether name is a plain file name that stays inside the pull folder.
func safeName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`) &&
		!strings.HasSuffix(name, ".part") && filepath.IsLocal(name)
}

// fetchLayer makes path hold exactly the bytes l describes. A file already at path with the
// right digest is kept; bytes already in path+".part" are reused when the registry can seek.
func fetchLayer(ctx context.Context, repo *remote.Repository, l ocispec.Descriptor, path string) error {
	if err := l.Digest.Validate(); err != nil {
		return err
	}
	if ok, _ := matches(path, l); ok {
		return nil
	}
	part := path + ".part"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	dg := l.Digest.Algorithm().Digester()
	have, err := io.Copy(dg.Hash(), f) // what an earlier pull left
	if err != nil {
		return err
	}
	if have == l.Size && dg.Digest() == l.Digest {
		return commit(f, part, path) // complete, but not yet renamed
	}
	if have >= l.Size {
		have = 0
	}
	rc, err := repo.Fetch(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	if have > 0 {
		s, ok := rc.(io.Seeker)
		if ok {
			_, err = s.Seek(have, io.SeekStart)
		}
		if !ok || err != nil {
			have = 0 // the registry cannot resume: start over
		}
	}
	if have == 0 {
		dg = l.Digest.Algorithm().Digester()
		if err := f.Truncate(0); err != nil {
			return err
		}
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(io.MultiWriter(f, dg.Hash()), io.LimitReader(rc, l.Size-have+1))
	if err != nil {
		return err // the .part stays for the next attempt
	}
	if have+n != l.Size || dg.Digest() != l.Digest {
		f.Close()
		os.Remove(part)
		return fmt.Errorf("got %d bytes with digest %s, want %d bytes with digest %s", have+n, dg.Digest(), l.Size, l.Digest)
	}
	return commit(f, part, path)
}

// commit makes the finished part file durable and moves it into place.
func commit(f *os.File, part, path string) error {
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(part, path)
}

// matches reports whether the file at path has l's size and digest.
func matches(path string, l ocispec.Descriptor) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || info.Size() != l.Size {
		return false, err
	}
	dg := l.Digest.Algorithm().Digester()
	if _, err := io.Copy(dg.Hash(), f); err != nil {
		return false, err
	}
	return dg.Digest() == l.Digest, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
