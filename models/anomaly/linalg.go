package anomaly

import (
	"math"
	"sort"
)

// symEigen returns the eigenvalues (descending) and eigenvectors (columns of vecs, row-major
// n×n) of the symmetric n×n matrix a (row-major; not modified), by cyclic Jacobi rotations. It
// stops when the off-diagonal mass is below 1e-12 of the total, or after 100 sweeps.
func symEigen(a []float64, n int) (vals, vecs []float64) {
	m := append([]float64(nil), a...)
	v := make([]float64, n*n)
	for i := range n {
		v[i*n+i] = 1
	}
	var total float64
	for _, x := range m {
		total += x * x
	}
	for sweep := 0; sweep < 100; sweep++ {
		var off float64
		for p := range n {
			for q := p + 1; q < n; q++ {
				off += m[p*n+q] * m[p*n+q]
			}
		}
		if off <= 1e-24*total || off == 0 {
			break
		}
		for p := range n {
			for q := p + 1; q < n; q++ {
				apq := m[p*n+q]
				if math.Abs(apq) < 1e-300 {
					continue
				}
				app, aqq := m[p*n+p], m[q*n+q]
				theta := (aqq - app) / (2 * apq)
				t := 1 / (math.Abs(theta) + math.Sqrt(theta*theta+1))
				if theta < 0 {
					t = -t
				}
				c := 1 / math.Sqrt(t*t+1)
				s := t * c
				// Rotate rows/columns p and q of m (kept symmetric).
				for k := range n {
					mkp, mkq := m[k*n+p], m[k*n+q]
					m[k*n+p] = c*mkp - s*mkq
					m[k*n+q] = s*mkp + c*mkq
				}
				for k := range n {
					mpk, mqk := m[p*n+k], m[q*n+k]
					m[p*n+k] = c*mpk - s*mqk
					m[q*n+k] = s*mpk + c*mqk
				}
				for k := range n {
					vkp, vkq := v[k*n+p], v[k*n+q]
					v[k*n+p] = c*vkp - s*vkq
					v[k*n+q] = s*vkp + c*vkq
				}
			}
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return m[order[i]*n+order[i]] > m[order[j]*n+order[j]] })
	vals = make([]float64, n)
	vecs = make([]float64, n*n)
	for j, o := range order {
		vals[j] = m[o*n+o]
		for k := range n {
			vecs[k*n+j] = v[k*n+o]
		}
	}
	return vals, vecs
}

// quantile returns the q-quantile (0 ≤ q ≤ 1) of xs by linear interpolation between order
// statistics (numpy's default). xs is not modified.
func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(s)-1)
	i := int(math.Floor(pos))
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	f := pos - float64(i)
	return s[i]*(1-f) + s[i+1]*f
}

// movingAverage returns the causal moving average of xs over the last k values (fewer at the
// start), as card.Alarm computes it.
func movingAverage(xs []float64, k int) []float64 {
	out := make([]float64, len(xs))
	var sum float64
	for i, x := range xs {
		sum += x
		if i >= k {
			sum -= xs[i-k]
		}
		out[i] = sum / float64(min(i+1, k))
	}
	return out
}
