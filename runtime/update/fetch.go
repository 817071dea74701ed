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
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
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
// uses http.DefaultClient and the defaults above. A Fetcher is safe for concurrent use on
// different destinations.
type Fetcher struct {
	Client *http.Client
	// Chunk is the most bytes one request asks for; a cut costs at most the unwritten rest of
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
// and renames it to dst once the length and hash match (fsyncing the file and the folder). A
// complete dst that already verifies is not fetched again. On a mismatch the partial file is
// removed and the error wraps ErrDigest.
func (f *Fetcher) Fetch(ctx context.Context, url string, size int64, digest, dst string) (FetchStats, error) {
	var st FetchStats
	want := strings.TrimPrefix(digest, "sha256:")
	if len(want) != 64 {
		return st, fmt.Errorf("update: fetch %s: bad digest %q", url, digest)
	}
	if size < 0 {
		return st, fmt.Errorf("update: fetch %s: negative size %d", url, size)
	}
	if err := verifyFile(dst, size, want); err == nil {
		return st, nil
	}
	part := dst + PartialSuffix
	file, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return st, fmt.Errorf("update: fetch: %w", err)
	}
	defer file.Close()
	// Hash what is already there: the bytes on disk are the truth, not what we remember.
	h := sha256.New()
	have, err := io.Copy(h, file)
	if err != nil {
		return st, fmt.Errorf("update: fetch: read %s: %w", part, err)
	}
	if have > size {
		if err := file.Truncate(0); err != nil {
			return st, err
		}
		h.Reset()
		have = 0
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
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		file.Close()
		os.Remove(part)
		return st, fmt.Errorf("update: fetch %s: got sha256:%s, want sha256:%s: %w", url, got, want, ErrDigest)
	}
	if err := file.Sync(); err != nil {
		return st, err
	}
	if err := file.Close(); err != nil {
		return st, err
	}
	if err := os.Rename(part, dst); err != nil {
		return st, err
	}
	return st, syncDir(filepath.Dir(dst))
}

// permanentError is a response that trying again will not fix (such as 404).
type permanentError struct{ error }

// fetchRange asks for bytes [from, to] and appends what arrives to file and h. It returns the
// bytes written, and an error if the range did not arrive whole.
func (f *Fetcher) fetchRange(ctx context.Context, url string, from, to int64, file *os.File, h hash.Hash, st *FetchStats) (int64, error) {
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
	f   *os.File
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

// verifyFile reports whether path holds exactly size bytes with SHA-256 want (hex).
func verifyFile(path string, size int64, want string) error {
	f, err := os.Open(path)
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
		return fmt.Errorf("%s: %d bytes sha256:%s, want %d bytes sha256:%s: %w", path, n, got, size, want, ErrDigest)
	}
	return nil
}

// syncDir fsyncs a folder, so that a rename in it survives a power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
