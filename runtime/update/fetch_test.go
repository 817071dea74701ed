package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/update/boot/faultfs"
)

// blobServer serves one blob with byte ranges (as a registry's blob endpoint does) and cuts
// responses at the offsets a test asks for.
type blobServer struct {
	*httptest.Server
	blob   []byte
	served atomic.Int64 // body bytes written
	mu     sync.Mutex
	// cut, if set, says after how many body bytes to cut the response that serves [from, to].
	cut   func(from, to int64) (int64, bool)
	stall time.Duration // with cut: stall this long instead of closing
}

func newBlobServer(t *testing.T, blob []byte) *blobServer {
	s := &blobServer{blob: blob}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *blobServer) serve(w http.ResponseWriter, r *http.Request) {
	var from, to int64
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &from, &to); err != nil || from > to || to >= int64(len(s.blob)) {
		http.Error(w, "bad range", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	s.mu.Lock()
	cut := s.cut
	s.mu.Unlock()
	body := s.blob[from : to+1]
	w.Header().Set("Content-Range", "bytes "+strconv.FormatInt(from, 10)+"-"+strconv.FormatInt(to, 10)+"/"+strconv.Itoa(len(s.blob)))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusPartialContent)
	if cut != nil {
		if n, ok := cut(from, to); ok && n < int64(len(body)) {
			w.Write(body[:n])
			s.served.Add(n)
			w.(http.Flusher).Flush()
			if s.stall > 0 {
				select {
				case <-r.Context().Done():
				case <-time.After(s.stall):
				}
			}
			// Cut the connection mid-body.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
	}
	n, _ := w.Write(body)
	s.served.Add(int64(n))
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func randomBlob(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestFetchResumesAfterCuts: the connection is cut at random offsets, again and again; every
// cut costs at most the rest of the chunk in flight, and the file arrives whole.
func TestFetchResumesAfterCuts(t *testing.T) {
	const size, chunk = 3<<20 + 12345, 256 << 10
	blob := randomBlob(size)
	s := newBlobServer(t, blob)
	var cuts atomic.Int64
	rng := rand.New(rand.NewPCG(3, 4))
	var rmu sync.Mutex
	s.cut = func(from, to int64) (int64, bool) {
		rmu.Lock()
		defer rmu.Unlock()
		if rng.IntN(2) != 0 {
			return 0, false
		}
		cuts.Add(1)
		return rng.Int64N(to - from + 1), true
	}
	dst := filepath.Join(t.TempDir(), "blob")
	f := &Fetcher{Chunk: chunk, Backoff: time.Millisecond, Attempts: 50}
	st, err := f.Fetch(t.Context(), s.URL, size, digestOf(blob), dst)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, blob) {
		t.Fatal("the file differs from the blob")
	}
	if _, err := os.Stat(dst + PartialSuffix); !os.IsNotExist(err) {
		t.Errorf("partial file left: %v", err)
	}
	n := cuts.Load()
	if n == 0 || st.Cuts != int(n) {
		t.Fatalf("cuts: server %d, fetcher %d", n, st.Cuts)
	}
	// Every byte the server sent was kept: a cut refetches nothing that arrived.
	if served := s.served.Load(); served != size || st.Received != size {
		t.Errorf("served %d, received %d bytes for a %d-byte blob with %d cuts", served, st.Received, size, n)
	}
	t.Logf("%d cuts, %d requests, %d bytes served", n, st.Requests, s.served.Load())
}

// TestFetchResumesAcrossRestarts: a download killed halfway (the process gone) resumes from
// the bytes on disk, and a complete file is not fetched again.
func TestFetchResumesAcrossRestarts(t *testing.T) {
	const size = 1<<20 + 7
	blob := randomBlob(size)
	s := newBlobServer(t, blob)
	dst := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(dst+PartialSuffix, blob[:600_000], 0o644); err != nil {
		t.Fatal(err)
	}
	f := &Fetcher{Chunk: 128 << 10}
	st, err := f.Fetch(t.Context(), s.URL, size, digestOf(blob), dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Resumed != 600_000 || s.served.Load() != size-600_000 {
		t.Errorf("resumed %d, served %d", st.Resumed, s.served.Load())
	}
	st, err = f.Fetch(t.Context(), s.URL, size, digestOf(blob), dst)
	if err != nil || st.Requests != 0 {
		t.Errorf("second fetch: %d requests, %v", st.Requests, err)
	}
}

// TestFetchStalledBody: a body that stops arriving is cut after ReadTimeout and resumed.
func TestFetchStalledBody(t *testing.T) {
	const size = 512 << 10
	blob := randomBlob(size)
	s := newBlobServer(t, blob)
	var once atomic.Bool
	s.stall = time.Minute
	s.cut = func(from, to int64) (int64, bool) {
		if once.CompareAndSwap(false, true) {
			return 1000, true
		}
		return 0, false
	}
	dst := filepath.Join(t.TempDir(), "blob")
	f := &Fetcher{Chunk: 64 << 10, ReadTimeout: 300 * time.Millisecond, Backoff: time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := f.Fetch(ctx, s.URL, size, digestOf(blob), dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cuts != 1 || st.Received != size {
		t.Errorf("stats %+v", st)
	}
}

// TestFetchRefusesBadBytes: a blob that does not match its digest is refused and not kept; a
// server that sends more than the expected size cannot make the file longer.
func TestFetchRefusesBadBytes(t *testing.T) {
	blob := randomBlob(100_000)
	s := newBlobServer(t, blob)
	dst := filepath.Join(t.TempDir(), "blob")
	f := &Fetcher{}
	other := append([]byte(nil), blob...)
	other[500] ^= 1
	if _, err := f.Fetch(t.Context(), s.URL, int64(len(blob)), digestOf(other), dst); !errors.Is(err, ErrDigest) {
		t.Errorf("tampered: err = %v", err)
	}
	for _, p := range []string{dst, dst + PartialSuffix} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s kept after a mismatch", p)
		}
	}
	// Expecting fewer bytes than the server has: only that many are asked for and kept.
	if _, err := f.Fetch(t.Context(), s.URL, 99_999, digestOf(blob[:99_999]), dst); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dst); fi.Size() != 99_999 {
		t.Errorf("size %d", fi.Size())
	}
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	if st, err := f.Fetch(t.Context(), notFound.URL, 10, digestOf(blob[:10]), dst+"2"); err == nil || st.Requests != 1 {
		t.Errorf("404: %d requests, err %v", st.Requests, err)
	}
}

// TestFetchPowerCut: the power is cut at each write, fsync, rename and folder sync of a
// download in turn (on a faultfs disk that loses what was not synced and tears the last
// write); after the reboot Fetch resumes from what survived and delivers the blob whole,
// durably: a second power cut right after it returns keeps the file. Each cut costs at most
// one chunk fetched again.
func TestFetchPowerCut(t *testing.T) {
	const size, chunk = 200_003, 16 << 10
	blob := randomBlob(size)
	s := newBlobServer(t, blob)
	const dir = "/data/updates"
	dst := dir + "/blob"
	// Count the operations of a clean download.
	fsys := faultfs.New()
	if err := boot.MkdirAll(fsys, dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &Fetcher{FS: fsys, Chunk: chunk, Backoff: time.Millisecond}
	start := fsys.Ops()
	if _, err := f.Fetch(t.Context(), s.URL, size, digestOf(blob), dst); err != nil {
		t.Fatal(err)
	}
	total := fsys.Ops() - start
	if total < size/chunk+3 {
		t.Fatalf("a clean download made only %d operations", total)
	}
	resumed := 0
	for k := 1; k <= total; k++ {
		seed := uint64(k)
		rng := rand.New(rand.NewPCG(seed, 5))
		fsys := faultfs.New()
		if err := boot.MkdirAll(fsys, dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f := &Fetcher{FS: fsys, Chunk: chunk, Backoff: time.Millisecond}
		fsys.CutAfter(k)
		st1, err := f.Fetch(t.Context(), s.URL, size, digestOf(blob), dst)
		if !errors.Is(err, faultfs.ErrPowerCut) {
			t.Fatalf("cut at op %d of %d: err = %v, want a power cut", k, total, err)
		}
		fsys.Reboot(rng)
		st, err := f.Fetch(t.Context(), s.URL, size, digestOf(blob), dst)
		if err != nil {
			t.Fatalf("cut at op %d (seed %d): after the reboot: %v", k, seed, err)
		}
		if st.Resumed > 0 || (st.Requests == 0 && k > 1) {
			resumed++
		}
		if got := st1.Received + st.Received; got > size+chunk {
			t.Errorf("cut at op %d (seed %d): %d bytes received for a %d-byte blob: more than one chunk (%d) again", k, seed, got, size, chunk)
		}
		fsys.Reboot(rng) // a cut right after Fetch returned
		got, err := readBlobFile(fsys, dst)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("cut at op %d (seed %d): after the second reboot: %d bytes, %v", k, seed, len(got), err)
		}
		if names, _ := fsys.ReadDir(dir); len(names) != 1 {
			t.Errorf("cut at op %d: the folder holds %v", k, names)
		}
	}
	if resumed == 0 {
		t.Errorf("no download of %d resumed from bytes on disk", total)
	}
	t.Logf("a clean download makes %d file-system operations; %d of %d cut downloads resumed", total, resumed, total)
}

func readBlobFile(fsys boot.FS, name string) ([]byte, error) {
	r, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
