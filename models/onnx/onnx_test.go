package onnx

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// fields decodes one protobuf message level: field number → raw values (varints as uint64,
// length-delimited as []byte, fixed32 as uint32).
func fields(t *testing.T, b []byte) map[protowire.Number][]any {
	t.Helper()
	out := map[protowire.Number][]any{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var v any
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.Fixed32Type:
			v, n = protowire.ConsumeFixed32(b)
		default:
			t.Fatalf("unexpected wire type %d for field %d", typ, num)
		}
		if n < 0 {
			t.Fatalf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		out[num] = append(out[num], v)
	}
	return out
}

func TestReconstructionScorerEncoding(t *testing.T) {
	w := []float32{1, 0, 0, 0, 1, 0, 0, 0, 1}
	m, err := ReconstructionScorer(3, w, []float32{0.5, -1, 2})
	if err != nil {
		t.Fatal(err)
	}
	m.MetadataProps = map[string]string{"b": "2", "a": "1"}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	model := fields(t, raw)
	if got := model[1][0].(uint64); got != IRVersion {
		t.Errorf("ir_version = %d, want %d", got, IRVersion)
	}
	if got := string(model[2][0].([]byte)); got != "perch" {
		t.Errorf("producer_name = %q", got)
	}
	opset := fields(t, model[8][0].([]byte))
	if got := opset[2][0].(uint64); got != Opset {
		t.Errorf("opset version = %d, want %d", got, Opset)
	}
	if len(model[14]) != 2 || string(fields(t, model[14][0].([]byte))[1][0].([]byte)) != "a" {
		t.Errorf("metadata_props not written in key order")
	}
	graph := fields(t, model[7][0].([]byte))
	if got := string(graph[2][0].([]byte)); got != "reconstruction_scorer" {
		t.Errorf("graph name = %q", got)
	}
	var ops []string
	for _, n := range graph[1] {
		ops = append(ops, string(fields(t, n.([]byte))[4][0].([]byte)))
	}
	want := []string{"MatMul", "Add", "Sub", "Mul", "ReduceSum"}
	if len(ops) != len(want) {
		t.Fatalf("ops = %v, want %v", ops, want)
	}
	for i := range want {
		if ops[i] != want[i] {
			t.Errorf("op %d = %s, want %s", i, ops[i], want[i])
		}
	}
	// ReduceSum's keepdims attribute: INT 0.
	attr := fields(t, fields(t, graph[1][4].([]byte))[5][0].([]byte))
	if string(attr[1][0].([]byte)) != "keepdims" || attr[3][0].(uint64) != 0 || attr[20][0].(uint64) != attrInt {
		t.Errorf("keepdims attribute = %v", attr)
	}
	// Initializer W: dims [3 3], FLOAT, packed float_data.
	init := fields(t, graph[5][0].([]byte))
	if string(init[8][0].([]byte)) != "W" || init[2][0].(uint64) != uint64(Float) {
		t.Errorf("first initializer = %v", init)
	}
	dims := init[1][0].([]byte)
	if len(dims) != 2 || dims[0] != 3 || dims[1] != 3 {
		t.Errorf("W dims = %v", dims)
	}
	fd := init[4][0].([]byte)
	if len(fd) != 4*9 || math.Float32frombits(uint32(fd[16])|uint32(fd[17])<<8|uint32(fd[18])<<16|uint32(fd[19])<<24) != 1 {
		t.Errorf("W float_data = %v", fd)
	}
	// Input x: tensor FLOAT [N, 3].
	in := fields(t, graph[11][0].([]byte))
	tt := fields(t, fields(t, in[2][0].([]byte))[1][0].([]byte))
	if tt[1][0].(uint64) != uint64(Float) {
		t.Errorf("x elem_type = %v", tt[1])
	}
	shape := fields(t, tt[2][0].([]byte))
	if len(shape[1]) != 2 {
		t.Fatalf("x rank = %d", len(shape[1]))
	}
	if d := fields(t, shape[1][0].([]byte)); string(d[2][0].([]byte)) != "N" {
		t.Errorf("x dim 0 = %v, want param N", d)
	}
	if d := fields(t, shape[1][1].([]byte)); d[1][0].(uint64) != 3 {
		t.Errorf("x dim 1 = %v, want 3", d)
	}
	// Output score: [N].
	out := fields(t, graph[12][0].([]byte))
	if string(out[1][0].([]byte)) != "score" {
		t.Errorf("output name = %q", out[1][0])
	}
}

func TestMarshalInvalid(t *testing.T) {
	for name, m := range map[string]*Model{
		"no graph":     {},
		"no io":        {Graph: &Graph{}},
		"short floats": {Graph: &Graph{Inputs: []ValueInfo{{Name: "x"}}, Outputs: []ValueInfo{{Name: "y"}}, Initializers: []Tensor{{Name: "W", Type: Float, Dims: []int64{2, 2}, Floats: []float32{1}}}}},
		"int8 no raw":  {Graph: &Graph{Inputs: []ValueInfo{{Name: "x"}}, Outputs: []ValueInfo{{Name: "y"}}, Initializers: []Tensor{{Name: "q", Type: Int8, Dims: []int64{1}}}}},
	} {
		if _, err := m.Marshal(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := ReconstructionScorer(2, []float32{1}, []float32{0, 0}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad W: err = %v", err)
	}
}

func TestReconstructionScore(t *testing.T) {
	// Identity W, zero b: the reconstruction is exact.
	if s := ReconstructionScore([]float32{1, 2}, []float32{1, 0, 0, 1}, []float32{0, 0}); s != 0 {
		t.Errorf("identity score = %v", s)
	}
	// Zero W, zero b: the score is |x|².
	if s := ReconstructionScore([]float32{3, 4}, []float32{0, 0, 0, 0}, []float32{0, 0}); s != 25 {
		t.Errorf("zero-W score = %v, want 25", s)
	}
}
