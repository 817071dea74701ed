package anomaly

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/models/card"
)

func TestSymEigen(t *testing.T) {
	for _, n := range []int{1, 2, 5, 24} {
		r := rand.New(rand.NewPCG(uint64(n), 2))
		// A = BᵀB + a rank-deficient part: a symmetric PSD matrix with repeated zeros.
		b := make([]float64, n*n)
		for i := range b {
			b[i] = r.NormFloat64()
		}
		a := make([]float64, n*n)
		for i := range n {
			for j := range n {
				for k := range n / 2 {
					a[i*n+j] += b[k*n+i] * b[k*n+j]
				}
			}
		}
		a[0] += 1
		vals, vecs := symEigen(a, n)
		for j := range n {
			if j > 0 && vals[j] > vals[j-1] {
				t.Errorf("n=%d: eigenvalues not descending: %v", n, vals)
			}
			// A·v = λ·v
			for i := range n {
				var av float64
				for k := range n {
					av += a[i*n+k] * vecs[k*n+j]
				}
				if d := math.Abs(av - vals[j]*vecs[i*n+j]); d > 1e-9*(1+math.Abs(vals[0])) {
					t.Fatalf("n=%d: (A·v%d)[%d] off by %g", n, j, i, d)
				}
			}
			// Orthonormal columns.
			for l := range n {
				var dot float64
				for k := range n {
					dot += vecs[k*n+j] * vecs[k*n+l]
				}
				want := 0.0
				if j == l {
					want = 1
				}
				if math.Abs(dot-want) > 1e-9 {
					t.Fatalf("n=%d: v%d·v%d = %g, want %g", n, j, l, dot, want)
				}
			}
		}
	}
}

func TestQuantileAndMovingAverage(t *testing.T) {
	xs := []float64{4, 1, 3, 2}
	for _, c := range []struct{ q, want float64 }{{0, 1}, {1, 4}, {0.5, 2.5}, {1.0 / 3, 2}} {
		if got := quantile(xs, c.q); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	// movingAverage must smooth exactly as card.Alarm does.
	c := &card.Card{Score: card.Score{Smooth: 3, Threshold: 1e9, Clear: 0, Consecutive: 1}}
	a := c.NewAlarm()
	raw := []float64{1, 5, 2, 8, 0, 3, 3}
	for i, v := range movingAverage(raw, 3) {
		s, _, _ := a.Step(raw[i])
		if math.Abs(s-v) > 1e-12 {
			t.Errorf("sample %d: movingAverage %v, Alarm %v", i, v, s)
		}
	}
}

func TestFitErrors(t *testing.T) {
	good := synthetic(1, 50)
	nan := synthetic(1, 50)
	nan[7][2] = math.NaN()
	short := synthetic(1, 50)
	short[3] = short[3][:4]
	for name, c := range map[string]struct {
		rows  [][]float64
		feats []string
		opts  Options
		want  string
	}{
		"no features":      {good, nil, Options{}, "no features"},
		"repeated feature": {good, []string{"a", "b", "a", "d", "e"}, Options{}, `feature 2 ("a")`},
		"too few rows":     {good[:5], synthFeatures, Options{Window: 5}, "5 rows; window 5"},
		"short row":        {short, synthFeatures, Options{}, "row 3 has 4 values, want 5"},
		"nan":              {nan, synthFeatures, Options{}, `row 7, feature "c": NaN`},
		"bad options":      {good, synthFeatures, Options{Variance: 2, Quantile: -1, Window: -1}, "variance"},
	} {
		_, err := Fit(c.rows, c.feats, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, c.want)
		}
	}
	_, err := Fit(good, synthFeatures, Options{Variance: 2, Quantile: -1, Window: -1})
	for _, f := range []string{"window", "variance", "quantile"} {
		if err == nil || !strings.Contains(err.Error(), "options: "+f) {
			t.Errorf("bad options: err = %v, want it to name %s", err, f)
		}
	}
}

// TestFitDetects fits on normal synthetic data for several feature counts and windows and
// checks that a level shift scores above the threshold while fresh normal data mostly stays
// below it, and that the card round-trips through card.Write and card.Load.
func TestFitDetects(t *testing.T) {
	for _, c := range []struct {
		feats  int
		window int
		kind   string
	}{{1, 1, KindPCA}, {2, 3, KindPCA}, {5, 1, KindPCA}, {5, 10, KindPCA}, {5, 4, KindAE}, {1, 5, KindAE}} {
		rows := synthetic(3, 500)
		for i := range rows {
			rows[i] = rows[i][:c.feats]
		}
		o := DefaultOptions()
		o.Window, o.Detector, o.Epochs = c.window, c.kind, 300
		d, err := Fit(rows, synthFeatures[:c.feats], o)
		if err != nil {
			t.Fatal(err)
		}
		if d.Inputs() != c.feats*c.window || (c.kind == KindPCA && (len(d.W) != d.Inputs()*d.Inputs() || d.Components < 1)) ||
			(c.kind == KindAE && (d.AE == nil || len(d.AE.W1) != d.Inputs()*d.AE.Hidden)) {
			t.Fatalf("feats %d window %d %s: inputs %d, W %d, k %d", c.feats, c.window, c.kind, d.Inputs(), len(d.W), d.Components)
		}
		cd := d.Card("synthetic", card.FP32)
		test := synthetic(4, 400)
		for i := range test {
			test[i] = test[i][:c.feats]
			if i >= 300 {
				test[i][0] += 40 // feature 0's std is about 2: a 20σ shift
			}
		}
		feed, alarm := cd.NewFeeder(), cd.NewAlarm()
		var falseAlarms, caught int
		row := make([]float32, cd.Inputs())
		for i, s := range test {
			feed.Push(s)
			_, active, _ := alarm.Step(d.Score(feed.Row(row)))
			switch {
			case i < 300 && active:
				falseAlarms++
			case i >= 300+c.window+d.Options.Smooth && active:
				caught++
			}
		}
		tail := 100 - c.window - d.Options.Smooth
		if falseAlarms > 30 || caught < tail*9/10 {
			t.Errorf("feats %d window %d %s: %d false alarms in 300 normal samples, %d of %d shifted samples caught",
				c.feats, c.window, c.kind, falseAlarms, caught, tail)
		}
		model, err := d.ONNX(card.FP32)
		if err != nil {
			t.Fatal(err)
		}
		path, err := card.Write(t.TempDir(), cd, model)
		if err != nil {
			t.Fatal(err)
		}
		back, err := card.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if back.Detector != c.kind || back.Inputs() != d.Inputs() || back.Score.Threshold != d.Threshold ||
			back.Training.SHA256 != d.TrainSHA256 || filepath.Base(back.Model) != "synthetic.onnx" {
			t.Errorf("card round trip: %+v", back)
		}
	}
}

func TestONNXPrecision(t *testing.T) {
	d, err := Fit(synthetic(1, 100), synthFeatures, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.ONNX("fp16"); err == nil || !strings.Contains(err.Error(), `"fp16"`) {
		t.Errorf("fp16: err = %v", err)
	}
}

// TestAutoencoderLearns checks that training cuts the reconstruction error well below that of
// reconstructing every row as the mean (the data has two latent factors; the AE has 4 units),
// and that it is deterministic for a seed.
func TestAutoencoderLearns(t *testing.T) {
	rows := synthetic(5, 400)
	o := Options{Detector: KindAE, Window: 1, Hidden: 4, Epochs: 400, Seed: 7}
	d, err := Fit(rows, synthFeatures, o)
	if err != nil {
		t.Fatal(err)
	}
	x := windowRows(rows, d.Mean, d.Std, 1)
	var trained, trivial float64
	for _, r := range x {
		trained += d.aeSum(r)
		for j, v := range r {
			trivial += (float64(v) - float64(d.Center[j])) * (float64(v) - float64(d.Center[j]))
		}
	}
	t.Logf("reconstruction error: trained %.3g, mean-only %.3g", trained/float64(len(x)), trivial/float64(len(x)))
	if trained > 0.3*trivial {
		t.Errorf("trained error %.3g is not under 0.3 × the mean-only error %.3g", trained, trivial)
	}
	again, err := Fit(rows, synthFeatures, o)
	if err != nil {
		t.Fatal(err)
	}
	if again.Score(x[3]) != d.Score(x[3]) {
		t.Errorf("same seed, different models: %v vs %v", again.Score(x[3]), d.Score(x[3]))
	}
}
