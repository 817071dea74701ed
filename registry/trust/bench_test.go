package trust

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
)

// BenchmarkTrustVerifyReader measures hashing a 4 MiB artifact against its target.
func BenchmarkTrustVerifyReader(b *testing.B) {
	data := make([]byte, 4<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	info := TargetInfo{Name: "x", Length: int64(len(data)), Hashes: Hashes{"sha256": hex.EncodeToString(sum[:])}}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := VerifyReader(bytes.NewReader(data), info); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrustRefresh measures a refresh on loopback with nothing new (50 targets): the
// client fetches 2.root.json (404) and timestamp.json, and checks its cached snapshot and targets.
func BenchmarkTrustRefresh(b *testing.B) {
	f := newFixture(b, InitOptions{})
	for i := range 50 {
		f.addArtifact(fmt.Sprintf("modules/m%02d", i), 1)
	}
	f.publish()
	c := f.client()
	f.refresh(c)
	for b.Loop() {
		if err := c.Refresh(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrustPublish measures signing and writing (with fsync) targets, snapshot and
// timestamp for a repository of 50 targets.
func BenchmarkTrustPublish(b *testing.B) {
	f := newFixture(b, InitOptions{})
	for i := range 50 {
		f.addArtifact(fmt.Sprintf("modules/m%02d", i), 1)
	}
	for b.Loop() {
		if err := f.repo.Publish(); err != nil {
			b.Fatal(err)
		}
	}
}
