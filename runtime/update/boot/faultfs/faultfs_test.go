package faultfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"testing"

	"github.com/perch-edge/perch/runtime/update/boot/faultfs"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, f *faultfs.FS, name string) ([]byte, bool) {
	t.Helper()
	r, err := f.Open(name)
	if err != nil {
		return nil, false
	}
	b, err := io.ReadAll(r)
	must(t, err)
	return b, true
}

// TestModel checks the power-cut model: what was synced survives, what was not may be
// lost or torn, and each outcome the model allows does happen for some seed.
func TestModel(t *testing.T) {
	seen := map[string]bool{}
	for seed := range 200 {
		f := faultfs.New()
		must(t, f.Mkdir("/d", 0o755))
		must(t, f.SyncDir("/"))
		w, err := f.Create("/d/synced", 0o644)
		must(t, err)
		_, err = w.Write([]byte("durable"))
		must(t, err)
		must(t, w.Sync())
		must(t, w.Close())
		must(t, f.SyncDir("/d"))

		w, err = f.Create("/d/loose", 0o644) // name never synced
		must(t, err)
		_, err = w.Write([]byte("x"))
		must(t, err)
		must(t, w.Close())

		w, err = f.Create("/d/synced", 0o644) // truncate + rewrite, not synced
		must(t, err)
		_, err = w.Write([]byte("0123456789"))
		must(t, err)
		f.CutAfter(1)
		if _, err := w.Write([]byte("abcdef")); !errors.Is(err, faultfs.ErrPowerCut) {
			t.Fatalf("write at the cut: %v", err)
		}
		if err := f.Remove("/d/loose"); !errors.Is(err, faultfs.ErrPowerCut) {
			t.Fatalf("after the cut: %v", err)
		}
		f.Reboot(rand.New(rand.NewPCG(uint64(seed), 1)))

		got, ok := read(t, f, "/d/synced")
		if !ok {
			t.Fatal("a synced file with a synced name vanished")
		}
		switch {
		case bytes.Equal(got, []byte("durable")):
			seen["old"] = true
		case len(got) == 0:
			seen["truncated"] = true
		case bytes.HasPrefix([]byte("0123456789abcdef"), got) && len(got) < 10:
			seen["torn first write"] = true
		case bytes.Equal(got, []byte("0123456789")):
			seen["first write"] = true
		case bytes.HasPrefix([]byte("0123456789abcdef"), got):
			seen["torn cut write"] = true
		default:
			t.Fatalf("seed %d: impossible content %q", seed, got)
		}
		if _, ok := read(t, f, "/d/loose"); ok {
			seen["unsynced name kept"] = true
		} else {
			seen["unsynced name lost"] = true
		}
	}
	for _, want := range []string{"old", "truncated", "torn first write", "first write", "torn cut write", "unsynced name kept", "unsynced name lost"} {
		if !seen[want] {
			t.Errorf("200 seeds never produced %q (saw %v)", want, seen)
		}
	}
}

func TestRenameDurableAfterSyncDir(t *testing.T) {
	f := faultfs.New()
	w, err := f.Create("/a.tmp", 0o644)
	must(t, err)
	_, err = w.Write([]byte("new"))
	must(t, err)
	must(t, w.Sync())
	must(t, w.Close())
	must(t, f.Rename("/a.tmp", "/a"))
	must(t, f.SyncDir("/"))
	for seed := range 20 {
		f.Reboot(rand.New(rand.NewPCG(uint64(seed), 2)))
		if got, ok := read(t, f, "/a"); !ok || string(got) != "new" {
			t.Fatalf("seed %d: /a = %q, %v", seed, got, ok)
		}
		if _, ok := read(t, f, "/a.tmp"); ok {
			t.Fatalf("seed %d: the renamed-away name came back", seed)
		}
	}
	if n, err := f.ReadDir("/"); err != nil || len(n) != 1 || n[0] != "a" {
		t.Fatalf("ReadDir = %v, %v", n, err)
	}
}

// TestAppend: Append writes after what is there; what it wrote is durable only after Sync
// (until then a power cut keeps a prefix, possibly torn), and the name it created only after
// SyncDir.
func TestAppend(t *testing.T) {
	seen := map[string]bool{}
	for seed := range 100 {
		f := faultfs.New()
		w, err := f.Create("/a", 0o644)
		must(t, err)
		_, err = w.Write([]byte("abc"))
		must(t, err)
		must(t, w.Sync())
		must(t, w.Close())
		must(t, f.SyncDir("/"))

		w, err = f.Append("/a", 0o644)
		must(t, err)
		for _, s := range []string{"de", "fg"} {
			_, err = w.Write([]byte(s))
			must(t, err)
		}
		must(t, w.Close())
		if got, _ := read(t, f, "/a"); string(got) != "abcdefg" {
			t.Fatalf("after Append: %q", got)
		}
		n, err := f.Append("/new", 0o644) // a name never synced
		must(t, err)
		_, err = n.Write([]byte("x"))
		must(t, err)
		must(t, n.Sync())
		must(t, n.Close())

		f.Reboot(rand.New(rand.NewPCG(uint64(seed), 3)))
		got, ok := read(t, f, "/a")
		if !ok || !bytes.HasPrefix([]byte("abcdefg"), got) || len(got) < 3 {
			t.Fatalf("seed %d: /a = %q, %v: not a prefix that keeps the synced bytes", seed, got, ok)
		}
		seen[string(got)] = true
		_, ok = read(t, f, "/new")
		seen[fmt.Sprint("new kept ", ok)] = true
	}
	for _, want := range []string{"abc", "abcd", "abcde", "abcdefg", "new kept true", "new kept false"} {
		if !seen[want] {
			t.Errorf("100 seeds never produced %q (saw %v)", want, seen)
		}
	}

	// After Sync an appended file survives whole.
	f := faultfs.New()
	w, err := f.Append("/b", 0o644)
	must(t, err)
	_, err = w.Write([]byte("12"))
	must(t, err)
	must(t, w.Close())
	w, err = f.Append("/b", 0o644)
	must(t, err)
	_, err = w.Write([]byte("34"))
	must(t, err)
	must(t, w.Sync())
	must(t, w.Close())
	must(t, f.SyncDir("/"))
	f.Reboot(rand.New(rand.NewPCG(7, 7)))
	if got, _ := read(t, f, "/b"); string(got) != "1234" {
		t.Fatalf("synced append: %q", got)
	}
	if _, err := f.Append("/", 0o644); err == nil {
		t.Error("Append on a directory succeeded")
	}
	if _, err := f.Append("/missing/x", 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Append in a missing folder: %v", err)
	}
}
