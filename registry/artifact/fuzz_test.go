package artifact

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzManifest feeds registry-supplied manifests through Pull's checks: whatever kindOf accepts
// has the kind's layer media types, and every name safeName accepts stays inside the folder.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.wasm.config.v0+json"},` +
		`"layers":[{"mediaType":"application/wasm","annotations":{"org.opencontainers.image.title":"a.wasm"}}]}`))
	f.Add([]byte(`{"artifactType":"application/vnd.perch.model.v1","layers":[{"mediaType":"application/vnd.perch.model.v1+onnx"},` +
		`{"mediaType":"application/vnd.perch.model.card.v1+yaml","annotations":{"org.opencontainers.image.title":"../x"}}]}`))
	f.Add([]byte(`{"artifactType":"application/vnd.perch.firmware.v1","layers":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m ocispec.Manifest
		if json.Unmarshal(b, &m) != nil {
			return
		}
		k, err := kindOf(m)
		if err == nil {
			if ArtifactType(k) == "" {
				t.Fatalf("kindOf accepted unknown kind %q", k)
			}
			if len(m.Layers) == 0 {
				t.Fatalf("kindOf accepted a %s without layers", k)
			}
		}
		dir := filepath.Join(t.TempDir(), "out")
		for _, l := range m.Layers {
			name := l.Annotations[ocispec.AnnotationTitle]
			if !safeName(name) {
				continue
			}
			p := filepath.Join(dir, name)
			if filepath.Dir(p) != dir || strings.HasSuffix(p, ".part") {
				t.Fatalf("safe name %q lands at %s, outside %s", name, p, dir)
			}
		}
	})
}
