package boot

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestOSFSAppend: Append creates a missing file and writes after what an existing one holds.
func TestOSFSAppend(t *testing.T) {
	name := filepath.ToSlash(filepath.Join(t.TempDir(), "a.partial"))
	var fsys FS = OSFS{}
	for _, s := range []string{"abc", "def"} {
		w, err := fsys.Append(name, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(got) != "abcdef" {
		t.Fatalf("after two appends: %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.FromSlash(name)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v, %v", fi, err)
	}
	if _, err := fsys.Append(filepath.ToSlash(filepath.Join(t.TempDir(), "no", "x")), 0o600); !os.IsNotExist(err) {
		t.Fatalf("Append in a missing folder: %v", err)
	}
}
