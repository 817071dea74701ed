// Package modeltest makes the data and detectors the models packages' tests share: correlated
// samples and one detector of every kind and graph form models/anomaly exports. It is
// imported by tests only.
package modeltest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/perch-edge/perch/models/anomaly"
)

// Correlated returns n samples of f features driven by two latent factors plus noise, and the
// features' names f0, f1, ...
func Correlated(seed uint64, n, f int) ([][]float64, []string) {
	r := rand.New(rand.NewPCG(seed, 7))
	rows := make([][]float64, n)
	var a, b float64
	for i := range rows {
		a = 0.9*a + r.NormFloat64()
		b = 0.5*b + r.NormFloat64()
		rows[i] = make([]float64, f)
		for j := range f {
			rows[i][j] = float64(10*j) + float64(j%3)*a - float64(j%2)*b + 0.1*r.NormFloat64()
		}
	}
	names := make([]string, f)
	for j := range names {
		names[j] = fmt.Sprintf("f%d", j)
	}
	return rows, names
}

// Detectors fits, on 400 correlated samples of 5 features, a PCA detector with and without a
// window and the square root, and an autoencoder with and without the square root: every graph
// form models/anomaly writes.
func Detectors(t testing.TB) []*anomaly.Detector {
	t.Helper()
	rows, names := Correlated(1, 400, 5)
	var out []*anomaly.Detector
	for _, o := range []anomaly.Options{
		{Window: 1},
		{Window: 3, Sqrt: true},
		{Detector: anomaly.KindAE, Window: 2, Hidden: 4, Epochs: 20},
		{Detector: anomaly.KindAE, Window: 2, Hidden: 3, Epochs: 20, Sqrt: true},
	} {
		d, err := anomaly.Fit(rows, names, o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}
