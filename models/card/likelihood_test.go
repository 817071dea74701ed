package card

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestLikelihood(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	l, err := NewLikelihood(LikelihoodOptions{Short: 1, History: 500, Holdoff: 50}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var maxQuiet float64
	for i := range 2000 {
		s := l.Step([]float64{0}, 0.5+0.1*rng.Float64())
		if s < 0 || s > 1 {
			t.Fatalf("sample %d: score %v outside [0, 1]", i, s)
		}
		if i > 600 {
			maxQuiet = max(maxQuiet, s)
		}
	}
	if maxQuiet > 0.5 {
		t.Errorf("stationary raw scores reached %v, want below the red level 0.5", maxQuiet)
	}
	// A sustained jump: one extreme score, then the holdoff lowers the next ones.
	var scores []float64
	for range 40 {
		scores = append(scores, l.Step([]float64{0}, 50))
	}
	if scores[0] < 0.9 {
		t.Errorf("first score of a 100× jump is %v, want ≥ 0.9", scores[0])
	}
	for i, s := range scores[1:] {
		if s > 0.5 {
			t.Errorf("score %d of a sustained jump is %v: want it held off below 0.5", i+1, s)
			break
		}
	}
	// Spatial: a value outside the range seen scores 1.
	sp, _ := NewLikelihood(LikelihoodOptions{Spatial: 0.05}, 1)
	for i := range 100 {
		sp.Step([]float64{float64(i % 10)}, 0.5)
	}
	if s := sp.Step([]float64{5}, 0.5); s == 1 {
		t.Errorf("value inside the range scored 1")
	}
	if s := sp.Step([]float64{20}, 0.5); s != 1 {
		t.Errorf("value 20 beyond the range [0, 9] scored %v, want 1", s)
	}
	one := []float64{1}
	if a := testing.AllocsPerRun(100, func() { l.Step(one, 0.5) }); a != 0 {
		t.Errorf("Step allocates %v times per call, want 0", a)
	}
}

func TestLikelihoodOptionsErrors(t *testing.T) {
	for _, o := range []LikelihoodOptions{{Short: -1}, {History: 1}, {Eps: -1}, {MinStd: math.Inf(1)}, {Holdoff: -2}, {Spatial: math.NaN()}} {
		if _, err := NewLikelihood(o, 1); err == nil || !strings.Contains(err.Error(), "score.likelihood.") {
			t.Errorf("%+v: error %v, want one naming the bad option", o, err)
		}
	}
}

// BenchmarkLikelihoodStep is the per-sample cost of the host post-processing.
func BenchmarkLikelihoodStep(b *testing.B) {
	l, err := NewLikelihood(DefaultLikelihoodOptions(), 1)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	raw := make([]float64, 4096)
	for i := range raw {
		raw[i] = 0.5 + 0.2*rng.NormFloat64()
	}
	b.ReportAllocs()
	sample := []float64{0}
	for i := 0; b.Loop(); i++ {
		sample[0] = float64(i % 100)
		l.Step(sample, raw[i%len(raw)])
	}
}
