package onnx

import "fmt"

// ReconstructionScorer builds the model score = Σⱼ ((x·W + b − x)ⱼ)², one score per row of x: the
// squared reconstruction error of a linear autoencoder, or PCA's Q statistic (SPE) when W = P·Pᵀ
// and b = μ − μ·W. Input "x" is float [N, features], output "score" is float [N]; w is row-major
// [features, features] and b has features entries.
func ReconstructionScorer(features int, w, b []float32) (*Model, error) {
	f := int64(features)
	if features <= 0 || len(w) != features*features || len(b) != features {
		return nil, fmt.Errorf("%w: reconstruction scorer: %d features need W of %d and b of %d values, got %d and %d",
			ErrInvalid, features, features*features, features, len(w), len(b))
	}
	g := &Graph{Name: "reconstruction_scorer"}
	g.Input("x", Float, Sym("N"), Fixed(f))
	g.FloatInit("W", []int64{f, f}, w)
	g.FloatInit("b", []int64{f}, b)
	g.Int64Init("axes", []int64{1}, []int64{1})
	g.Node("MatMul", []string{"x", "W"}, []string{"xw"})
	g.Node("Add", []string{"xw", "b"}, []string{"recon"})
	g.Node("Sub", []string{"recon", "x"}, []string{"diff"})
	g.Node("Mul", []string{"diff", "diff"}, []string{"sq"})
	g.Node("ReduceSum", []string{"sq", "axes"}, []string{"score"}, AttrInt("keepdims", 0))
	g.Output("score", Float, Sym("N"))
	return &Model{Graph: g, DocString: "squared reconstruction error per row"}, nil
}

// ReconstructionScore computes, in Go, what [ReconstructionScorer]'s model computes for one row,
// in float32 with the same operation order (a reference for tests and for hosts without the
// library).
func ReconstructionScore(x, w, b []float32) float32 {
	n := len(x)
	var s float32
	for j := 0; j < n; j++ {
		var r float32
		for i := 0; i < n; i++ {
			r += x[i] * w[i*n+j]
		}
		d := r + b[j] - x[j]
		s += d * d
	}
	return s
}
