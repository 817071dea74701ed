package boot

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
)

// FileLoader is a [Loader] whose environment is two files in a directory, written the way
// U-Boot writes its redundant environment: each copy carries a sequence number and a CRC32;
// a write goes to the older copy (file fsync, then directory fsync); a read takes the newest
// copy whose checksum holds. A power cut during a write therefore leaves the other copy, the
// state before the write, in force.
//
// It serves the tests (with a faultfs file system it models a bootloader across power cuts)
// and the self-update of the perch binary, where the perch-boot wrapper plays the
// bootloader by calling [FileLoader.Boot] before it execs a slot.
//
// A FileLoader is safe for concurrent use by multiple goroutines; two processes must not use
// one directory at the same time (perch-boot runs before perch starts, never beside it).
type FileLoader struct {
	fsys FS
	dir  string
	mu   sync.Mutex
}

// Env copy file names inside the FileLoader's directory.
const (
	EnvFile0 = "bootenv.0"
	EnvFile1 = "bootenv.1"
)

// NewFileLoader returns a FileLoader whose environment lives in dir (which must exist) on
// fsys. It does not touch the disk; call [FileLoader.Init] once at provisioning.
func NewFileLoader(fsys FS, dir string) *FileLoader {
	return &FileLoader{fsys: fsys, dir: dir}
}

func (l *FileLoader) names() [2]string {
	return [2]string{path.Join(l.dir, EnvFile0), path.Join(l.dir, EnvFile1)}
}

// read returns the newest valid copy and the index of the copy the next write must go to.
func (l *FileLoader) read() (env, int, error) {
	n := l.names()
	c := [2]envCopy{readCopy(l.fsys, n[0]), readCopy(l.fsys, n[1])}
	switch {
	case c[0].invalid == nil && c[1].invalid == nil:
		if c[1].env.seq > c[0].env.seq {
			return c[1].env, 0, nil
		}
		return c[0].env, 1, nil
	case c[0].invalid == nil:
		return c[0].env, 1, nil
	case c[1].invalid == nil:
		return c[1].env, 0, nil
	case !c[0].exists && !c[1].exists:
		return env{}, 0, fmt.Errorf("%w in %s", ErrNoEnv, l.dir)
	case !c[1].exists:
		// Only the very first write (Init) ever leaves copy 1 missing: it was torn.
		return env{}, 0, fmt.Errorf("%w in %s (first write torn: %v)", ErrNoEnv, l.dir, c[0].invalid)
	}
	return env{}, 0, fmt.Errorf("%w: %w", ErrEnvCorrupt, errors.Join(c[0].invalid, c[1].invalid))
}

// write stores e, with the next sequence number, into copy idx: write, fsync, fsync dir.
func (l *FileLoader) write(e env, idx int) error {
	e.seq++
	name := l.names()[idx]
	f, err := l.fsys.Create(name, 0o644)
	if err != nil {
		return fmt.Errorf("boot: write env: %w", err)
	}
	_, err = f.Write(e.encode())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.fsys.SyncDir(l.dir)
	}
	if err != nil {
		return fmt.Errorf("boot: write env %s: %w", name, err)
	}
	return nil
}

// Init writes the first environment, with slot committed and booted, unless one exists. It
// is safe to repeat after a power cut. It refuses (ErrEnvCorrupt) when both copies exist
// and neither is valid: that is damage, not an unfinished Init.
func (l *FileLoader) Init(ctx context.Context, slot Slot) error {
	if !slot.Valid() {
		return fmt.Errorf("boot: Init: bad slot %q (want A or B)", slot)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _, err := l.read()
	if err == nil || !errors.Is(err, ErrNoEnv) {
		return err
	}
	return l.write(env{dflt: slot, booted: slot}, 0)
}

// Boot plays the bootloader at power-on and returns the slot to boot: if a trial has boots
// left it takes one (the counter is decremented and written before the slot is returned);
// if the trial's counter has run out it is abandoned (rolled back) and the committed slot
// boots; otherwise the committed slot boots. The choice is recorded as the booted slot.
func (l *FileLoader) Boot(ctx context.Context) (Slot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, idx, err := l.read()
	if err != nil {
		return NoSlot, err
	}
	switch {
	case e.try != NoSlot && e.tries > 0:
		e.tries--
		e.booted = e.try
	case e.try != NoSlot:
		e.rolledBack, e.try = e.try, NoSlot
		e.booted = e.dflt
	default:
		e.booted = e.dflt
	}
	if err := l.write(e, idx); err != nil {
		return NoSlot, err
	}
	return e.booted, nil
}

// Status implements [Loader].
func (l *FileLoader) Status(ctx context.Context) (Status, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, _, err := l.read()
	if err != nil {
		return Status{}, err
	}
	booted := e.booted
	if booted == NoSlot {
		booted = e.dflt // Init done, Boot not yet run
	}
	return Status{Booted: booted, Fallback: e.dflt, Trying: e.try, TriesLeft: e.tries, RolledBack: e.rolledBack}, nil
}

// TryNext implements [Loader].
func (l *FileLoader) TryNext(ctx context.Context, slot Slot, tries int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, idx, err := l.read()
	if err != nil {
		return err
	}
	booted := e.booted
	if booted == NoSlot {
		booted = e.dflt
	}
	if err := checkTry(Status{Booted: booted, Fallback: e.dflt}, slot, tries); err != nil {
		return err
	}
	e.try, e.tries, e.rolledBack = slot, tries, NoSlot
	return l.write(e, idx)
}

// MarkGood implements [Loader].
func (l *FileLoader) MarkGood(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, idx, err := l.read()
	if err != nil {
		return err
	}
	if e.booted == NoSlot {
		e.booted = e.dflt
	}
	if e.dflt == e.booted && e.try == NoSlot && e.tries == 0 && e.rolledBack == NoSlot {
		return nil // already committed: no write
	}
	e.dflt, e.try, e.tries, e.rolledBack = e.booted, NoSlot, 0, NoSlot
	return l.write(e, idx)
}

var _ Loader = (*FileLoader)(nil)
