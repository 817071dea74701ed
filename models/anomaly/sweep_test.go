package anomaly

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/perch-edge/perch/models/card"
)

// TestSKABSweep explores recipes: PERCH_SKAB_SWEEP holds ';'-separated recipes, each
// ','-separated key=value pairs over DefaultOptions (w, sqrt, var, ridge, minstd, smooth, q,
// factor, clear, cons); PERCH_SKAB_FILES=1 prints per-file counts. It is a tool, not a check.
func TestSKABSweep(t *testing.T) {
	spec := os.Getenv("PERCH_SKAB_SWEEP")
	if spec == "" {
		t.Skip("set PERCH_SKAB_SWEEP")
	}
	dir := skabDir(t)
	for _, recipe := range strings.Split(spec, ";") {
		o := DefaultOptions()
		for _, kv := range strings.Split(recipe, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
			if k == "" {
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", kv, err)
			}
			switch k {
			case "ae":
				if f != 0 {
					o.Detector = KindAE
				}
			case "hidden":
				o.Hidden = int(f)
			case "epochs":
				o.Epochs = int(f)
			case "lr":
				o.LearningRate = f
			case "w":
				o.Window = int(f)
			case "sqrt":
				o.Sqrt = f != 0
			case "var":
				o.Variance = f
			case "ridge":
				o.Ridge = f
			case "minstd":
				o.MinStd = f
			case "smooth":
				o.Smooth = int(f)
			case "q":
				o.Quantile = f
			case "factor":
				o.Factor = f
			case "clear":
				o.Clear = f
			case "cons":
				o.Consecutive = int(f)
			default:
				t.Fatalf("unknown key %q", k)
			}
		}
		r, err := EvaluateSKAB(dir, o, card.FP32, nil)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%-50s F1=%.3f FAR=%.1f MAR=%.1f\n", recipe, r.F1(), 100*r.FAR(), 100*r.MAR())
		if os.Getenv("PERCH_SKAB_FILES") != "" {
			for _, f := range r.Files {
				fmt.Printf("   %-60s TP %4d FP %4d TN %4d FN %4d\n", f.Path, f.TP, f.FP, f.TN, f.FN)
			}
		}
	}
}

// TestSKABQuantInput measures full static QDQ (input quantised too) on SKAB
// (PERCH_SKAB_QINPUT=1): a measurement behind a design choice, not a check.
func TestSKABQuantInput(t *testing.T) {
	if os.Getenv("PERCH_SKAB_QINPUT") == "" {
		t.Skip("set PERCH_SKAB_QINPUT=1")
	}
	dir := skabDir(t)
	needORT(t)
	run := func(d *Detector, precision string) (ScoreFunc, func(), error) {
		model, err := d.onnx(precision, qdqFull)
		if err != nil {
			return nil, nil, err
		}
		return sessionRunner(model)
	}
	r, err := EvaluateSKAB(dir, DefaultOptions(), card.Int8, run)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("int8 with quantised input: F1=%.3f FAR=%.1f MAR=%.1f\n", r.F1(), 100*r.FAR(), 100*r.MAR())
}

// TestSKABRuntimeAE runs the autoencoder variant of the recipe through ONNX Runtime, fp32 and
// int8 (PERCH_SKAB_AE=1; slow: it trains 23 autoencoders per precision).
func TestSKABRuntimeAE(t *testing.T) {
	if os.Getenv("PERCH_SKAB_AE") == "" {
		t.Skip("set PERCH_SKAB_AE=1")
	}
	dir := skabDir(t)
	needORT(t)
	o := DefaultOptions()
	o.Detector = KindAE
	for _, prec := range []string{card.FP32, card.Int8} {
		r, err := EvaluateSKAB(dir, o, prec, ortRunner)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("autoencoder ORT %s: F1=%.3f FAR=%.1f MAR=%.1f\n", prec, r.F1(), 100*r.FAR(), 100*r.MAR())
	}
}
