// Package ort runs ONNX anomaly models through the ONNX Runtime shared library
// (libonnxruntime.so.1, 1.24.x) via github.com/yalue/onnxruntime_go.
//
// # Overview
//
// ONNX Runtime is one global environment per process: [Init] loads the library and creates it
// once, and every later call returns the same result (the same error too, if loading failed). The
// library is looked for, in order, at the explicit path given to [Init] (from the config), at
// $PERCH_ORT_LIB, and at the cache path `make ort` fills,
// .cache/ort/<Version>/linux-<arch>/libonnxruntime.so.1, under the working directory, the
// executable's directory, or any of their parents; then beside the executable, then in ../lib/
// from it (a release bundle: bin/perch, lib/libonnxruntime.so.1). An explicit path or
// $PERCH_ORT_LIB that does not exist is an error; there is no fallback past it. When the library is
// missing the error wraps [ErrLibraryMissing] and names every place looked at: model nodes fail
// with it, the rest of the runtime does not need the library.
//
// A [Session] is one model: one ONNX Runtime session, tensors preallocated per batch size, calls
// serialised (concurrent Run on one session slows every call).
//
// # Usage
//
//	if err := ort.Init(cfg.ORTLib); err != nil { ... } // model nodes report err
//	s, err := ort.NewSession(onnxBytes, ort.Options{IntraOpThreads: 1})
//	defer s.Close()
//	scores, err := s.Score(rows) // one score per row
package ort

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// Version is the ONNX Runtime release `make ort` fetches (npm onnxruntime-node), whose C API
// onnxruntime_go v1.27.0 binds.
const Version = "1.24.3"

// EnvLib names the environment variable that points at libonnxruntime.so.1.
const EnvLib = "PERCH_ORT_LIB"

// LibName is the shared library's file name.
const LibName = "libonnxruntime.so.1"

// ErrLibraryMissing is wrapped by [Init]'s error when no library file was found.
var ErrLibraryMissing = errors.New("ort: ONNX Runtime library not found")

var (
	initOnce sync.Once
	initErr  error
	initPath string
	loaded   atomic.Pointer[string] // initPath, published for LoadedPath
)

// Init loads the ONNX Runtime library and creates the process-wide environment, once. explicit is
// the configured library path ("" for none). The first call decides: later calls return the first
// call's error, and an error if they name a different explicit path than the library loaded. Safe
// for concurrent use. The environment lives until the process exits.
func Init(explicit string) error {
	initOnce.Do(func() {
		path, err := FindLibrary(explicit)
		if err != nil {
			initErr = err
			return
		}
		onnxruntime.SetSharedLibraryPath(path)
		if err := onnxruntime.InitializeEnvironment(); err != nil {
			initErr = fmt.Errorf("ort: load %s: %w", path, err)
			return
		}
		initPath = path
		loaded.Store(&path)
	})
	if initErr != nil {
		return initErr
	}
	if explicit != "" && !samePath(explicit, initPath) {
		return fmt.Errorf("ort: library already loaded from %s; cannot load %s as well", initPath, explicit)
	}
	return nil
}

// LoadedPath returns the library [Init] loaded, or "" before a successful Init. It does not load
// anything. Safe for concurrent use.
func LoadedPath() string {
	if p := loaded.Load(); p != nil {
		return *p
	}
	return ""
}

// FindLibrary returns the library path [Init] would load; see the package doc for the order. The
// error wraps [ErrLibraryMissing] and lists every path tried.
func FindLibrary(explicit string) (string, error) {
	if explicit != "" {
		if isFile(explicit) {
			return explicit, nil
		}
		return "", fmt.Errorf("%w: configured path %s does not exist", ErrLibraryMissing, explicit)
	}
	if env := os.Getenv(EnvLib); env != "" {
		if isFile(env) {
			return env, nil
		}
		return "", fmt.Errorf("%w: $%s=%s does not exist", ErrLibraryMissing, EnvLib, env)
	}
	tried := candidates()
	for _, p := range tried {
		if isFile(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no config path, $%s unset, and none of [%s] exists (run `make ort`)",
		ErrLibraryMissing, EnvLib, strings.Join(tried, ", "))
}

// CachePath is the library's path relative to the repository root, as `make ort` writes it.
func CachePath() string {
	return filepath.Join(".cache", "ort", Version, "linux-"+archDir(), LibName)
}

func archDir() string {
	if runtime.GOARCH == "amd64" {
		return "x64"
	}
	return runtime.GOARCH
}

// candidates lists the default places, without duplicates: the cache path under the working
// directory, the executable's directory and their parents, then beside the executable and in
// ../lib/ from it.
func candidates() []string {
	var roots []string
	if wd, err := os.Getwd(); err == nil {
		roots = append(roots, wd)
	}
	exeDir := ""
	if exe, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		exeDir = filepath.Dir(exe)
		roots = append(roots, exeDir)
	}
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, r := range roots {
		for d := r; ; d = filepath.Dir(d) {
			add(filepath.Join(d, CachePath()))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if exeDir != "" {
		add(filepath.Join(exeDir, LibName))
		add(filepath.Join(exeDir, "..", "lib", LibName)) // a release: bin/perch, lib/
	}
	return out
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func samePath(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	if err1 != nil || err2 != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return ra == rb
}
