package wasm

import (
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
)

func TestCacheDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	old := filepath.Join(dir, "wazero-v0.0.1-amd64-linux")
	if err := os.MkdirAll(old, 0o700); err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	e.Close(t.Context())
	// A second engine keeps the current version's folder (or every start would compile).
	e, err = NewEngine(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	e.Close(t.Context())
	cur, _ := filepath.Glob(filepath.Join(dir, "wazero-*"))
	want := filepath.Join(dir, "wazero-"+wazeroVersion()+"-"+goruntime.GOARCH+"-"+goruntime.GOOS)
	if len(cur) != 1 || cur[0] != want {
		t.Errorf("cache folders: %v, want only %s", cur, want)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("an old wazero version's cache folder survived: %v", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := NewEngine(dir, false); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("a world-writable cache was accepted: %v", err)
	}
}
