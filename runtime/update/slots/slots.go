// Package slots installs images into A/B slots behind a [boot.Loader]: the firmware of a
// file-backed box, and the perch binary itself (self-update).
//
// # Overview
//
// A slot is a file (Dir/A, Dir/B: firmware images) or a folder holding one named file
// (Dir/A/perch, Dir/B/perch: the perch binary). [Installer.Install] writes an image into the
// slot that is not running, in an order that a power cut at any point cannot break:
//
//  1. it refuses while a trial is running (commit or roll back first), and cancels a pending
//     trial (MarkGood) before it touches the slot that trial points at;
//  2. it streams the image into "<slot file>.partial", counting bytes and hashing;
//  3. it fsyncs the file, renames it over the slot file and fsyncs the folder;
//  4. it reads the slot file back from disk and checks its SHA-256 against the expected one;
//  5. only then does it call [boot.Loader.TryNext], whose own write is power-cut safe.
//
// Until step 5 is durable the loader boots the committed slot, which Install never touches;
// after it, the slot it points at holds exactly the verified image. After a reboot,
// [Installer.Recover] removes leftover .partial files; an interrupted Install is simply run
// again.
//
// # Usage
//
//	fl := boot.NewFileLoader(boot.OSFS{}, "/var/lib/perch/slots")
//	in := &slots.Installer{FS: boot.OSFS{}, Loader: fl, Dir: "/var/lib/perch/slots", File: "perch", Perm: 0o755}
//	st, _ := fl.Status(ctx)
//	err := in.Install(ctx, st.Booted.Other(), body, size, "sha256:…")
//	// exit; systemd restarts perch-boot, which boots the new slot; after the health window:
//	err = fl.MarkGood(ctx)
//
// See the boot package for the loaders and the perch-boot wrapper. Install and Recover
// calls must not overlap (the update agent runs one at a time); Path and Verify may be
// called from any goroutine.
package slots

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/perch-edge/perch/runtime/update/boot"
)

// DefaultTries is the boot counter Install gives a new slot when [Installer].Tries is 0.
const DefaultTries = 3

// PartialSuffix is appended to a slot file's name while it is being written.
const PartialSuffix = ".partial"

// ErrHashMismatch: the image on disk does not have the expected SHA-256.
var ErrHashMismatch = errors.New("slots: hash mismatch")

// Installer writes images into slots. Set the fields before the first call and do not
// change them after.
type Installer struct {
	// FS is where the slots live (boot.OSFS{} on a box).
	FS boot.FS
	// Loader is the bootloader whose environment chooses the slot.
	Loader boot.Loader
	// Dir holds the slots.
	Dir string
	// File, if set, makes each slot a folder Dir/<slot>/ holding the image as File (the
	// perch binary); if empty, each slot is the file Dir/<slot>.
	File string
	// Perm is the image file's permission bits (0o755 for a binary); 0 means 0o644.
	Perm fs.FileMode
	// Tries is the boot counter given to TryNext; 0 means DefaultTries.
	Tries int
}

// Path returns the path of slot's image file.
func (in *Installer) Path(slot boot.Slot) string {
	if in.File == "" {
		return path.Join(in.Dir, string(slot))
	}
	return path.Join(in.Dir, string(slot), in.File)
}

// ParseSHA256 accepts a SHA-256 as 64 hex digits, optionally prefixed "sha256:" (an OCI
// digest), and returns the 32 bytes.
func ParseSHA256(s string) ([]byte, error) {
	h := strings.TrimPrefix(s, "sha256:")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("slots: bad sha256 %q: want 64 hex digits, optionally prefixed sha256:", s)
	}
	return b, nil
}

// Install writes the image read from src (size bytes, SHA-256 sha; see ParseSHA256) into
// slot, which must not be the running slot, verifies what is on disk, and asks the loader to
// boot slot next (TryNext). It returns when that is durable; the new image runs after the
// next boot. ctx is checked between chunks of the copy. See the package documentation for
// the order of operations and why a power cut cannot leave a mix.
func (in *Installer) Install(ctx context.Context, slot boot.Slot, src io.Reader, size int64, sha string) error {
	want, err := ParseSHA256(sha)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("slots: install into slot %s: negative size %d", slot, size)
	}
	if !slot.Valid() {
		return fmt.Errorf("slots: install: bad slot %q (want A or B)", slot)
	}
	st, err := in.Loader.Status(ctx)
	if err != nil {
		return fmt.Errorf("slots: install into slot %s: %w", slot, err)
	}
	if st.Trial() {
		return fmt.Errorf("slots: install into slot %s: %w: booted %s, committed %s", slot, boot.ErrTrialRunning, st.Booted, st.Fallback)
	}
	if slot == st.Booted {
		return fmt.Errorf("slots: install: slot %s is the running slot; install into %s", slot, slot.Other())
	}
	if st.Trying != boot.NoSlot {
		// A pending trial points at the slot we are about to overwrite: cancel it, durably,
		// before touching the slot.
		if err := in.Loader.MarkGood(ctx); err != nil {
			return fmt.Errorf("slots: install into slot %s: cancel pending trial of %s: %w", slot, st.Trying, err)
		}
	}
	if err := in.write(ctx, slot, src, size); err != nil {
		return err
	}
	if err := in.Verify(ctx, slot, size, want); err != nil {
		return err
	}
	tries := in.Tries
	if tries == 0 {
		tries = DefaultTries
	}
	if err := in.Loader.TryNext(ctx, slot, tries); err != nil {
		return fmt.Errorf("slots: install into slot %s: %w", slot, err)
	}
	return nil
}

// write streams src into the slot's .partial file, syncs it, and renames it over the slot
// file, syncing the folder.
func (in *Installer) write(ctx context.Context, slot boot.Slot, src io.Reader, size int64) (err error) {
	target := in.Path(slot)
	dir := path.Dir(target)
	if err := boot.MkdirAll(in.FS, dir, 0o755); err != nil {
		return fmt.Errorf("slots: install into slot %s: %w", slot, err)
	}
	tmp := target + PartialSuffix
	perm := in.Perm
	if perm == 0 {
		perm = 0o644
	}
	f, err := in.FS.Create(tmp, perm)
	if err != nil {
		return fmt.Errorf("slots: install into slot %s: %w", slot, err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			_ = in.FS.Remove(tmp) // best effort; Recover removes it otherwise
		}
	}()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("slots: install into slot %s: %w", slot, err)
		}
		m, rerr := src.Read(buf)
		if m > 0 {
			if n+int64(m) > size {
				return fmt.Errorf("slots: install into slot %s: image longer than its size %d bytes", slot, size)
			}
			if _, err := f.Write(buf[:m]); err != nil {
				return fmt.Errorf("slots: install into slot %s: write %s: %w", slot, tmp, err)
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("slots: install into slot %s: read image: %w", slot, rerr)
		}
	}
	if n != size {
		return fmt.Errorf("slots: install into slot %s: image is %d bytes, want %d", slot, n, size)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("slots: install into slot %s: sync %s: %w", slot, tmp, err)
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return fmt.Errorf("slots: install into slot %s: close %s: %w", slot, tmp, cerr)
	}
	if err := in.FS.Rename(tmp, target); err != nil {
		return fmt.Errorf("slots: install into slot %s: %w", slot, err)
	}
	if err := in.FS.SyncDir(dir); err != nil {
		return fmt.Errorf("slots: install into slot %s: sync %s: %w", slot, dir, err)
	}
	return nil
}

// Verify reads slot's image file back from disk and checks its length (size bytes) and
// SHA-256 (want, 32 bytes). A mismatch is ErrHashMismatch, wrapped with both hashes.
func (in *Installer) Verify(ctx context.Context, slot boot.Slot, size int64, want []byte) error {
	name := in.Path(slot)
	got, n, err := hashFile(ctx, in.FS, name)
	if err != nil {
		return fmt.Errorf("slots: verify slot %s: %w", slot, err)
	}
	if n != size || string(got) != string(want) {
		return fmt.Errorf("%w: slot %s (%s) holds %d bytes with sha256 %x, want %d bytes with sha256 %x",
			ErrHashMismatch, slot, name, n, got, size, want)
	}
	return nil
}

// hashFile returns the SHA-256 and length of name as read through fsys.
func hashFile(ctx context.Context, fsys boot.FS, name string) ([]byte, int64, error) {
	r, err := fsys.Open(name)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, r})
	if err != nil {
		return nil, n, fmt.Errorf("read %s: %w", name, err)
	}
	return h.Sum(nil), n, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Recover runs at start-up, after a power cut or crash: it removes the .partial files an
// interrupted Install left in the slots. It does not decide anything about the boot state.
func (in *Installer) Recover(ctx context.Context) error {
	var errs []error
	for _, slot := range []boot.Slot{boot.SlotA, boot.SlotB} {
		tmp := in.Path(slot) + PartialSuffix
		if _, err := in.FS.Stat(tmp); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := in.FS.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("slots: recover: %w", err))
			continue
		}
		if err := in.FS.SyncDir(path.Dir(tmp)); err != nil {
			errs = append(errs, fmt.Errorf("slots: recover: %w", err))
		}
	}
	return errors.Join(errs...)
}
