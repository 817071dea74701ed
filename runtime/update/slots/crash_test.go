package slots_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/update/boot/faultfs"
	"github.com/perch-edge/perch/runtime/update/slots"
)

const slotDir = "/data/slots"

// box is one simulated device: a faultfs disk, the file loader and the installer.
type box struct {
	fs         *faultfs.FS
	loader     *boot.FileLoader
	in         *slots.Installer
	old, older []byte // the committed image (slot A) and the stale one (slot B)
}

// newBox builds a box whose slot A holds old (committed, booted) and slot B holds older,
// everything durable. file selects the layout (see Installer.File).
func newBox(t testing.TB, file string, old, older []byte) *box {
	t.Helper()
	ctx := context.Background()
	fsys := faultfs.New()
	b := &box{fs: fsys, loader: boot.NewFileLoader(fsys, slotDir), old: old, older: older}
	b.in = &slots.Installer{FS: fsys, Loader: b.loader, Dir: slotDir, File: file, Perm: 0o755}
	must(t, boot.MkdirAll(fsys, slotDir, 0o755))
	must(t, b.loader.Init(ctx, boot.SlotA))
	for slot, img := range map[boot.Slot][]byte{boot.SlotA: old, boot.SlotB: older} {
		if img == nil {
			continue // a fresh box: the slot does not exist yet
		}
		name := b.in.Path(slot)
		must(t, boot.MkdirAll(fsys, path.Dir(name), 0o755))
		f, err := fsys.Create(name, 0o755)
		must(t, err)
		_, err = f.Write(img)
		must(t, err)
		must(t, f.Sync())
		must(t, f.Close())
		must(t, fsys.SyncDir(path.Dir(name)))
	}
	got, err := b.loader.Boot(ctx)
	must(t, err)
	if got != boot.SlotA {
		t.Fatalf("fresh box booted %s, want A", got)
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// chunked returns a reader that yields at most n bytes per Read, so that the installer makes
// many writes (many cut points).
func chunked(b []byte, n int) io.Reader { return &chunkReader{r: bytes.NewReader(b), n: n} }

type chunkReader struct {
	r *bytes.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// content reads slot's image as the box holds it now.
func (b *box) content(slot boot.Slot) ([]byte, error) {
	r, err := b.fs.Open(b.in.Path(slot))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// update is the whole flow the agent runs for a new image: install into the idle slot, the
// reboot (the loader's Boot at power-on) and the commit after a good health check.
func (b *box) update(ctx context.Context, img []byte) error {
	st, err := b.loader.Status(ctx)
	if err != nil {
		return err
	}
	if err := b.in.Install(ctx, st.Booted.Other(), chunked(img, 4096), int64(len(img)), "sha256:"+sum(img)); err != nil {
		return err
	}
	if _, err := b.loader.Boot(ctx); err != nil {
		return err
	}
	return b.loader.MarkGood(ctx)
}

// agent is what perch does at every start: clean up, judge a running trial (healthy when it
// runs the image it was updated to), then carry the update through if it is not done.
func (b *box) agent(ctx context.Context, img []byte) error {
	if err := b.in.Recover(ctx); err != nil {
		return err
	}
	st, err := b.loader.Status(ctx)
	if err != nil {
		return err
	}
	running, err := b.content(st.Booted)
	if err != nil {
		return err
	}
	if bytes.Equal(running, img) {
		return b.loader.MarkGood(ctx) // a no-op when committed
	}
	if st.Trial() {
		return fmt.Errorf("trial slot %s runs an image that is not the update", st.Booted)
	}
	return b.update(ctx, img)
}

// powerOn reboots the disk after a cut, runs the loader's Boot and checks the invariant:
// the booted slot holds exactly the old or exactly the new image.
func (b *box) powerOn(t *testing.T, ctx context.Context, rng *rand.Rand, img []byte, where string) boot.Slot {
	t.Helper()
	b.fs.Reboot(rng)
	slot, err := b.loader.Boot(ctx)
	if err != nil {
		t.Fatalf("%s: nothing boots: %v", where, err)
	}
	got, err := b.content(slot)
	if err != nil {
		t.Fatalf("%s: booted slot %s has no image: %v", where, slot, err)
	}
	switch {
	case bytes.Equal(got, b.old), bytes.Equal(got, img):
	case b.older != nil && bytes.Equal(got, b.older):
		t.Fatalf("%s: booted slot %s runs the stale image from before the old one", where, slot)
	default:
		t.Fatalf("%s: booted slot %s holds a mix: %d bytes, sha256 %s", where, slot, len(got), sum(got))
	}
	return slot
}

func TestCrashEveryOperation(t *testing.T) {
	for _, layout := range []struct {
		name, file string
		fresh      bool
	}{{"firmware-file", "", false}, {"perch-folder", "perch", false}, {"perch-folder-fresh", "perch", true}} {
		t.Run(layout.name, func(t *testing.T) {
			crashSweep(t, layout.file, layout.fresh)
		})
	}
}

// crashSweep cuts the power at every operation of an update. fresh: slot B does not exist
// yet (first update of a new box: its folder is created by the install).
func crashSweep(t *testing.T, file string, fresh bool) {
	ctx := context.Background()
	seedRng := rand.New(rand.NewPCG(1, 2))
	img := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(seedRng.Uint32())
		}
		return b
	}
	old, older, newImg := img(40000), img(39000), img(45001)
	if fresh {
		older = nil
	}

	// Count the operations of a full install + swap + commit.
	b := newBox(t, file, old, older)
	start := b.fs.Ops()
	must(t, b.update(ctx, newImg))
	total := b.fs.Ops() - start
	if total < 20 {
		t.Fatalf("a full update made only %d operations", total)
	}
	t.Logf("a full update makes %d file-system operations", total)

	rounds := 40
	if testing.Short() {
		rounds = 3
	}
	outcomes := map[string]int{}
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 99))
		for n := 1; n <= total; n++ {
			where := fmt.Sprintf("round %d, cut at op %d/%d", round, n, total)
			b := newBox(t, file, old, older)
			b.fs.CutAfter(n)
			if err := b.update(ctx, newImg); !errors.Is(err, faultfs.ErrPowerCut) {
				t.Fatalf("%s: update returned %v, want the power cut", where, err)
			}
			slot := b.powerOn(t, ctx, rng, newImg, where)
			if c, _ := b.content(slot); bytes.Equal(c, newImg) {
				outcomes["new"]++
			} else {
				outcomes["old"]++
			}
			// The agent starts and carries the update through, with more power cuts.
			for cuts := 0; ; cuts++ {
				if cuts < 3 && rng.IntN(2) == 0 {
					b.fs.CutAfter(1 + rng.IntN(total))
				}
				err := b.agent(ctx, newImg)
				if err == nil && !b.fs.Dead() {
					break
				}
				if !errors.Is(err, faultfs.ErrPowerCut) {
					t.Fatalf("%s, agent after %d more cuts: %v", where, cuts, err)
				}
				b.powerOn(t, ctx, rng, newImg, fmt.Sprintf("%s, cut %d in the agent", where, cuts+1))
			}
			b.fs.CutAfter(0)
			// Converged: the new image is committed, survives a power cycle, no leftovers.
			slot = b.powerOn(t, ctx, rng, newImg, where+", after the update")
			st, err := b.loader.Status(ctx)
			must(t, err)
			if c, _ := b.content(slot); !bytes.Equal(c, newImg) || st.Trial() || st.Trying != boot.NoSlot {
				t.Fatalf("%s: after the update: booted %s (new image: %v), status %+v", where, slot, bytes.Equal(c, newImg), st)
			}
			for _, s := range []boot.Slot{boot.SlotA, boot.SlotB} {
				if _, err := b.fs.Stat(b.in.Path(s) + slots.PartialSuffix); err == nil {
					t.Fatalf("%s: %s left behind", where, b.in.Path(s)+slots.PartialSuffix)
				}
			}
		}
	}
	t.Logf("%d rounds × %d cut points: booted %v right after the first cut", rounds, total, outcomes)
	if outcomes["new"] == 0 || outcomes["old"] == 0 {
		t.Fatalf("the sweep never saw both outcomes: %v", outcomes)
	}
}

// TestCrashSweepCatchesUnsafeInstall checks that the sweep can fail: an installer that
// writes the slot in place and calls TryNext without fsyncing first must be caught.
func TestCrashSweepCatchesUnsafeInstall(t *testing.T) {
	ctx := context.Background()
	old, older, newImg := bytes.Repeat([]byte("o"), 20000), bytes.Repeat([]byte("s"), 20000), bytes.Repeat([]byte("n"), 20000)
	unsafe := func(b *box) error {
		f, err := b.fs.Create(b.in.Path(boot.SlotB), 0o755)
		if err != nil {
			return err
		}
		for off := 0; off < len(newImg); off += 4096 {
			if _, err := f.Write(newImg[off:min(off+4096, len(newImg))]); err != nil {
				return err
			}
		}
		f.Close()
		return b.loader.TryNext(ctx, boot.SlotB, 3)
	}
	b := newBox(t, "", old, older)
	start := b.fs.Ops()
	must(t, unsafe(b))
	total := b.fs.Ops() - start
	caught := 0
	for round := range 5 {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		for n := 1; n <= total+1; n++ {
			b := newBox(t, "", old, older)
			b.fs.CutAfter(n)
			_ = unsafe(b)
			b.fs.Reboot(rng) // cut now if the flow finished
			slot, err := b.loader.Boot(ctx)
			must(t, err)
			c, err := b.content(slot)
			if err != nil || !(bytes.Equal(c, old) || bytes.Equal(c, newImg)) {
				caught++
			}
		}
	}
	if caught == 0 {
		t.Fatal("the crash model never caught an install that skips fsync")
	}
	t.Logf("unsafe install caught in %d scenarios", caught)
}

// TestInstallRejects covers bad input and wrong states, each with a clear error.
func TestInstallRejects(t *testing.T) {
	ctx := context.Background()
	img := []byte("new image")
	good := "sha256:" + sum(img)
	for _, tc := range []struct {
		name  string
		slot  boot.Slot
		data  []byte
		size  int64
		sha   string
		trial bool
		want  string
		is    error
	}{
		{name: "running slot", slot: boot.SlotA, data: img, size: int64(len(img)), sha: good, want: "slot A is the running slot"},
		{name: "bad slot", slot: "C", data: img, size: int64(len(img)), sha: good, want: `bad slot "C"`},
		{name: "bad sha", slot: boot.SlotB, data: img, size: int64(len(img)), sha: "sha256:xyz", want: "bad sha256"},
		{name: "short", slot: boot.SlotB, data: img[:4], size: int64(len(img)), sha: good, want: "image is 4 bytes, want 9"},
		{name: "long", slot: boot.SlotB, data: append(img, 'x'), size: int64(len(img)), sha: good, want: "longer than its size 9"},
		{name: "hash", slot: boot.SlotB, data: []byte("NEW IMAGE"), size: 9, sha: good, is: slots.ErrHashMismatch},
		{name: "trial running", slot: boot.SlotA, data: img, size: int64(len(img)), sha: good, trial: true, is: boot.ErrTrialRunning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBox(t, "", []byte("old"), []byte("older"))
			if tc.trial {
				must(t, b.loader.TryNext(ctx, boot.SlotB, 1))
				_, err := b.loader.Boot(ctx)
				must(t, err)
			}
			err := b.in.Install(ctx, tc.slot, bytes.NewReader(tc.data), tc.size, tc.sha)
			if err == nil || (tc.want != "" && !strings.Contains(err.Error(), tc.want)) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("Install: %v, want %q / %v", err, tc.want, tc.is)
			}
			st, serr := b.loader.Status(ctx)
			must(t, serr)
			if !tc.trial && st.Trying != boot.NoSlot {
				t.Fatalf("a failed install left a trial pending: %+v", st)
			}
			if _, err := b.fs.Stat(b.in.Path(boot.SlotB) + slots.PartialSuffix); err == nil {
				t.Fatal("a failed install left its .partial file")
			}
		})
	}
}

// TestInstallCancelsPendingTrial: re-installing while a trial is pending (not yet booted)
// first cancels it, so that the half-written slot is never the one tried.
func TestInstallCancelsPendingTrial(t *testing.T) {
	ctx := context.Background()
	b := newBox(t, "perch", []byte("old"), []byte("older"))
	first, second := []byte("first"), []byte("second!")
	must(t, b.in.Install(ctx, boot.SlotB, bytes.NewReader(first), 5, sum(first)))
	st, err := b.loader.Status(ctx)
	must(t, err)
	if st.Trying != boot.SlotB || st.TriesLeft != slots.DefaultTries {
		t.Fatalf("after Install: %+v, want B tried %d times", st, slots.DefaultTries)
	}
	// Fail the second install half-way: the trial of the first must be gone.
	err = b.in.Install(ctx, boot.SlotB, io.MultiReader(bytes.NewReader(second[:3]), iotestErr{}), 7, sum(second))
	if err == nil {
		t.Fatal("install with a failing reader succeeded")
	}
	st, err = b.loader.Status(ctx)
	must(t, err)
	if st.Trying != boot.NoSlot {
		t.Fatalf("after a failed re-install the old trial is still pending: %+v", st)
	}
	slot, err := b.loader.Boot(ctx)
	must(t, err)
	if slot != boot.SlotA {
		t.Fatalf("booted %s, want the committed A", slot)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("connection reset") }
