package anomaly

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/models/quantize"
)

// needORT skips when the ONNX Runtime library is absent (`make ort` fetches it).
func needORT(tb testing.TB) {
	tb.Helper()
	if err := ort.Init(""); err != nil {
		tb.Skipf("ONNX Runtime library not available (run `make ort`): %v", err)
	}
}

// ortRunner scores through the real ONNX Runtime, one row per Run, as a box does.
func ortRunner(d *Detector, precision string) (ScoreFunc, func(), error) {
	model, err := d.ONNX(precision)
	if err != nil {
		return nil, nil, err
	}
	return sessionRunner(model)
}

// sessionRunner scores with model in ONNX Runtime, one row per Run.
func sessionRunner(model []byte) (ScoreFunc, func(), error) {
	s, err := ort.NewSession(model, ort.Options{MaxBatch: 1})
	if err != nil {
		return nil, nil, err
	}
	in, out := make([][]float32, 1), make([]float32, 1)
	return func(row []float32) (float64, error) {
		in[0] = row
		err := s.ScoreInto(out, in)
		return float64(out[0]), err
	}, func() { s.Close() }, nil
}

// synthetic returns n samples of 5 correlated features (two latent factors plus noise), raw
// units with different offsets and scales.
func synthetic(seed uint64, n int) [][]float64 {
	r := rand.New(rand.NewPCG(seed, 1))
	rows := make([][]float64, n)
	var a, b float64
	for i := range rows {
		a = 0.9*a + r.NormFloat64()
		b = 0.5*b + r.NormFloat64()
		rows[i] = []float64{
			10 + a + 0.1*r.NormFloat64(),
			-3 + 2*a - b + 0.1*r.NormFloat64(),
			100 + 5*b + 0.5*r.NormFloat64(),
			0.01 * (a + b + 0.1*r.NormFloat64()),
			50 + 0.2*r.NormFloat64(),
		}
	}
	return rows
}

var synthFeatures = []string{"a", "b", "c", "d", "e"}

// testRows returns normalised input rows of d from fresh synthetic data, some of them shifted
// far out (anomalies), as a Feeder would build them.
func testRows(d *Detector, n int) [][]float32 {
	data := synthetic(99, n+d.Window)
	for i := n / 2; i < n/2+n/8; i++ {
		data[i][2] += 30 // a level shift in one feature
	}
	c := d.Card("t", card.FP32)
	f := c.NewFeeder()
	var out [][]float32
	for _, s := range data {
		f.Push(s)
		if f.Ready() {
			out = append(out, f.Row(make([]float32, c.Inputs())))
		}
	}
	return out[:n]
}

// dequantized is w (rows×cols) through int8 quantisation and back, as the int8 model sees it.
func dequantized(w []float32, rows, cols int) []float32 {
	q, sc := quantize.Columns(w, rows, cols)
	out := make([]float32, len(w))
	for i, v := range q {
		out[i] = float32(int8(v)) * sc[i%cols]
	}
	return out
}

// int8Tolerance bounds |int8 score − fp32 score| / max(fp32 score, threshold).
const int8Tolerance = 0.1

func TestONNXMatchesNative(t *testing.T) {
	needORT(t)
	for _, o := range []Options{
		{Window: 1},
		{Window: 4, Sqrt: true},
		DefaultOptions(),
		{Detector: KindAE, Window: 3, Hidden: 4, Epochs: 300},
		{Detector: KindAE, Window: 10, Hidden: 16, Epochs: 200, Sqrt: true},
	} {
		d, err := Fit(synthetic(1, 600), synthFeatures, o)
		if err != nil {
			t.Fatal(err)
		}
		rows := testRows(d, 200)
		for _, prec := range []string{card.FP32, card.Int8} {
			t.Run(fmt.Sprintf("%s/window=%d/sqrt=%v/%s", d.Kind, d.Window, d.Sqrt, prec), func(t *testing.T) {
				model, err := d.ONNX(prec)
				if err != nil {
					t.Fatal(err)
				}
				s, err := ort.NewSession(model, ort.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				got, err := s.Score(rows)
				if err != nil {
					t.Fatal(err)
				}
				// The int8 reference: the same detector with W replaced by its dequantised int8
				// weights; ONNX Runtime must match it as closely as fp32 matches d.
				dq := *d
				if prec == card.Int8 {
					if d.AE != nil {
						ae := *d.AE
						ae.W1 = dequantized(ae.W1, d.Inputs(), ae.Hidden)
						ae.W2 = dequantized(ae.W2, ae.Hidden, d.Inputs())
						dq.AE = &ae
					} else {
						dq.W = dequantized(d.W, d.Inputs(), d.Inputs())
					}
				}
				var worst, worstVsFP32 float64
				for i, r := range rows {
					want := dq.Score(r)
					rel := math.Abs(float64(got[i])-want) / max(math.Abs(want), 1e-3)
					worst = max(worst, rel)
					if rel > 1e-4 {
						t.Errorf("row %d: onnx %s %v, native %v (relative error %.2g > 1e-4)", i, prec, got[i], want, rel)
					}
					// Against fp32, relative to the larger of the score and the threshold: what
					// moves an alarm decision.
					fp := d.Score(r)
					vs := math.Abs(float64(got[i])-fp) / max(fp, d.Threshold)
					worstVsFP32 = max(worstVsFP32, vs)
					if vs > int8Tolerance {
						t.Errorf("row %d: onnx %s %v, native fp32 %v: error %.2g of max(score, threshold %v) > %v", i, prec, got[i], fp, vs, d.Threshold, int8Tolerance)
					}
				}
				t.Logf("worst relative error %.3g; against fp32 %.3g of max(score, threshold); %d rows", worst, worstVsFP32, len(rows))
			})
		}
	}
}

// TestSKABRuntime runs the SKAB protocol with the default recipe through ONNX Runtime, fp32 and
// int8, and holds it to the acceptance bar.
func TestSKABRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: fits and scores 23 files twice")
	}
	dir := skabDir(t)
	needORT(t)
	opts := DefaultOptions()
	native, err := EvaluateSKAB(dir, opts, card.FP32, nil)
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]*SKABResult{}
	for _, prec := range []string{card.FP32, card.Int8} {
		r, err := EvaluateSKAB(dir, opts, prec, ortRunner)
		if err != nil {
			t.Fatal(err)
		}
		results[prec] = r
		t.Logf("SKAB %d files, ORT %s: F1 %.3f, FAR %.2f %%, MAR %.2f %% (TP %d FP %d TN %d FN %d)",
			len(r.Files), prec, r.F1(), 100*r.FAR(), 100*r.MAR(), r.TP, r.FP, r.TN, r.FN)
	}
	t.Logf("SKAB native Go fp32: F1 %.3f, FAR %.2f %%, MAR %.2f %%", native.F1(), 100*native.FAR(), 100*native.MAR())
	fp, q := results[card.FP32], results[card.Int8]
	if d := math.Abs(fp.F1() - native.F1()); d > 0.005 {
		t.Errorf("ORT fp32 F1 %.4f vs native %.4f", fp.F1(), native.F1())
	}
	if fp.F1() < 0.75 || fp.FAR() > 0.20 {
		t.Errorf("fp32: F1 %.3f, FAR %.1f %%: below the bar (F1 ≥ 0.75 with FAR ≤ 20 %%)", fp.F1(), 100*fp.FAR())
	}
	if d := math.Abs(q.F1() - fp.F1()); d > 0.02 {
		t.Errorf("|ΔF1| int8 vs fp32 = %.4f > 0.02", d)
	}
}

// eightFeatures is synthetic data shaped like SKAB: 8 features.
func eightFeatures() ([][]float64, []string) {
	raw := synthetic(1, 600)
	rows := make([][]float64, len(raw))
	for i, r := range raw {
		rows[i] = append(append([]float64(nil), r...), r[0]*0.5+r[2]*0.01, r[1]-r[4]*0.1, r[3]*100)
	}
	return rows, []string{"f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8"}
}

// TestInt8Size checks the int8 model of the default recipe's shape (8 features) is at most a
// third of the fp32 model's bytes.
func TestInt8Size(t *testing.T) {
	rows, feats := eightFeatures()
	d, err := Fit(rows, feats, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	fp, err := d.ONNX(card.FP32)
	if err != nil {
		t.Fatal(err)
	}
	q, err := d.ONNX(card.Int8)
	if err != nil {
		t.Fatal(err)
	}
	n := d.Inputs()
	// Tensor payloads: fp32 W n² floats + c n floats + axes; int8 Wq n² bytes + zero points n
	// bytes + scales n floats + c n floats + axes. The rest is protobuf framing, names and nodes.
	fpData, qData := 4*n*n+4*n+8, n*n+n+4*n+4*n+8
	t.Logf("inputs %d: fp32 %d bytes (%d tensor data, %d other), int8 %d bytes (%d tensor data, %d other), ratio %.3f",
		n, len(fp), fpData, len(fp)-fpData, len(q), qData, len(q)-qData, float64(len(q))/float64(len(fp)))
	if 3*len(q) > len(fp) {
		t.Errorf("int8 model %d bytes > 1/3 of fp32 %d bytes", len(q), len(fp))
	}
	// The autoencoder variant, for the record: its biases and scales stay float.
	o := DefaultOptions()
	o.Detector, o.Epochs = KindAE, 20
	ae, err := Fit(rows, feats, o)
	if err != nil {
		t.Fatal(err)
	}
	afp, err := ae.ONNX(card.FP32)
	if err != nil {
		t.Fatal(err)
	}
	aq, err := ae.ONNX(card.Int8)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("autoencoder %d→%d→%d: fp32 %d bytes, int8 %d bytes, ratio %.3f", n, ae.AE.Hidden, n, len(afp), len(aq), float64(len(aq))/float64(len(afp)))
}

// BenchmarkORT measures ONNX Runtime scoring of the default recipe's shape (8 features, like
// SKAB) at fp32 and int8, batches of 1 and 64; ns/sample is per input row.
func BenchmarkORT(b *testing.B) {
	needORT(b)
	rows8, feats := eightFeatures()
	d, err := Fit(rows8, feats, DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	c := d.Card("bench", card.FP32)
	f := c.NewFeeder()
	var x [][]float32
	for _, s := range rows8 {
		f.Push(s)
		x = append(x, f.Row(make([]float32, c.Inputs())))
	}
	for _, prec := range []string{card.FP32, card.Int8, "int8-qdq-full", "int8-cast"} {
		model, err := d.ONNX(prec)
		switch prec {
		case "int8-qdq-full":
			model, err = d.onnx(card.Int8, qdqFull)
		case "int8-cast":
			model, err = d.onnx(card.Int8, castWeights)
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d", prec, n), func(b *testing.B) {
				s, err := ort.NewSession(model, ort.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				batch := x[:n]
				dst := make([]float32, n)
				b.ReportAllocs()
				for b.Loop() {
					if err := s.ScoreInto(dst, batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/sample")
				b.ReportMetric(float64(len(model)), "model-bytes")
			})
		}
	}
	b.Run("native-go/batch=1", func(b *testing.B) {
		for b.Loop() {
			d.Score(x[0])
		}
	})
}

// BenchmarkORTLatency reports p50 and p99 of single-sample scoring calls in ONNX Runtime (each
// call timed on its own) for the default recipe at the demo's shape (3 features × window 10)
// and SKAB's (8 × 10), fp32 and int8.
func BenchmarkORTLatency(b *testing.B) {
	needORT(b)
	rows8, feats := eightFeatures()
	for _, nf := range []int{3, 8} {
		rows := make([][]float64, len(rows8))
		for i, r := range rows8 {
			rows[i] = r[:nf]
		}
		d, err := Fit(rows, feats[:nf], DefaultOptions())
		if err != nil {
			b.Fatal(err)
		}
		c := d.Card("bench", card.FP32)
		f := c.NewFeeder()
		for _, s := range rows[:c.Window] {
			f.Push(s)
		}
		x := [][]float32{f.Row(make([]float32, c.Inputs()))}
		for _, prec := range []string{card.FP32, card.Int8} {
			b.Run(fmt.Sprintf("features=%d/%s", nf, prec), func(b *testing.B) {
				model, err := d.ONNX(prec)
				if err != nil {
					b.Fatal(err)
				}
				s, err := ort.NewSession(model, ort.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				dst := make([]float32, 1)
				lat := make([]time.Duration, 0, 1<<20)
				for b.Loop() {
					t0 := time.Now()
					if err := s.ScoreInto(dst, x); err != nil {
						b.Fatal(err)
					}
					if len(lat) < cap(lat) {
						lat = append(lat, time.Since(t0))
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			})
		}
	}
}
