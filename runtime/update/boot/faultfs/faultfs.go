// Package faultfs is an in-memory [boot.FS] that can lose power. It keeps, for every file,
// what reads see (the page cache) apart from what is durable (as of the file's last Sync),
// and for the directory tree, the names as they are apart from the names that are durable
// (as of the last SyncDir). A power cut at the Nth operation stops everything; [FS.Reboot]
// then builds what the disk holds afterwards:
//
//   - each file keeps its durable content plus a random prefix of the writes made since its
//     last Sync, the last of which may be torn (only a prefix of its bytes lands);
//   - the tree keeps its durable names plus a random prefix of the creates, renames and
//     removes made since (a journal commits metadata in order, and may commit more than was
//     asked for).
//
// That is a pessimistic model of ext4 with data=ordered: nothing that was not fsynced is
// relied upon, and no operation is half-done except a write. Reads do not count as
// operations; Create, Append, Write, Sync, Rename, Remove, Mkdir and SyncDir do.
//
// An FS is safe for concurrent use by multiple goroutines.
package faultfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/perch-edge/perch/runtime/update/boot"
)

// ErrPowerCut is returned by the operation at which the power was cut and by every
// operation after it until [FS.Reboot].
var ErrPowerCut = errors.New("faultfs: power cut")

type node struct {
	dir     bool
	data    []byte   // what reads see
	durable []byte   // content as of the last Sync
	log     []dataOp // writes and truncates since the last Sync, in order
}

type dataOp struct {
	trunc bool
	off   int
	b     []byte
}

type nsKind int

const (
	nsLink nsKind = iota
	nsRename
	nsRemove
)

type nsOp struct {
	kind        nsKind
	name, name2 string
	n           *node
}

// FS is the in-memory file system. Create it with [New].
type FS struct {
	mu      sync.Mutex
	names   map[string]*node // the tree as reads see it
	durable map[string]*node // the tree as of the last SyncDir
	pending []nsOp           // name operations not yet durable, in order
	ops     int              // mutating operations done (or attempted, for the cut one)
	cutAt   int              // cut the power at this operation number; 0: never
	dead    bool
}

// New returns an empty FS holding only the root directory "/".
func New() *FS {
	root := &node{dir: true}
	return &FS{names: map[string]*node{"/": root}, durable: map[string]*node{"/": root}}
}

// Ops returns how many mutating operations have been made so far.
func (f *FS) Ops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ops
}

// CutAfter arranges for the power to be cut at the n-th mutating operation from now
// (n >= 1): that operation does not happen (a write may land torn) and returns ErrPowerCut,
// as does everything after it until Reboot. n <= 0 cancels a pending cut.
func (f *FS) CutAfter(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n <= 0 {
		f.cutAt = 0
		return
	}
	f.cutAt = f.ops + n
}

// Dead reports whether the power has been cut and the FS not rebooted yet.
func (f *FS) Dead() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dead
}

// Reboot ends a power cut (or, without one, simulates one now): it replaces the state with
// what the disk holds afterwards, choosing with rng how much of what was not synced landed.
// After Reboot everything is durable and no cut is pending.
func (f *FS) Reboot(rng *rand.Rand) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := rng.IntN(len(f.pending) + 1)
	for _, op := range f.pending[:k] {
		apply(f.durable, op)
	}
	f.pending = nil
	names := make(map[string]*node, len(f.durable))
	for name, n := range f.durable {
		if !n.dir {
			n.data = landed(n, rng)
			n.durable = bytes.Clone(n.data)
			n.log = nil
		}
		names[name] = n
	}
	f.names = names
	f.dead = false
	f.cutAt = 0
}

// landed is the content of n after a power cut: its durable content plus a random prefix of
// its unsynced operations, the last write possibly torn.
func landed(n *node, rng *rand.Rand) []byte {
	data := bytes.Clone(n.durable)
	j := rng.IntN(len(n.log) + 1)
	for i, op := range n.log[:j] {
		if op.trunc {
			data = data[:0]
			continue
		}
		b := op.b
		if i == j-1 {
			b = b[:rng.IntN(len(b)+1)]
		}
		data = writeAt(data, op.off, b)
	}
	return data
}

func writeAt(data []byte, off int, b []byte) []byte {
	if end := off + len(b); end > len(data) {
		data = append(data, make([]byte, end-len(data))...)
	}
	copy(data[off:], b)
	return data
}

func apply(m map[string]*node, op nsOp) {
	switch op.kind {
	case nsLink:
		m[op.name] = op.n
	case nsRename:
		m[op.name2] = op.n
		delete(m, op.name)
	case nsRemove:
		delete(m, op.name)
	}
}

// step counts a mutating operation and reports whether it may proceed. Called with f.mu held.
func (f *FS) step() error {
	if f.dead {
		return ErrPowerCut
	}
	f.ops++
	if f.cutAt != 0 && f.ops >= f.cutAt {
		f.dead = true
		return ErrPowerCut
	}
	return nil
}

func clean(name string) string { return path.Clean("/" + name) }

// parentDir checks that name's parent exists and is a directory. Called with f.mu held.
func (f *FS) parentDir(op, name string) error {
	p, ok := f.names[path.Dir(name)]
	if !ok {
		return &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	if !p.dir {
		return &fs.PathError{Op: op, Path: name, Err: errors.New("parent is not a directory")}
	}
	return nil
}

// Create implements [boot.FS].
func (f *FS) Create(name string, perm fs.FileMode) (boot.File, error) {
	name = clean(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(); err != nil {
		return nil, err
	}
	if err := f.parentDir("create", name); err != nil {
		return nil, err
	}
	n, ok := f.names[name]
	switch {
	case ok && n.dir:
		return nil, &fs.PathError{Op: "create", Path: name, Err: errors.New("is a directory")}
	case ok:
		n.data = n.data[:0]
		n.log = append(n.log, dataOp{trunc: true})
	default:
		n = &node{}
		f.names[name] = n
		f.pending = append(f.pending, nsOp{kind: nsLink, name: name, n: n})
	}
	return &file{fs: f, n: n, name: name}, nil
}

// Append implements [boot.FS]: writes go after the file's current content (as reads see it).
func (f *FS) Append(name string, perm fs.FileMode) (boot.File, error) {
	name = clean(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(); err != nil {
		return nil, err
	}
	if err := f.parentDir("append", name); err != nil {
		return nil, err
	}
	n, ok := f.names[name]
	switch {
	case ok && n.dir:
		return nil, &fs.PathError{Op: "append", Path: name, Err: errors.New("is a directory")}
	case !ok:
		n = &node{}
		f.names[name] = n
		f.pending = append(f.pending, nsOp{kind: nsLink, name: name, n: n})
	}
	return &file{fs: f, n: n, name: name, off: len(n.data)}, nil
}

type file struct {
	fs     *FS
	n      *node
	name   string
	off    int
	closed bool
}

func (w *file) Write(b []byte) (int, error) {
	f := w.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.closed {
		return 0, &fs.PathError{Op: "write", Path: w.name, Err: fs.ErrClosed}
	}
	if err := f.step(); err != nil {
		if f.ops == f.cutAt {
			// The write that the power cut interrupted may land torn.
			w.n.log = append(w.n.log, dataOp{off: w.off, b: bytes.Clone(b)})
		}
		return 0, err
	}
	w.n.data = writeAt(w.n.data, w.off, b)
	w.n.log = append(w.n.log, dataOp{off: w.off, b: bytes.Clone(b)})
	w.off += len(b)
	return len(b), nil
}

func (w *file) Sync() error {
	f := w.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.closed {
		return &fs.PathError{Op: "sync", Path: w.name, Err: fs.ErrClosed}
	}
	if err := f.step(); err != nil {
		return err
	}
	w.n.durable = bytes.Clone(w.n.data)
	w.n.log = nil
	return nil
}

func (w *file) Close() error {
	w.fs.mu.Lock()
	defer w.fs.mu.Unlock()
	if w.closed {
		return &fs.PathError{Op: "close", Path: w.name, Err: fs.ErrClosed}
	}
	w.closed = true
	return nil
}

// Open implements [boot.FS]. The reader holds a copy of the content at the time of Open.
func (f *FS) Open(name string) (io.ReadCloser, error) {
	name = clean(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return nil, ErrPowerCut
	}
	n, ok := f.names[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(n.data))), nil
}

// Rename implements [boot.FS]. Directories cannot be renamed.
func (f *FS) Rename(oldname, newname string) error {
	oldname, newname = clean(oldname), clean(newname)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(); err != nil {
		return err
	}
	n, ok := f.names[oldname]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	if n.dir {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: errors.New("faultfs cannot rename directories")}
	}
	if err := f.parentDir("rename", newname); err != nil {
		return err
	}
	if t, ok := f.names[newname]; ok && t.dir {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: errors.New("target is a directory")}
	}
	if oldname == newname {
		return nil
	}
	f.names[newname] = n
	delete(f.names, oldname)
	f.pending = append(f.pending, nsOp{kind: nsRename, name: oldname, name2: newname, n: n})
	return nil
}

// Remove implements [boot.FS].
func (f *FS) Remove(name string) error {
	name = clean(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(); err != nil {
		return err
	}
	n, ok := f.names[name]
	if !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir && len(f.list(name)) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: errors.New("directory not empty")}
	}
	delete(f.names, name)
	f.pending = append(f.pending, nsOp{kind: nsRemove, name: name})
	return nil
}

// Mkdir implements [boot.FS].
func (f *FS) Mkdir(name string, perm fs.FileMode) error {
	name = clean(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(); err != nil {
		return err
	}
	if err := f.parentDir("mkdir", name); err != nil {
		return err
	}
	if _, ok := f.names[name]; ok {
		return &fs.PathError{Op: "mkdir", Path: name, Err: fs.ErrExist}
	}
	n := &node{dir: true}
	f.names[name] = n
	f.pending = append(f.pending, nsOp{kind: nsLink, name: name, n: n})
	return nil
}

// SyncDir implements [boot.FS]: it makes durable every pending name operation up to the
// last one that touches dir (journal order).
func (f *FS) SyncDir(dir string) error {
	dir = clean(dir)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(); err != nil {
		return err
	}
	if n, ok := f.names[dir]; !ok || !n.dir {
		return &fs.PathError{Op: "syncdir", Path: dir, Err: fs.ErrNotExist}
	}
	last := -1
	for i, op := range f.pending {
		if path.Dir(op.name) == dir || (op.kind == nsRename && path.Dir(op.name2) == dir) {
			last = i
		}
	}
	for _, op := range f.pending[:last+1] {
		apply(f.durable, op)
	}
	f.pending = f.pending[last+1:]
	return nil
}

// list returns the names directly inside dir. Called with f.mu held.
func (f *FS) list(dir string) []string {
	var names []string
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for name := range f.names {
		if name != "/" && strings.HasPrefix(name, prefix) && !strings.Contains(name[len(prefix):], "/") {
			names = append(names, name[len(prefix):])
		}
	}
	sort.Strings(names)
	return names
}

// ReadDir implements [boot.FS].
func (f *FS) ReadDir(dir string) ([]string, error) {
	dir = clean(dir)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return nil, ErrPowerCut
	}
	if n, ok := f.names[dir]; !ok || !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
	}
	return f.list(dir), nil
}

// Stat implements [boot.FS].
func (f *FS) Stat(name string) (bool, error) {
	name = clean(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return false, ErrPowerCut
	}
	n, ok := f.names[name]
	if !ok {
		return false, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return n.dir, nil
}

var _ boot.FS = (*FS)(nil)
