// Package quantize turns fp32 ONNX models into int8 ones: static, weight-only quantisation.
//
// # Overview
//
// Each weight matrix W (a 2-D float initializer that is a MatMul's second input) is stored as
// int8 Wq with one float scale per output column Ws (symmetric: the largest |w| of the column
// maps to 127) and int8 zero points Wz (all 0), and a DequantizeLinear(Wq, Ws, Wz, axis=1) node
// gives the float Wd that the MatMul reads. Inputs and activations stay float. This is the graph
// models/anomaly writes for its int8 models, and [Columns] is the one implementation of the
// arithmetic both use.
//
// # Usage
//
//	m, err := onnx.Read(fp32Bytes)
//	q, report, err := quantize.Weights(m)
//	b, err := q.Marshal()
//
// Functions here are pure: safe for concurrent use, and they do not modify their arguments.
package quantize

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/perch-edge/perch/models/onnx"
)

// ErrNoWeights reports a model with no float MatMul weight to quantise.
var ErrNoWeights = errors.New("quantize: no 2-D float initializer feeds a MatMul's second input")

// MinOpset is the lowest default-domain opset with per-axis DequantizeLinear.
const MinOpset = 13

// Columns quantises the row-major rows×cols matrix w to int8 (returned as bytes, two's
// complement), symmetric, one scale per column: q[i,j] = round(w[i,j]/s[j]) clamped to ±127,
// s[j] = max_i |w[i,j]| / 127 (1 for an all-zero column). w must be finite.
func Columns(w []float32, rows, cols int) (q []byte, scales []float32) {
	q = make([]byte, rows*cols)
	scales = make([]float32, cols)
	for j := range cols {
		var m float32
		for i := range rows {
			m = max(m, float32(math.Abs(float64(w[i*cols+j]))))
		}
		s := m / 127
		if s == 0 {
			s = 1
		}
		scales[j] = s
		for i := range rows {
			v := math.Round(float64(w[i*cols+j] / s))
			q[i*cols+j] = byte(int8(max(-127, min(127, v))))
		}
	}
	return q, scales
}

// Tensor is one quantised weight in a [Report].
type Tensor struct {
	Name       string  `json:"name"`
	Rows       int     `json:"rows"`
	Cols       int     `json:"cols"`
	BytesFP32  int     `json:"bytes_fp32"`   // 4 × rows × cols
	BytesInt8  int     `json:"bytes_int8"`   // rows × cols int8 + cols float scales + cols int8 zero points
	MaxAbsDiff float64 `json:"max_abs_diff"` // largest |w − dequantised w|
}

// Report says what [Weights] did.
type Report struct {
	Tensors []Tensor `json:"tensors"`
	// ModelBytesBefore and ModelBytesAfter are the serialized sizes of the two models.
	ModelBytesBefore int `json:"model_bytes_before"`
	ModelBytesAfter  int `json:"model_bytes_after"`
}

// Weights returns an int8 copy of the fp32 model m: every 2-D FLOAT initializer W that is the
// second input of a default-domain MatMul (and not also a graph input or output) becomes the
// initializers Wq, Wz, Ws in W's place, every use of W reads Wd instead, and the
// DequantizeLinear nodes producing each Wd are inserted, in initializer order, just before the
// first node that reads one of them. A doc string ending in ", fp32" ends in ", int8" instead
// (models/anomaly's convention). m is not modified; the result shares unchanged tensors with it.
//
// Errors: [ErrNoWeights] if there is nothing to quantise; the opset is below [MinOpset]; a
// weight has a NaN or infinite value; a name Weights would create is already in use.
func Weights(m *onnx.Model) (*onnx.Model, Report, error) {
	var rep Report
	if m == nil || m.Graph == nil {
		return nil, rep, errors.New("quantize: no graph")
	}
	before, err := m.Marshal()
	if err != nil {
		return nil, rep, fmt.Errorf("quantize: %w", err)
	}
	rep.ModelBytesBefore = len(before)
	if v := m.OpsetVersion; v != 0 && v < MinOpset {
		return nil, rep, fmt.Errorf("quantize: opset %d: per-column DequantizeLinear needs opset %d or later", v, MinOpset)
	}
	g := m.Graph
	io := map[string]bool{}
	for _, v := range g.Inputs {
		io[v.Name] = true
	}
	for _, v := range g.Outputs {
		io[v.Name] = true
	}
	used := map[string]bool{} // every value name in the graph
	for k := range io {
		used[k] = true
	}
	inits := map[string]int{}
	for i, t := range g.Initializers {
		inits[t.Name] = i
		used[t.Name] = true
	}
	for _, n := range g.Nodes {
		for _, s := range n.Inputs {
			used[s] = true
		}
		for _, s := range n.Outputs {
			used[s] = true
		}
	}
	weight := map[string]bool{}
	for _, n := range g.Nodes {
		if n.OpType != "MatMul" || (n.Domain != "" && n.Domain != "ai.onnx") || len(n.Inputs) < 2 {
			continue
		}
		name := n.Inputs[1]
		i, ok := inits[name]
		if !ok || io[name] {
			continue
		}
		if t := g.Initializers[i]; t.Type == onnx.Float && len(t.Dims) == 2 {
			weight[name] = true
		}
	}
	if len(weight) == 0 {
		return nil, rep, ErrNoWeights
	}
	var errs []error
	var newInits []onnx.Tensor
	var dq []onnx.Node
	for _, t := range g.Initializers {
		if !weight[t.Name] {
			newInits = append(newInits, t)
			continue
		}
		for _, suffix := range []string{"q", "z", "s", "d"} {
			if used[t.Name+suffix] {
				errs = append(errs, fmt.Errorf("quantize: weight %q: the name %q is already in use", t.Name, t.Name+suffix))
			}
		}
		w, err := t.FloatData()
		if err != nil {
			errs = append(errs, fmt.Errorf("quantize: %w", err))
			continue
		}
		rows, cols := int(t.Dims[0]), int(t.Dims[1])
		if int64(rows)*int64(cols) != int64(len(w)) || rows < 0 || cols < 0 {
			errs = append(errs, fmt.Errorf("quantize: weight %q: dims %v do not match its %d values", t.Name, t.Dims, len(w)))
			continue
		}
		if i := nonFinite(w); i >= 0 {
			errs = append(errs, fmt.Errorf("quantize: weight %q: value %d is %v", t.Name, i, w[i]))
			continue
		}
		q, sc := Columns(w, rows, cols)
		var worst float64
		for i, v := range q {
			worst = max(worst, math.Abs(float64(w[i])-float64(float32(int8(v))*sc[i%cols])))
		}
		c := int64(cols)
		newInits = append(newInits,
			onnx.Tensor{Name: t.Name + "q", Type: onnx.Int8, Dims: []int64{int64(rows), c}, Raw: q},
			onnx.Tensor{Name: t.Name + "z", Type: onnx.Int8, Dims: []int64{c}, Raw: make([]byte, cols)},
			onnx.Tensor{Name: t.Name + "s", Type: onnx.Float, Dims: []int64{c}, Floats: sc})
		dq = append(dq, onnx.Node{OpType: "DequantizeLinear", Inputs: []string{t.Name + "q", t.Name + "s", t.Name + "z"},
			Outputs: []string{t.Name + "d"}, Attrs: []onnx.Attr{onnx.AttrInt("axis", 1)}})
		rep.Tensors = append(rep.Tensors, Tensor{Name: t.Name, Rows: rows, Cols: cols, BytesFP32: 4 * rows * cols,
			BytesInt8: rows*cols + 5*cols, MaxAbsDiff: worst})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, rep, err
	}
	var nodes []onnx.Node
	for _, n := range g.Nodes {
		reads := false
		var in []string
		for _, s := range n.Inputs {
			if weight[s] {
				reads = true
				s += "d"
			}
			in = append(in, s)
		}
		if reads {
			n.Inputs = in
			if dq != nil {
				nodes, dq = append(nodes, dq...), nil
			}
		}
		nodes = append(nodes, n)
	}
	out := *m
	ng := *g
	ng.Initializers, ng.Nodes = newInits, nodes
	out.Graph = &ng
	if s, ok := strings.CutSuffix(out.DocString, ", "+"fp32"); ok {
		out.DocString = s + ", int8"
	}
	after, err := out.Marshal()
	if err != nil {
		return nil, rep, fmt.Errorf("quantize: %w", err)
	}
	rep.ModelBytesAfter = len(after)
	return &out, rep, nil
}

// nonFinite is the index of the first NaN or infinite value of w, or -1.
func nonFinite(w []float32) int {
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}
