package quantize_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/perch-edge/perch/models/anomaly"
	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/internal/modeltest"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/models/quantize"
)

func TestColumns(t *testing.T) {
	// Columns: [1, 0.25] (scale 1/127), [-1, 4] (scale 4/127), [0, 0] (scale 1).
	q, sc := quantize.Columns([]float32{1, -1, 0, 0.25, 4, 0}, 2, 3)
	if want := []byte{127, 0xe0, 0, 32, 127, 0}; !bytes.Equal(q, want) {
		t.Errorf("q = %v, want %v", q, want)
	}
	if want := []float32{1.0 / 127, 4.0 / 127, 1}; !reflect.DeepEqual(sc, want) {
		t.Errorf("scales = %v, want %v", sc, want)
	}
}

// TestQuantizeMatchesExport quantises every fp32 model models/anomaly exports and checks the
// result is byte for byte the int8 model it exports for the same detector.
func TestQuantizeMatchesExport(t *testing.T) {
	for _, d := range modeltest.Detectors(t) {
		t.Run(fmt.Sprintf("%s/window=%d/sqrt=%v", d.Kind, d.Window, d.Sqrt), func(t *testing.T) {
			fp, err := d.ONNX(card.FP32)
			if err != nil {
				t.Fatal(err)
			}
			want, err := d.ONNX(card.Int8)
			if err != nil {
				t.Fatal(err)
			}
			m, err := onnx.Read(fp)
			if err != nil {
				t.Fatal(err)
			}
			q, rep, err := quantize.Weights(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := q.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				wm, _ := onnx.Read(want)
				t.Errorf("quantised model (%d bytes) differs from the exported int8 model (%d bytes)\n got nodes %v\nwant nodes %v",
					len(got), len(want), ops(q), ops(wm))
			}
			names := []string{"W"}
			if d.AE != nil {
				names = []string{"W1", "W2"}
			}
			if len(rep.Tensors) != len(names) || rep.ModelBytesBefore != len(fp) || rep.ModelBytesAfter != len(got) {
				t.Errorf("report = %+v", rep)
			}
			for i, tr := range rep.Tensors {
				if tr.Name != names[i] || tr.BytesFP32 != 4*tr.Rows*tr.Cols || tr.BytesInt8 != tr.Rows*tr.Cols+5*tr.Cols || tr.MaxAbsDiff <= 0 {
					t.Errorf("report tensor %d = %+v", i, tr)
				}
			}
			// m itself is untouched.
			if again, err := m.Marshal(); err != nil || !bytes.Equal(again, fp) {
				t.Errorf("Weights modified its argument")
			}
		})
	}
}

func ops(m *onnx.Model) []string {
	var s []string
	for _, n := range m.Graph.Nodes {
		s = append(s, n.OpType+"("+strings.Join(n.Inputs, ",")+")")
	}
	return s
}

// TestQuantizeSize: the default recipe's shape (8 features, window 10, like SKAB) quantises to at
// most a third of the fp32 bytes.
func TestQuantizeSize(t *testing.T) {
	rows, names := modeltest.Correlated(2, 600, 8)
	d, err := anomaly.Fit(rows, names, anomaly.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	fp, err := d.ONNX(card.FP32)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Read(fp)
	if err != nil {
		t.Fatal(err)
	}
	q, rep, err := quantize.Weights(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d inputs: fp32 %d bytes, int8 %d bytes, ratio %.3f; W %d→%d bytes, max |Δw| %.3g",
		d.Inputs(), len(fp), len(b), float64(len(b))/float64(len(fp)), rep.Tensors[0].BytesFP32, rep.Tensors[0].BytesInt8, rep.Tensors[0].MaxAbsDiff)
	if d.Inputs() != 80 {
		t.Fatalf("inputs = %d, want 80", d.Inputs())
	}
	if 3*len(b) > len(fp) {
		t.Errorf("int8 %d bytes > 1/3 of fp32 %d bytes", len(b), len(fp))
	}
}

// TestQuantizeScorerORT quantises a model whose weight is read first thing, runs fp32 and int8 in
// ONNX Runtime, and checks the int8 scores against the Go reference with dequantised weights.
func TestQuantizeScorerORT(t *testing.T) {
	if err := ort.Init(""); err != nil {
		t.Skipf("ONNX Runtime library not available (run `make ort`): %v", err)
	}
	const f = 6
	r := rand.New(rand.NewPCG(3, 3))
	w, b := make([]float32, f*f), make([]float32, f)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	for i := range b {
		b[i] = float32(r.NormFloat64())
	}
	m, err := onnx.ReconstructionScorer(f, w, b)
	if err != nil {
		t.Fatal(err)
	}
	q, rep, err := quantize.Weights(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := ops(q); got[0] != "DequantizeLinear(Wq,Ws,Wz)" || got[1] != "MatMul(x,Wd)" {
		t.Errorf("nodes = %v", got)
	}
	model, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(model, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := make([][]float32, 50)
	for i := range x {
		x[i] = make([]float32, f)
		for j := range x[i] {
			x[i][j] = float32(r.NormFloat64())
		}
	}
	got, err := s.Score(x)
	if err != nil {
		t.Fatal(err)
	}
	qb, sc := quantize.Columns(w, f, f)
	dw := make([]float32, len(w))
	for i, v := range qb {
		dw[i] = float32(int8(v)) * sc[i%f]
	}
	var worst, worstFP float64
	for i, row := range x {
		want := float64(onnx.ReconstructionScore(row, dw, b))
		rel := math.Abs(float64(got[i])-want) / max(want, 1e-3)
		worst = max(worst, rel)
		if rel > 1e-4 {
			t.Errorf("row %d: int8 model %v, Go with dequantised W %v", i, got[i], want)
		}
		fp := float64(onnx.ReconstructionScore(row, w, b))
		worstFP = max(worstFP, math.Abs(float64(got[i])-fp)/fp)
	}
	t.Logf("int8 vs dequantised reference: worst relative error %.2g; vs fp32 %.2g; max |Δw| %.3g", worst, worstFP, rep.Tensors[0].MaxAbsDiff)
}

func TestQuantizeErrors(t *testing.T) {
	scorer := func() *onnx.Model {
		m, err := onnx.ReconstructionScorer(2, []float32{1, 0, 0, 1}, []float32{0, 0})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	old := scorer()
	old.OpsetVersion = 11
	nan := scorer()
	nan.Graph.Initializers[0].Floats[1] = float32(math.NaN())
	taken := scorer()
	taken.Graph.Nodes[0].Outputs[0] = "Wd"
	noMatMul := scorer()
	noMatMul.Graph.Nodes[0].OpType = "Gemm"
	input := scorer() // W is also a graph input: overridable, left alone
	input.Graph.Input("W", onnx.Float, onnx.Fixed(2), onnx.Fixed(2))
	for _, c := range []struct {
		name string
		m    *onnx.Model
		want string
	}{
		{"nil", nil, "no graph"},
		{"opset", old, "opset 11"},
		{"nan", nan, `weight "W": value 1 is NaN`},
		{"taken", taken, `"Wd" is already in use`},
		{"no matmul", noMatMul, "no 2-D float initializer"},
		{"input", input, "no 2-D float initializer"},
	} {
		_, _, err := quantize.Weights(c.m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	if _, _, err := quantize.Weights(noMatMul); !errors.Is(err, quantize.ErrNoWeights) {
		t.Errorf("err = %v, want ErrNoWeights", err)
	}
}
