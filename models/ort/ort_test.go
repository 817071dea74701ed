package ort

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/onnx"
)

const childEnv = "PERCH_ORT_TEST_CHILD"

// RSS around loading the library, measured once in TestMain before any test loads it.
var rssBefore, rssAfterInit, rssAfterSession int64

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		rssBefore = vmRSS()
		if Init("") == nil {
			rssAfterInit = vmRSS()
			rssAfterSession = firstSessionRSS()
		}
	}
	os.Exit(m.Run())
}

// firstSessionRSS loads the test model, scores a batch of 64 and returns VmRSS meanwhile.
func firstSessionRSS() int64 {
	m, err := onnx.ReconstructionScorer(4, make([]float32, 16), make([]float32, 4))
	if err != nil {
		return 0
	}
	raw, err := m.Marshal()
	if err != nil {
		return 0
	}
	s, err := NewSession(raw, Options{})
	if err != nil {
		return 0
	}
	defer s.Close()
	if _, err := s.Score(rows(1, 64, 4)); err != nil {
		return 0
	}
	return vmRSS()
}

// vmRSS returns this process's resident set in KiB from /proc/self/status, or 0.
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// needLib skips when the library is absent locally, and fails under CI, where `make test` runs
// `make ort` first.
func needLib(tb testing.TB) {
	tb.Helper()
	if err := Init(""); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("ONNX Runtime library required under CI: %v", err)
		}
		tb.Skipf("ONNX Runtime library not available (run `make ort`): %v", err)
	}
}

// testModel is score = Σ (x·W + b − x)² over 4 features, with W and b drawn from seed.
func testModel(tb testing.TB, seed uint64) (model []byte, w, b []float32) {
	tb.Helper()
	const f = 4
	r := rand.New(rand.NewPCG(seed, 1))
	w = make([]float32, f*f)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.5)
	}
	b = make([]float32, f)
	for i := range b {
		b[i] = float32(r.NormFloat64() * 0.1)
	}
	m, err := onnx.ReconstructionScorer(f, w, b)
	if err != nil {
		tb.Fatal(err)
	}
	model, err = m.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return model, w, b
}

func rows(seed uint64, n, f int) [][]float32 {
	r := rand.New(rand.NewPCG(seed, 2))
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, f)
		for j := range out[i] {
			out[i][j] = float32(r.Float64()*4 - 2)
		}
	}
	return out
}

func TestScoreMatchesGo(t *testing.T) {
	needLib(t)
	model, w, b := testModel(t, 7)
	s, err := NewSession(model, Options{MaxBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Features() != 4 {
		t.Fatalf("Features() = %d, want 4", s.Features())
	}
	for _, n := range []int{1, 3, 16, 17, 64, 100} { // 17, 64, 100 span several Runs of 16
		t.Run(fmt.Sprint("batch=", n), func(t *testing.T) {
			x := rows(uint64(n), n, 4)
			got, err := s.Score(x)
			if err != nil {
				t.Fatal(err)
			}
			flat := make([]float32, 0, n*4)
			for _, r := range x {
				flat = append(flat, r...)
			}
			got2 := make([]float32, n)
			if err := s.ScoreFlat(got2, flat); err != nil {
				t.Fatal(err)
			}
			for i, r := range x {
				want := onnx.ReconstructionScore(r, w, b)
				// 1e-5 absolute, relative above 1 (float32 sums in a different order).
				if d := math.Abs(float64(got[i] - want)); d > 1e-5*math.Max(1, math.Abs(float64(want))) {
					t.Errorf("row %d: ORT %v, Go %v (diff %g)", i, got[i], want, d)
				}
				if got2[i] != got[i] {
					t.Errorf("row %d: ScoreFlat %v, Score %v", i, got2[i], got[i])
				}
			}
		})
	}
}

func TestScoreErrors(t *testing.T) {
	needLib(t)
	model, _, _ := testModel(t, 1)
	s, err := NewSession(model, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Score([][]float32{{1, 2, 3}}); err == nil {
		t.Error("short row: no error")
	}
	if err := s.ScoreInto(make([]float32, 1), rows(1, 2, 4)); err == nil {
		t.Error("short dst: no error")
	}
	if err := s.ScoreFlat(make([]float32, 2), make([]float32, 5)); err == nil {
		t.Error("partial row: no error")
	}
	if got, err := s.Score(nil); err != nil || len(got) != 0 {
		t.Errorf("empty batch: %v, %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Score(rows(1, 1, 4)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: err = %v, want ErrClosed", err)
	}
	if _, err := NewSession([]byte("not a model"), Options{}); err == nil {
		t.Error("garbage model: no error")
	}
	// Two inputs: refused with a message, not a crash at Run.
	g := &onnx.Graph{Name: "two"}
	g.Input("a", onnx.Float, onnx.Sym("N"), onnx.Fixed(2))
	g.Input("c", onnx.Float, onnx.Sym("N"), onnx.Fixed(2))
	g.Node("Add", []string{"a", "c"}, []string{"y"})
	g.Output("y", onnx.Float, onnx.Sym("N"), onnx.Fixed(2))
	two, err := (&onnx.Model{Graph: g}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSession(two, Options{}); err == nil || !strings.Contains(err.Error(), "2 inputs") {
		t.Errorf("two-input model: err = %v", err)
	}
}

func TestScoreIntoAllocatesNothing(t *testing.T) {
	needLib(t)
	model, _, _ := testModel(t, 2)
	s, err := NewSession(model, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, n := range []int{1, 64} {
		x := rows(3, n, 4)
		dst := make([]float32, n)
		if a := testing.AllocsPerRun(100, func() {
			if err := s.ScoreInto(dst, x); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("batch %d: %v allocations per ScoreInto, want 0", n, a)
		}
	}
}

func TestSessionFromFileAndOutputN1(t *testing.T) {
	needLib(t)
	// A model whose output is [N, 1] (keepdims=1) loaded from a file.
	g := &onnx.Graph{Name: "sumsq"}
	g.Input("x", onnx.Float, onnx.Sym("N"), onnx.Fixed(3))
	g.Int64Init("axes", []int64{1}, []int64{1})
	g.Node("Mul", []string{"x", "x"}, []string{"sq"})
	g.Node("ReduceSum", []string{"sq", "axes"}, []string{"score"}, onnx.AttrInt("keepdims", 1))
	g.Output("score", onnx.Float, onnx.Sym("N"), onnx.Fixed(1))
	raw, err := (&onnx.Model{Graph: g}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sumsq.onnx")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewSessionFromFile(path, Options{IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Score([][]float32{{1, 2, 3}, {0, 0, 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 14 || got[1] != 0.25 {
		t.Errorf("scores = %v, want [14 0.25]", got)
	}
}

func TestInitSamePathAndOther(t *testing.T) {
	needLib(t)
	if err := Init(""); err != nil {
		t.Fatal(err)
	}
	if err := Init(LoadedPath()); err != nil {
		t.Errorf("Init(loaded path) = %v", err)
	}
	other := filepath.Join(t.TempDir(), LibName)
	if err := Init(other); err == nil || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("Init(other path) = %v, want an already-loaded error", err)
	}
}

func TestFindLibraryMissing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope", LibName)
	if _, err := FindLibrary(missing); !errors.Is(err, ErrLibraryMissing) || !strings.Contains(err.Error(), missing) {
		t.Errorf("explicit: err = %v", err)
	}
	t.Setenv(EnvLib, missing)
	if _, err := FindLibrary(""); !errors.Is(err, ErrLibraryMissing) || !strings.Contains(err.Error(), "$"+EnvLib+"="+missing) {
		t.Errorf("env: err = %v", err)
	}
	t.Setenv(EnvLib, "")
	t.Chdir(dir)
	_, err := FindLibrary("")
	if !errors.Is(err, ErrLibraryMissing) || !strings.Contains(err.Error(), filepath.Join(dir, CachePath())) || !strings.Contains(err.Error(), "make ort") {
		t.Errorf("default: err = %v", err)
	}
	// The default cache path, found from a subdirectory of the "repository".
	lib := filepath.Join(dir, CachePath())
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	if got, err := FindLibrary(""); err != nil || got != lib {
		t.Errorf("from %s: FindLibrary = %q, %v; want %q", sub, got, err, lib)
	}
	// $PERCH_ORT_LIB wins over the cache; an explicit path over both.
	envLib := filepath.Join(dir, "env.so")
	if err := os.WriteFile(envLib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvLib, envLib)
	if got, _ := FindLibrary(""); got != envLib {
		t.Errorf("with $%s: FindLibrary = %q, want %q", EnvLib, got, envLib)
	}
	if got, _ := FindLibrary(lib); got != lib {
		t.Errorf("explicit: FindLibrary = %q, want %q", got, lib)
	}
}

// TestInitMissingLibrary runs a child process with $PERCH_ORT_LIB pointing nowhere: Init and
// NewSession fail with ErrLibraryMissing, every time, with the same error.
func TestInitMissingLibrary(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		err1 := Init("")
		err2 := Init("")
		_, err3 := NewSession([]byte{}, Options{})
		if !errors.Is(err1, ErrLibraryMissing) || err1 != err2 || err3 != err1 {
			t.Fatalf("Init = %v, again = %v, NewSession = %v", err1, err2, err3)
		}
		fmt.Println("child-error:", err1)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInitMissingLibrary$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1", EnvLib+"=/nonexistent/"+LibName)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "child-error: ort: ONNX Runtime library not found: $PERCH_ORT_LIB=/nonexistent/") {
		t.Errorf("child output:\n%s", out)
	}
}

// TestRSS logs what loading the library and a first session add to the resident set (not asserted;
// see `go test -v -run TestRSS`). Measured in TestMain, before any test loads anything.
func TestRSS(t *testing.T) {
	needLib(t)
	if rssBefore == 0 || rssAfterInit == 0 || rssAfterSession == 0 {
		t.Skip("no /proc/self/status")
	}
	t.Logf("VmRSS: %d KiB before Init; library + environment +%d KiB; first session (4-feature model, batch 64 scored) +%d KiB",
		rssBefore, rssAfterInit-rssBefore, rssAfterSession-rssAfterInit)
}

func BenchmarkScore(b *testing.B) {
	needLib(b)
	model, _, _ := testModel(b, 4)
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprint("batch=", n), func(b *testing.B) {
			s, err := NewSession(model, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			x := rows(5, n, 4)
			dst := make([]float32, n)
			b.ReportAllocs()
			for b.Loop() {
				if err := s.ScoreInto(dst, x); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/sample")
		})
	}
}

// BenchmarkScoreLatency reports the p50 and p99 of single-sample ScoreInto calls, each timed on
// its own (time.Now adds a few tens of ns to every figure).
func BenchmarkScoreLatency(b *testing.B) {
	needLib(b)
	model, _, _ := testModel(b, 6)
	s, err := NewSession(model, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	x := rows(7, 1, 4)
	dst := make([]float32, 1)
	lat := make([]time.Duration, 0, 1<<20)
	for b.Loop() {
		t0 := time.Now()
		if err := s.ScoreInto(dst, x); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}
