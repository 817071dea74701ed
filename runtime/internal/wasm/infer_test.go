package wasm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/sdk/abi"
)

// buildInferGuest compiles the test guest runtime/testdata/infer/wasm/infer.c (C, against
// sdk/c/perch.h) with the flags `make modules` uses.
func buildInferGuest(t testing.TB) []byte {
	t.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang is needed to build the infer test guest (run `make deps`): %v", err)
	}
	out := filepath.Join(t.TempDir(), "infer.wasm")
	cmd := exec.Command(clang, "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-mbulk-memory", "-std=c11",
		"-Wall", "-Wextra", "-Werror", "-I../../../sdk/c", "-Wl,--strip-all", "-o", out, "../../testdata/infer/wasm/infer.c")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the infer guest: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// testScorer is the model of the tests: score = Σ((x·W + b − x)²) over rows of 3 values.
func testScorer(t testing.TB, maxBatch int) (*ort.Session, []float32, []float32) {
	t.Helper()
	if err := ort.Init(""); err != nil {
		t.Fatalf("ONNX Runtime (run `make ort`): %v", err)
	}
	w := []float32{0.5, 0.25, 0, -0.5, 1, 0.125, 0.25, 0, 0.75}
	b := []float32{0.1, -0.2, 0.3}
	m, err := onnx.ReconstructionScorer(3, w, b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(raw, ort.Options{MaxBatch: maxBatch})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, w, b
}

func inferInstance(t testing.TB, e *Engine, bin []byte, mode string, models []Model) *Instance {
	t.Helper()
	cfg, _ := json.Marshal(map[string]string{"model": "env-ae", "mode": mode})
	instances++ // instance names are unique in an engine
	spec := &Spec{Name: fmt.Sprintf("sc-%d", instances), Kind: "filter", Binary: bin, MemoryPages: 64, Deadline: 5 * time.Second,
		EmitRecords: 8192, EmitBytes: 1 << 20, LogBytes: 16 << 10, Emits: []string{"score"},
		Grants: Grants{Models: models}, Config: cfg}
	inst, err := e.Instantiate(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	return inst
}

var instances int

// readings returns n readings of three fields each, with values that vary by record.
func readings(n int) ([]byte, [][]float32) {
	var b abi.Builder
	var rows [][]float32
	for i := range n {
		x := []float64{float64(i) * 0.5, 10 - float64(i), math.Sin(float64(i))}
		b.Begin(abi.KindReading, int64(1000+i), "env", "environment")
		b.Field("temperature_c", x[0])
		b.Field("pressure_hpa", x[1])
		b.Field("humidity_pct", x[2])
		b.End()
		rows = append(rows, []float32{float32(x[0]), float32(x[1]), float32(x[2])})
	}
	return b.Buf, rows
}

func decode(t *testing.T, batch []byte) []map[string]float64 {
	t.Helper()
	var out []map[string]float64
	it := abi.Iter{Buf: batch}
	for it.Next() {
		m := map[string]float64{"time": float64(it.Rec.TimeNS)}
		it.Rec.Fields(func(name []byte, v float64) { m[string(name)] = v })
		out = append(out, m)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestInfer scores batches through perch:infer/v1 from a C guest against ONNX Runtime and checks
// every score against the same model computed in Go.
func TestInfer(t *testing.T) {
	bin := buildInferGuest(t)
	s, w, b := testScorer(t, 4)
	e, err := NewEngine("", false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	inst := inferInstance(t, e, bin, "ok", []Model{{Name: "other"}, {Name: "env-ae", Scorer: s}})
	for _, n := range []int{1, 3, 4, 9, 200} { // under, at and over the session's batch of 4
		in, rows := readings(n)
		out, err := inst.Process(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		got := decode(t, out)
		if len(got) != n {
			t.Fatalf("%d rows: %d scores", n, len(got))
		}
		for i, r := range got {
			want := float64(onnx.ReconstructionScore(rows[i], w, b))
			if r["errno"] != 0 || r["time"] != float64(1000+i) || math.Abs(r["score"]-want) > 1e-5*math.Max(1, math.Abs(want)) {
				t.Errorf("%d rows: row %d: %v, want score %v", n, i, r, want)
			}
		}
	}
}

// TestInferErrnos checks the errnos a guest gets: a model not granted, granted but unavailable,
// and rows that are not whole.
func TestInferErrnos(t *testing.T) {
	bin := buildInferGuest(t)
	s, _, _ := testScorer(t, 4)
	e, err := NewEngine("", false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	for _, tc := range []struct {
		name   string
		models []Model
		want   abi.Errno
	}{
		{"not granted", nil, abi.EPERM},
		{"another model granted", []Model{{Name: "other", Scorer: s}}, abi.EPERM},
		{"unavailable", []Model{{Name: "env-ae"}}, abi.ENODEV},
	} {
		inst := inferInstance(t, e, bin, "ok", tc.models)
		in, _ := readings(2)
		out, err := inst.Process(context.Background(), in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := decode(t, out)
		if len(got) != 1 || abi.Errno(got[0]["errno"]) != tc.want {
			t.Errorf("%s: %v, want one record with errno %v", tc.name, got, tc.want)
		}
	}
}

// TestInferEINVAL calls infer directly through the host function with bad lengths.
func TestInferEINVAL(t *testing.T) {
	s, _, _ := testScorer(t, 4)
	i := &Instance{spec: &Spec{Grants: Grants{Models: []Model{{Name: "m", Scorer: s}}}}}
	for _, tc := range []struct {
		name              string
		id, inLen, outCap uint32
		want              abi.Errno
	}{
		{"partial row", 0, 4, 2, abi.EINVAL},
		{"too little room", 0, 6, 1, abi.EINVAL},
		{"too many rows", 0, 3 * (maxInferRows + 1), maxInferRows + 1, abi.EINVAL},
		{"nothing", 0, 0, 0, abi.OK},
		{"id past the grants", 1, 3, 1, abi.EPERM},
	} {
		// Pointers are never reached: every case returns before reading memory.
		stack := []uint64{uint64(tc.id), 0, uint64(tc.inLen), 0, uint64(tc.outCap)}
		i.infer(context.Background(), nil, stack)
		if got := abi.Errno(stack[0]); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestInferBadPointer checks that a pointer outside the guest's memory, given to open or to
// infer, closes the guest with reason bad_pointer.
func TestInferBadPointer(t *testing.T) {
	bin := buildInferGuest(t)
	s, _, _ := testScorer(t, 4)
	e, err := NewEngine("", false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	for _, mode := range []string{"badptr:open", "badptr:info", "badptr:in", "badptr:out"} {
		inst := inferInstance(t, e, bin, mode, []Model{{Name: "env-ae", Scorer: s}})
		in, _ := readings(2)
		_, err := inst.Process(context.Background(), in)
		var f *Fault
		if !errors.As(err, &f) || f.Reason != ReasonBadPointer {
			t.Errorf("%s: %v, want a %s fault", mode, err, ReasonBadPointer)
		}
	}
}

// BenchmarkInfer measures a batch of 64 readings through the C guest: the batch copied in, 64
// rows scored in one infer call (one ONNX Runtime run), 64 score records emitted.
func BenchmarkInfer(b *testing.B) {
	bin := buildInferGuest(b)
	s, _, _ := testScorer(b, 64)
	e, err := NewEngine("", false)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(context.Background())
	inst := inferInstance(b, e, bin, "ok", []Model{{Name: "env-ae", Scorer: s}})
	in, _ := readings(64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inst.Process(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/row")
}
