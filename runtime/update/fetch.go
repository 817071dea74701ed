// Package update is the update agent's machinery: resumable, verified downloads of the
// artifacts a signed registry offers (this file), and the agent that stages, swaps, watches and
// commits or rolls them back (agent.go).
package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/update/boot"
)

// Fetcher defaults.
const (
	DefaultChunk       = 1 << 20
	DefaultReadTimeout = 30 * time.Second
	DefaultAttempts    = 20
)

// PartialSuffix is appended to a download's file name until it is complete and verified.
const PartialSuffix = ".partial"

// ErrDigest reports a download whose bytes do not have the expected length or SHA-256.
var ErrDigest = errors.New("update: digest mismatch")

// Fetcher downloads blobs over HTTP in Range requests of Chunk bytes, resuming where the bytes
// on disk end after a cut connection, a stalled body or a restart of the process. The zero value
// uses http.DefaultClient, the operating system's files and the defaults above. A Fetcher is
// safe for concurrent use on different destinations.
type Fetcher struct {
	Client *http.Client
	// FS holds the downloads; nil: [boot.OSFS]. Every write, fsync and rename goes through it.
	FS boot.FS
	// Chunk is the most bytes one request asks for; each whole chunk is fsynced. A cut
	// connection costs at most the unwritten rest of the chunk in flight, a power cut at most
	// the chunk in flight.
	Chunk int64
	// ReadTimeout is the longest wait for the next body bytes; a stalled body is cut and the
	// download resumes with a new request.
	ReadTimeout time.Duration
	// Attempts bounds the requests that fail in a row before Fetch gives up.
	Attempts int
	// Backoff is the pause after a failed request, doubled up to 10 s; default 100 ms.
	Backoff time.Duration
}

// FetchStats says what a Fetch cost.
type FetchStats struct {
	Requests int   // HTTP requests made
	Received int64 // body bytes received, including any that were thrown away
	Resumed  int64 // bytes already on disk when Fetch started
	Cuts     int   // requests that ended before their range was complete
}

// Fetch downloads url into dst, expecting exactly size bytes whose SHA-256 is digest
// ("sha256:<hex>" or bare hex). It writes dst+PartialSuffix, resuming from its current length,
// and renames it to dst once the length and hash match: the file is fsynced before the rename
// and the folder after it, so a dst that exists after a power cut is whole; each whole chunk
// is fsynced as it arrives, so a download resumes after a power cut too. dst's folder must
// exist. A complete dst that already verifies is not fetched again. On a mismatch the partial
// file is removed and the error wraps ErrDigest.
func (f *Fetcher) Fetch(ctx context.Context, url string, size int64, digest, dst string) (FetchStats, error) {
	var st FetchStats
	want := strings.TrimPrefix(digest, "sha256:")
	if len(want) != 64 {
		return st, fmt.Errorf("update: fetch %s: bad digest %q", url, digest)
	}
	if size < 0 {
		return st, fmt.Errorf("update: fetch %s: negative size %d", url, size)
	}
	fsys := f.fs()
	if err := verifyFile(fsys, dst, size, want); err == nil {
		return st, nil
	}
	part := dst + PartialSuffix
	// Hash what is already there: the bytes on disk are the truth, not what we remember.
	h := sha256.New()
	have, existed, err := hashFile(fsys, part, h)
	if err != nil {
		return st, fmt.Errorf("update: fetch: read %s: %w", part, err)
	}
	var file boot.File
	if have > size {
		h.Reset()
		have = 0
		file, err = fsys.Create(part, 0o644)
	} else {
		file, err = fsys.Append(part, 0o644)
	}
	if err != nil {
		return st, fmt.Errorf("update: fetch: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			file.Close()
		}
	}()
	if !existed {
		// The partial file's name is durable before its first chunk is: a power cut keeps what
		// was synced of it, and the download resumes there.
		if err := fsys.SyncDir(slashDir(part)); err != nil {
			return st, fmt.Errorf("update: fetch: sync the folder of %s: %w", part, err)
		}
	}
	st.Resumed = have
	chunk, attempts, backoff := f.Chunk, f.Attempts, f.Backoff
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if backoff <= 0 {
		backoff = 100 * time.Millisecond
	}
	failures := 0
	for have < size {
		end := min(have+chunk, size) - 1
		n, err := f.fetchRange(ctx, url, have, end, file, h, &st)
		have += n
		if err == nil {
			// Each whole chunk is made durable: a power cut costs at most the chunk in flight.
			if err := file.Sync(); err != nil {
				return st, fmt.Errorf("update: fetch: sync %s: %w", part, err)
			}
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return st, fmt.Errorf("update: fetch %s: %w", url, perm.error)
		}
		if n == 0 {
			failures++
		}
		if failures >= attempts {
			return st, fmt.Errorf("update: fetch %s: %d attempts failed at byte %d of %d: %w", url, failures, have, size, err)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(min(backoff<<min(failures, 7), 10*time.Second)):
		}
	}
	closed = true
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		file.Close()
		fsys.Remove(part)
		return st, fmt.Errorf("update: fetch %s: got sha256:%s, want sha256:%s: %w", url, got, want, ErrDigest)
	}
	// The data is durable before the name points at it, and the name before Fetch returns.
	if err := file.Sync(); err != nil {
		file.Close()
		return st, fmt.Errorf("update: fetch: sync %s: %w", part, err)
	}
	if err := file.Close(); err != nil {
		return st, fmt.Errorf("update: fetch: close %s: %w", part, err)
	}
	if err := fsys.Rename(part, dst); err != nil {
		return st, fmt.Errorf("update: fetch: %w", err)
	}
	if err := fsys.SyncDir(slashDir(dst)); err != nil {
		return st, fmt.Errorf("update: fetch: sync the folder of %s: %w", dst, err)
	}
	return st, nil
}

func (f *Fetcher) fs() boot.FS {
	if f.FS == nil {
		return boot.OSFS{}
	}
	return f.FS
}

// slashDir is the folder of name, slash-separated as [boot.FS] names are.
func slashDir(name string) string { return path.Dir(filepath.ToSlash(name)) }

// permanentError is a response that trying again will not fix (such as 404).
type permanentError struct{ error }

// fetchRange asks for bytes [from, to] and appends what arrives to file and h. It returns the
// bytes written, and an error if the range did not arrive whole.
func (f *Fetcher) fetchRange(ctx context.Context, url string, from, to int64, file io.Writer, h hash.Hash, st *FetchStats) (int64, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, permanentError{err}
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, to))
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	st.Requests++
	resp, err := client.Do(req)
	if err != nil {
		st.Cuts++
		return 0, err
	}
	defer resp.Body.Close()
	want := to - from + 1
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		var start, end int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/", &start, &end); err != nil || start != from || end > to {
			return 0, fmt.Errorf("bad Content-Range %q for bytes %d-%d", resp.Header.Get("Content-Range"), from, to)
		}
		want = end - start + 1
	case resp.StatusCode == http.StatusOK && from == 0:
		// No Range support: the whole body, of which we take the first chunk.
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return 0, permanentError{fmt.Errorf("the server does not serve byte ranges (status %s at byte %d)", resp.Status, from)}
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return 0, permanentError{fmt.Errorf("status %s", resp.Status)}
	default:
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	timeout := f.ReadTimeout
	if timeout <= 0 {
		timeout = DefaultReadTimeout
	}
	body := &stallReader{r: resp.Body, timeout: timeout, cancel: cancel}
	defer body.stop()
	// Never more than asked: a body that runs on past the range is cut there.
	w := &hashingWriter{f: file, h: h}
	n, err := io.Copy(w, io.LimitReader(body, want))
	st.Received += n
	if w.err != nil {
		return w.n, permanentError{fmt.Errorf("write: %w", w.err)}
	}
	if err == nil && n < want {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		st.Cuts++
		if cause := context.Cause(rctx); errors.Is(cause, errStalled) {
			err = cause
		}
		// What was written stays: the next request starts after it.
		return n, err
	}
	return n, nil
}

// hashingWriter writes to f and hashes exactly the bytes f took.
type hashingWriter struct {
	f   io.Writer
	h   hash.Hash
	n   int64
	err error
}

func (w *hashingWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

var errStalled = errors.New("update: the body stalled")

// stallReader cancels its request when no byte arrives for timeout.
type stallReader struct {
	r       io.Reader
	timeout time.Duration
	cancel  context.CancelCauseFunc
	timer   *time.Timer
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.timer == nil {
		s.timer = time.AfterFunc(s.timeout, func() { s.cancel(errStalled) })
	} else {
		s.timer.Reset(s.timeout)
	}
	return s.r.Read(p)
}

func (s *stallReader) stop() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

// verifyFile reports whether name holds exactly size bytes with SHA-256 want (hex).
func verifyFile(fsys boot.FS, name string, size int64, want string) error {
	f, err := fsys.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, size+1))
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || got != want {
		return fmt.Errorf("%s: %d bytes sha256:%s, want %d bytes sha256:%s: %w", name, n, got, size, want, ErrDigest)
	}
	return nil
}

// hashFile writes name's content to h and returns its length and whether name exists; a
// missing file is empty.
func hashFile(fsys boot.FS, name string, h hash.Hash) (int64, bool, error) {
	f, err := fsys.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	n, err := io.Copy(h, f)
	return n, true, err
}

// readBlob reads a content-addressed file, one whose name is the hex SHA-256 of its bytes (as
// [Agent] stores every artifact), and checks the bytes against the name: what a disk error or
// a power cut changed since the download is refused, not run.
func readBlob(fsys boot.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("update: read %s: %w", name, err)
	}
	sum := sha256.Sum256(b)
	if got, want := hex.EncodeToString(sum[:]), path.Base(filepath.ToSlash(name)); got != want {
		return nil, fmt.Errorf("update: %s holds %d bytes with sha256:%s, not what its name says: %w", name, len(b), got, ErrDigest)
	}
	return b, nil
}

// fs is the agent's file system: Config.FS, or the operating system's.
func (a *Agent) fs() boot.FS {
	if a.cfg.FS == nil {
		return boot.OSFS{}
	}
	return a.cfg.FS
}

// collect removes from dir, the folder of one module's or one model's downloads, every entry
// but keep (what the installed row uses: a module's binary; a model's two blobs and its staged
// folder): superseded releases, rolled-back ones and stale partial downloads. A folder (a
// model's staged folder) goes file by file, its folder synced, then the folder itself. It must
// run only once the recorder's installed row names what keep holds (Store.Install commits with
// synchronous=FULL, so the row is on disk by then): a power cut anywhere in collect then leaves
// the box running keep, and a removal the cut lost is done again by the next collect
// (collectStale). When it removed anything it journals step as [StepCollected] with the names.
// Failures are logged, not returned: the update they follow is already committed.
func (a *Agent) collect(ctx context.Context, step store.UpdateStep, dir string, keep ...string) {
	dir = filepath.ToSlash(dir)
	removed, err := removeAllBut(a.fs(), dir, keep...)
	if err != nil {
		a.log.Warn("update: collect superseded files", "dir", dir, "err", err)
	}
	if len(removed) == 0 || err != nil {
		return
	}
	step.Step, step.Detail = StepCollected, fmt.Sprintf("removed %d superseded file(s) from %s: %s", len(removed), dir, strings.Join(removed, ", "))
	a.journal(ctx, step)
}

// removeAllBut removes every entry of dir but keep (see removeEntry), then syncs dir if it
// removed anything. It returns the names removed and the failures, joined; it goes on after a
// failed removal.
func removeAllBut(fsys boot.FS, dir string, keep ...string) ([]string, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		if slices.Contains(keep, name) {
			continue
		}
		if err := removeEntry(fsys, dir+"/"+name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	if len(removed) > 0 {
		if err := fsys.SyncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// removeEntry removes the file name, or the folder name with the files in it: each file, then
// the folder synced (its files' removals are durable before the folder's is), then the folder.
// The removal of name itself is durable once its parent is synced, which the caller does.
func removeEntry(fsys boot.FS, name string) error {
	isDir, err := fsys.Stat(name)
	if err != nil {
		return err
	}
	if !isDir {
		return fsys.Remove(name)
	}
	names, err := fsys.ReadDir(name)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := fsys.Remove(name + "/" + n); err != nil {
			return err
		}
	}
	if len(names) > 0 {
		if err := fsys.SyncDir(name); err != nil {
			return err
		}
	}
	return fsys.Remove(name)
}

// collectStale collects dir when the box runs cur, the installed release of the target step
// names, and dir holds more than the file of cur's binary (named by its SHA-256): what a power
// cut during the collect after the commit left behind.
func (a *Agent) collectStale(ctx context.Context, step store.UpdateStep, dir string, cur running) {
	sum := sha256.Sum256(cur.bin)
	a.collectIfStale(ctx, step, dir, cur.release, hex.EncodeToString(sum[:]))
}

// collectIfStale collects dir, keeping keep, when release is the installed release of the
// target step names and dir holds anything but keep.
func (a *Agent) collectIfStale(ctx context.Context, step store.UpdateStep, dir string, release uint64, keep ...string) {
	if step.Release != release {
		return
	}
	names, err := a.fs().ReadDir(filepath.ToSlash(dir))
	if err != nil {
		return
	}
	for _, n := range names {
		if !slices.Contains(keep, n) {
			a.collect(ctx, step, dir, keep...)
			return
		}
	}
}

// readFile reads a whole file of fsys.
func readFile(fsys boot.FS, name string) ([]byte, error) {
	f, err := fsys.Open(filepath.ToSlash(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
