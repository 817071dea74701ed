package trust

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeFileSync writes data to dir/name so that after a power cut the file holds either its old
// or its new content: it writes a temporary file in dir, fsyncs it, renames it over name and
// fsyncs dir.
func writeFileSync(dir, name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("trust: write %s: %w", filepath.Join(dir, name), err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("trust: write %s: %w", filepath.Join(dir, name), err)
	}
	return syncDir(dir)
}

// syncDir fsyncs the directory dir, making renames and new files in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("trust: sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("trust: sync %s: %w", dir, err)
	}
	return nil
}

// syncFile fsyncs the file at path.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("trust: sync %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("trust: sync %s: %w", path, err)
	}
	return nil
}
