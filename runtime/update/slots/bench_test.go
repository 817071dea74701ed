package slots_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/update/slots"
)

// BenchmarkInstallCommit measures a whole self-update on the real disk (b.TempDir): Install
// of a 30 MB image (write, fsync, rename, directory fsync, read back from the device and
// hash, TryNext), the bootloader's Boot, and MarkGood. Each iteration installs into the slot
// that is not running, alternating A and B.
func BenchmarkInstallCommit(b *testing.B) {
	ctx := context.Background()
	const size = 30 << 20
	img := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	sha := "sha256:" + sum(img)
	dir := b.TempDir()
	l := boot.NewFileLoader(boot.OSFS{}, dir)
	must(b, l.Init(ctx, boot.SlotA))
	in := &slots.Installer{FS: boot.OSFS{}, Loader: l, Dir: dir, File: "perch", Perm: 0o755}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		st, err := l.Status(ctx)
		must(b, err)
		must(b, in.Install(ctx, st.Booted.Other(), bytes.NewReader(img), size, sha))
		slot, err := l.Boot(ctx)
		must(b, err)
		if slot != st.Booted.Other() {
			b.Fatalf("booted %s after installing into %s", slot, st.Booted.Other())
		}
		must(b, l.MarkGood(ctx))
	}
}
