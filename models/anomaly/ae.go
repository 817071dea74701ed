package anomaly

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// KindAE is the detector kind of the autoencoder.
const KindAE = "autoencoder"

// Autoencoder is a one-hidden-layer autoencoder on the centred input row d = x − Center:
//
//	h = tanh(d·W1 + B1),  y = h·W2 + B2,  score = Scale · Σⱼ (dⱼ − yⱼ)²
//
// (then the square root if the detector's Sqrt is set). W1 is Inputs()×Hidden and W2
// Hidden×Inputs(), row-major; Scale makes the training mean of the sum 1.
type Autoencoder struct {
	Hidden int
	W1, B1 []float32
	W2, B2 []float32
	Scale  float64
}

// fitAE trains d.AE on the normalised input rows x with Adam on the mean squared reconstruction
// error, full batch, deterministically (seeded from d.Options.Seed).
func (d *Detector) fitAE(x [][]float32) error {
	o := d.Options
	n, hid := d.Inputs(), o.Hidden
	center := make([]float64, n)
	for _, r := range x {
		for j, v := range r {
			center[j] += float64(v)
		}
	}
	d.Center = make([]float32, n)
	for j := range center {
		center[j] /= float64(len(x))
		d.Center[j] = float32(center[j])
	}
	rows := len(x)
	dev := make([]float64, rows*n)
	for i, r := range x {
		for j, v := range r {
			dev[i*n+j] = float64(v) - center[j]
		}
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	// Parameters, flat: W1 (n×hid), B1 (hid), W2 (hid×n), B2 (n).
	nw1, nw2 := n*hid, hid*n
	params := make([]float64, nw1+hid+nw2+n)
	w1, b1 := params[:nw1], params[nw1:nw1+hid]
	w2, b2 := params[nw1+hid:nw1+hid+nw2], params[nw1+hid+nw2:]
	lim := math.Sqrt(6 / float64(n+hid)) // Glorot uniform
	for i := range w1 {
		w1[i] = lim * (2*rng.Float64() - 1)
	}
	for i := range w2 {
		w2[i] = lim * (2*rng.Float64() - 1)
	}
	grad := make([]float64, len(params))
	g1, gb1 := grad[:nw1], grad[nw1:nw1+hid]
	g2, gb2 := grad[nw1+hid:nw1+hid+nw2], grad[nw1+hid+nw2:]
	m, v := make([]float64, len(params)), make([]float64, len(params))
	h := make([]float64, rows*hid)
	dy := make([]float64, n)
	dh := make([]float64, hid)
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	lr := o.LearningRate
	var loss float64
	for epoch := 1; epoch <= o.Epochs; epoch++ {
		clear(grad)
		loss = 0
		norm := 1 / float64(rows*n)
		for i := range rows {
			di := dev[i*n : (i+1)*n]
			hi := h[i*hid : (i+1)*hid]
			copy(hi, b1)
			for a, da := range di {
				for k, w := range w1[a*hid : (a+1)*hid] {
					hi[k] += da * w
				}
			}
			for k := range hi {
				hi[k] = math.Tanh(hi[k])
			}
			copy(dy, b2)
			for k, hk := range hi {
				for j, w := range w2[k*n : (k+1)*n] {
					dy[j] += hk * w
				}
			}
			for j := range dy {
				e := dy[j] - di[j]
				loss += e * e * norm
				dy[j] = 2 * e * norm // dL/dy
			}
			for j := range n {
				gb2[j] += dy[j]
			}
			for k, hk := range hi {
				var s float64
				row := w2[k*n : (k+1)*n]
				grow := g2[k*n : (k+1)*n]
				for j, g := range dy {
					grow[j] += hk * g
					s += row[j] * g
				}
				dh[k] = s * (1 - hk*hk) // through tanh
			}
			for k := range hid {
				gb1[k] += dh[k]
			}
			for a, da := range di {
				grow := g1[a*hid : (a+1)*hid]
				for k, g := range dh {
					grow[k] += da * g
				}
			}
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return fmt.Errorf("anomaly: fit: autoencoder diverged at epoch %d (loss %v)", epoch, loss)
		}
		c1 := 1 - math.Pow(beta1, float64(epoch))
		c2 := 1 - math.Pow(beta2, float64(epoch))
		for i, g := range grad {
			m[i] = beta1*m[i] + (1-beta1)*g
			v[i] = beta2*v[i] + (1-beta2)*g*g
			params[i] -= lr * (m[i] / c1) / (math.Sqrt(v[i]/c2) + eps)
		}
	}
	ae := &Autoencoder{Hidden: hid, W1: f32(w1), B1: f32(b1), W2: f32(w2), B2: f32(b2), Scale: 1}
	d.AE = ae
	var mean float64
	for _, r := range x {
		mean += d.aeSum(r)
	}
	mean /= float64(len(x))
	ae.Scale = 1 / max(mean, 1e-12)
	return nil
}

func f32(xs []float64) []float32 {
	out := make([]float32, len(xs))
	for i, v := range xs {
		out[i] = float32(v)
	}
	return out
}

// aeSum is Σⱼ (dⱼ − yⱼ)² for one normalised input row, unscaled.
func (d *Detector) aeSum(row []float32) float64 {
	ae, n := d.AE, d.Inputs()
	h := make([]float64, ae.Hidden)
	for k, b := range ae.B1 {
		h[k] = float64(b)
	}
	dev := make([]float64, n)
	for a := range n {
		dev[a] = float64(row[a]) - float64(d.Center[a])
		for k, w := range ae.W1[a*ae.Hidden : (a+1)*ae.Hidden] {
			h[k] += dev[a] * float64(w)
		}
	}
	y := make([]float64, n)
	for j, b := range ae.B2 {
		y[j] = float64(b)
	}
	for k := range h {
		hk := math.Tanh(h[k])
		for j, w := range ae.W2[k*n : (k+1)*n] {
			y[j] += hk * float64(w)
		}
	}
	var s float64
	for j := range n {
		e := dev[j] - y[j]
		s += e * e
	}
	return s
}
