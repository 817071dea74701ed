package anomaly

import (
	"fmt"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/models/quantize"
)

// Card returns the model card for d's model at precision (card.FP32 or card.Int8). Model and
// SHA256 are left empty: card.Write fills them from the model bytes.
func (d *Detector) Card(name, precision string) *card.Card {
	o := d.Options
	params := map[string]float64{
		"window": float64(d.Window), "variance": o.Variance, "ridge": o.Ridge, "components": float64(d.Components),
		"min_std": o.MinStd, "quantile": o.Quantile, "factor": o.Factor, "clear": o.Clear,
	}
	if d.Sqrt {
		params["sqrt"] = 1
	}
	if d.AE != nil {
		delete(params, "variance")
		delete(params, "ridge")
		delete(params, "components")
		params["hidden"] = float64(d.AE.Hidden)
		params["epochs"] = float64(o.Epochs)
		params["learning_rate"] = o.LearningRate
		params["seed"] = float64(o.Seed)
	}
	return &card.Card{
		Name:      name,
		Version:   "1",
		Precision: precision,
		Detector:  d.Kind,
		Features:  append([]string(nil), d.Features...),
		Window:    d.Window,
		Normalization: card.Normalization{
			Mean: append([]float64(nil), d.Mean...),
			Std:  append([]float64(nil), d.Std...),
		},
		Score: card.Score{Smooth: o.Smooth, Threshold: d.Threshold, Clear: d.Clear, Consecutive: o.Consecutive},
		Training: card.Training{
			Data:   fmt.Sprintf("%d samples of normal operation", d.TrainRows),
			SHA256: d.TrainSHA256,
			Rows:   d.TrainRows,
			Params: params,
		},
	}
}

// ONNX returns the serialized ONNX model of d at precision card.FP32 or card.Int8. Input "x" is
// float [N, Inputs()] (normalised rows), output "score" float [N].
//
// fp32, PCA: score = ReduceSum(((x − Center)·W)², axis 1) (then Sqrt if d.Sqrt). Autoencoder:
// d = x − Center, score = Scale·ReduceSum((d − (tanh(d·W1 + B1)·W2 + B2))²) (then Sqrt).
//
// int8 (static QDQ on the weights): each weight matrix is stored as int8 with one scale per
// output column (symmetric, zero point 0, scales fixed at export) and goes through
// DequantizeLinear before its MatMul; the input stays float. ONNX Runtime runs that
// DequantizeLinear on every call (about 5× the fp32 latency at batch 1, see README.md). Quantising the input as well was tried and rejected: Q measures
// small departures from the training correlations (the residual directions have standard
// deviations of a few hundredths of the input's), and one int8 scale that also covers the
// inputs' range adds noise of the same size, which made scores differ by up to 200 %.
func (d *Detector) ONNX(precision string) ([]byte, error) { return d.onnx(precision, qdqWeights) }

// int8 graph forms; ONNX ships qdqWeights, the others are kept for measurement (ort_test.go).
const (
	// qdqWeights: DequantizeLinear(int8 W) feeds a float MatMul.
	qdqWeights = iota
	// qdqFull: the input deviation also goes through an int8 QuantizeLinear/DequantizeLinear
	// pair (scale: the largest training |x − Center| × inputHeadroom, over 127).
	qdqFull
	// castWeights: W = Cast(int8 W, float) × scales, which ONNX Runtime's constant folding
	// turns into a float initializer at load (it leaves DequantizeLinear alone for its QDQ
	// fusions).
	castWeights
)

// onnx builds the model; form picks the int8 graph.
func (d *Detector) onnx(precision string, form int) ([]byte, error) {
	n := int64(d.Inputs())
	g := &onnx.Graph{Name: d.Kind}
	g.Input("x", onnx.Float, onnx.Sym("N"), onnx.Fixed(n))
	g.FloatInit("c", []int64{n}, d.Center)
	g.Int64Init("axes", []int64{1}, []int64{1})
	node := func(op string, in, out []string, attrs ...onnx.Attr) {
		g.Nodes = append(g.Nodes, onnx.Node{OpType: op, Inputs: in, Outputs: out, Attrs: attrs})
	}
	node("Sub", []string{"x", "c"}, []string{"d"})
	if precision != card.FP32 && precision != card.Int8 {
		return nil, fmt.Errorf("anomaly: onnx: precision %q is not %s or %s", precision, card.FP32, card.Int8)
	}
	// weight adds the rows×cols matrix w and returns the name of its float value: the
	// initializer itself (fp32) or its DequantizeLinear (int8).
	weight := func(name string, rows, cols int, w []float32) string {
		if precision == card.FP32 {
			g.FloatInit(name, []int64{int64(rows), int64(cols)}, w)
			return name
		}
		q, sc := quantize.Columns(w, rows, cols)
		g.Initializers = append(g.Initializers,
			onnx.Tensor{Name: name + "q", Type: onnx.Int8, Dims: []int64{int64(rows), int64(cols)}, Raw: q},
			onnx.Tensor{Name: name + "z", Type: onnx.Int8, Dims: []int64{int64(cols)}, Raw: make([]byte, cols)})
		g.FloatInit(name+"s", []int64{int64(cols)}, sc)
		if form == castWeights {
			node("Cast", []string{name + "q"}, []string{name + "f"}, onnx.AttrInt("to", int64(onnx.Float)))
			node("Mul", []string{name + "f", name + "s"}, []string{name + "d"})
		} else {
			node("DequantizeLinear", []string{name + "q", name + "s", name + "z"}, []string{name + "d"}, onnx.AttrInt("axis", 1))
		}
		return name + "d"
	}
	in := "d"
	if precision == card.Int8 && form == qdqFull {
		g.Initializers = append(g.Initializers, onnx.Tensor{Name: "z0", Type: onnx.Int8, Dims: []int64{}, Raw: []byte{0}})
		g.FloatInit("xs", []int64{}, []float32{float32(max(d.InputRange, 1e-6) * inputHeadroom / 127)})
		node("QuantizeLinear", []string{"d", "xs", "z0"}, []string{"dq"})
		node("DequantizeLinear", []string{"dq", "xs", "z0"}, []string{"dd"})
		in = "dd"
	}
	sum := "ss" // the unscaled sum of squares
	if ae := d.AE; ae != nil {
		w1 := weight("W1", int(n), ae.Hidden, ae.W1)
		w2 := weight("W2", ae.Hidden, int(n), ae.W2)
		g.FloatInit("b1", []int64{int64(ae.Hidden)}, ae.B1)
		g.FloatInit("b2", []int64{n}, ae.B2)
		g.FloatInit("k", []int64{}, []float32{float32(ae.Scale)})
		node("MatMul", []string{in, w1}, []string{"a0"})
		node("Add", []string{"a0", "b1"}, []string{"a"})
		node("Tanh", []string{"a"}, []string{"h"})
		node("MatMul", []string{"h", w2}, []string{"y0"})
		node("Add", []string{"y0", "b2"}, []string{"y"})
		node("Sub", []string{in, "y"}, []string{"p"})
		sum = "ss0"
	} else {
		node("MatMul", []string{in, weight("W", int(n), int(n), d.W)}, []string{"p"})
	}
	node("Mul", []string{"p", "p"}, []string{"sq"})
	// ReduceSum, then Mul by the AE's scale, then Sqrt: whichever is last writes "score".
	name := func(s string, last bool) string {
		if last {
			return "score"
		}
		return s
	}
	scaled := d.AE != nil
	node("ReduceSum", []string{"sq", "axes"}, []string{name(sum, !scaled && !d.Sqrt)}, onnx.AttrInt("keepdims", 0))
	if scaled {
		node("Mul", []string{sum, "k"}, []string{name("ss", !d.Sqrt)})
	}
	if d.Sqrt {
		node("Sqrt", []string{"ss"}, []string{"score"})
	}
	g.Output("score", onnx.Float, onnx.Sym("N"))
	m := &onnx.Model{Graph: g, DocString: fmt.Sprintf("%s anomaly score, %s", d.Kind, precision)}
	return m.Marshal()
}

// inputHeadroom is how far past the training range the quantised input reaches.
const inputHeadroom = 2
