package boot

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// FS is the file-system seam of the loaders and of the slot installer: every operation that
// changes what is on disk goes through it, so that a test implementation (package faultfs)
// can cut the power between any two of them. Names are slash-separated paths.
//
// Only the operations the update code needs are here. Durability follows POSIX: data written
// to a [File] is durable after its Sync; a name created, renamed or removed in a directory is
// durable after SyncDir of that directory.
type FS interface {
	// Create opens name for writing, creating it with perm if it is missing and truncating
	// it if it exists (O_WRONLY|O_CREATE|O_TRUNC).
	Create(name string, perm fs.FileMode) (File, error)
	// Append opens name for writing at its end, creating it with perm if it is missing
	// (O_WRONLY|O_CREATE|O_APPEND). It is how a download resumes where the bytes on disk end.
	Append(name string, perm fs.FileMode) (File, error)
	// Open opens name for reading.
	Open(name string) (io.ReadCloser, error)
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Mkdir creates a directory; its parent must exist.
	Mkdir(name string, perm fs.FileMode) error
	// SyncDir makes the names in directory dir durable (fsync of the directory).
	SyncDir(dir string) error
	// ReadDir lists the names in directory dir, sorted.
	ReadDir(dir string) ([]string, error)
	// Stat reports whether name exists and whether it is a directory; a missing name is an
	// error that satisfies errors.Is(err, fs.ErrNotExist).
	Stat(name string) (isDir bool, err error)
}

// File is a file open for writing through an [FS]. It is used by one goroutine at a time.
type File interface {
	io.Writer
	// Sync makes the data written so far durable (fsync).
	Sync() error
	Close() error
}

// OSFS is the [FS] of the operating system. The zero value is ready to use and safe for
// concurrent use.
//
// Open drops the file's clean pages from the page cache first (posix_fadvise DONTNEED on
// Linux), so that reading a file back after its Sync reads what the device holds, not what
// the kernel still has in memory.
type OSFS struct{}

// Create implements [FS].
func (OSFS) Create(name string, perm fs.FileMode) (File, error) {
	return os.OpenFile(filepath.FromSlash(name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
}

// Append implements [FS].
func (OSFS) Append(name string, perm fs.FileMode) (File, error) {
	return os.OpenFile(filepath.FromSlash(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, perm)
}

// Open implements [FS].
func (OSFS) Open(name string) (io.ReadCloser, error) {
	f, err := os.Open(filepath.FromSlash(name))
	if err != nil {
		return nil, err
	}
	dropCache(f)
	return f, nil
}

// Rename implements [FS].
func (OSFS) Rename(oldname, newname string) error {
	return os.Rename(filepath.FromSlash(oldname), filepath.FromSlash(newname))
}

// Remove implements [FS].
func (OSFS) Remove(name string) error { return os.Remove(filepath.FromSlash(name)) }

// Mkdir implements [FS].
func (OSFS) Mkdir(name string, perm fs.FileMode) error {
	return os.Mkdir(filepath.FromSlash(name), perm)
}

// SyncDir implements [FS].
func (OSFS) SyncDir(dir string) error {
	d, err := os.Open(filepath.FromSlash(dir))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadDir implements [FS].
func (OSFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.FromSlash(dir))
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, err
}

// Stat implements [FS].
func (OSFS) Stat(name string) (bool, error) {
	fi, err := os.Stat(filepath.FromSlash(name))
	if err != nil {
		return false, err
	}
	return fi.IsDir(), nil
}

// MkdirAll creates dir and any missing parents through fsys, syncing each parent in which it
// created a name so that the new directories survive a power cut.
func MkdirAll(fsys FS, dir string, perm fs.FileMode) error {
	dir = filepath.ToSlash(filepath.Clean(dir))
	isDir, err := fsys.Stat(dir)
	if err == nil {
		if !isDir {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: errors.New("exists and is not a directory")}
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.ToSlash(filepath.Dir(dir))
	if parent != dir {
		if err := MkdirAll(fsys, parent, perm); err != nil {
			return err
		}
	}
	if err := fsys.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return fsys.SyncDir(parent)
}

var _ FS = OSFS{}
