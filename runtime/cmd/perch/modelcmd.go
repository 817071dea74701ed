package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/perch-edge/perch/hal/replay"
	"github.com/perch-edge/perch/models/anomaly"
	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/evaluate"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
)

const modelUsage = `Usage:
  perch model train (--csv FILE [--format skab|nab|perch] | --db FILE --source NAME [--series S] |
                     --sim CONFIG --device NAME [--from D] [--duration D] [--every D])
                    [--features a,b,...] [--rows N] --name NAME [--out DIR] [--precision fp32|int8]
                    [--window N] [--smooth N] [--factor F]
  perch model quantize CARD.card.yaml [--out DIR]
  perch model inspect CARD.card.yaml|MODEL.onnx [--json]
  perch model eval --protocol skab|nab --data DIR [--precision fp32|int8] [--json]
`

// cmdModel dispatches `perch model SUBCOMMAND ...`.
func cmdModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, modelUsage)
		return errors.New("perch model: no subcommand")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "train":
		return cmdModelTrain(rest, stdout, stderr)
	case "eval":
		return cmdModelEval(ctx, rest, stdout, stderr)
	case "quantize":
		return cmdModelQuantize(rest, stdout, stderr)
	case "inspect":
		return cmdModelInspect(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, modelUsage)
		return nil
	default:
		fmt.Fprint(stderr, modelUsage)
		return fmt.Errorf("perch model: unknown subcommand %q", cmd)
	}
}

// cmdModelTrain fits the default detector on normal data from a CSV file or the recorder and
// writes the model artifact.
func cmdModelTrain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch model train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	csv := fs.String("csv", "", "train on this CSV `file` (normal data)")
	format := fs.String("format", "perch", "the CSV's `format`: skab, nab or perch (see hal/replay)")
	db := fs.String("db", "", "train on the readings of this recorder `file`")
	source := fs.String("source", "", "with --db: the readings' `source` (a module or source name)")
	series := fs.String("series", "", "with --db: only readings of this `series`")
	simCfg := fs.String("sim", "", "train on the scripted signals of a simulated device in this `config`")
	device := fs.String("device", "", "with --sim: the device's `name`")
	from := fs.Duration("from", 0, "with --sim: the first sample's time since the simulation's start")
	duration := fs.Duration("duration", time.Hour, "with --sim: how much simulated time to sample")
	every := fs.Duration("every", 500*time.Millisecond, "with --sim: the sampling interval")
	features := fs.String("features", "", "comma-separated `names` of the columns or fields to use (default: all)")
	rows := fs.Int("rows", 0, "use only the first `N` rows (0: all)")
	name := fs.String("name", "", "the model's `name` (NAME.onnx and NAME.card.yaml)")
	out := fs.String("out", ".", "the `folder` to write the model to")
	precision := fs.String("precision", card.FP32, "fp32 or int8")
	def := anomaly.DefaultOptions()
	window := fs.Int("window", def.Window, "samples per input row")
	smooth := fs.Int("smooth", def.Smooth, "moving average length of the alarm, samples")
	factor := fs.Float64("factor", def.Factor, "the threshold is this × the largest smoothed training score")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if n := btoi(*csv != "") + btoi(*db != "") + btoi(*simCfg != ""); *name == "" || n != 1 {
		return errors.New("perch model train: give --name and one of --csv, --db or --sim")
	}
	var cols []string
	if *features != "" {
		cols = strings.Split(*features, ",")
	}
	var (
		t    *replay.Table
		desc string
		err  error
	)
	switch {
	case *csv != "":
		t, err = replay.ReadFile(*csv, replay.Format(*format), replay.ReadOptions{Columns: cols})
		desc = filepath.Base(*csv)
	case *simCfg != "":
		t, err = simTable(*simCfg, *device, *from, *duration, *every)
		desc = fmt.Sprintf("simulated %s of %s from %v for %v every %v", *device, filepath.Base(*simCfg), *from, *duration, *every)
	default:
		if *source == "" {
			return errors.New("perch model train: --db needs --source")
		}
		t, err = readingsTable(*db, *source, *series, cols)
		desc = fmt.Sprintf("%s readings of %s", filepath.Base(*db), *source)
	}
	if err != nil {
		return err
	}
	data := make([][]float64, 0, len(t.Rows))
	for i, r := range t.Rows {
		if *rows > 0 && i >= *rows {
			break
		}
		finite := true
		for _, v := range r.Values {
			finite = finite && !math.IsNaN(v) && !math.IsInf(v, 0)
		}
		if finite { // a missing value cannot be trained on
			data = append(data, r.Values)
		}
	}
	opts := def
	opts.Window, opts.Smooth, opts.Factor = *window, *smooth, *factor
	d, err := anomaly.Fit(data, t.Columns, opts)
	if err != nil {
		return err
	}
	c := d.Card(*name, *precision)
	c.Training.Data = desc
	model, err := d.ONNX(*precision)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	path, err := card.Write(*out, c, model)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "perch model train: %s (%s, %d features × window %d, %d training rows, threshold %.4g, %d bytes)\n",
		path, c.Precision, len(c.Features), c.Window, len(data), c.Score.Threshold, len(model))
	return nil
}

// simFields names the record fields a driver emits for a simulated device's signals, where
// they differ from the signal names.
var simFields = map[string]string{"temperature": "temperature_c", "pressure": "pressure_hpa", "humidity": "humidity_pct"}

// simTable samples the scripted signals of the simulated device named device in the config at
// path, every every from from for duration of simulated time (no waiting: signals are functions
// of time).
func simTable(path, device string, from, duration, every time.Duration) (*replay.Table, error) {
	// Only the devices section is read: the rest of the config may name this very model.
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Devices []config.Device `yaml:"devices"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var d *config.Device
	for i := range cfg.Devices {
		if cfg.Devices[i].Name == device {
			d = &cfg.Devices[i]
		}
	}
	if d == nil || d.Backend != "sim" {
		return nil, fmt.Errorf("%s: no simulated device %q", path, device)
	}
	sigs := d.Signals.Named()
	for _, ns := range sigs {
		if err := ns.Signal.Validate(); err != nil {
			return nil, fmt.Errorf("%s: device %q: signal %s: %w", path, device, ns.Name, err)
		}
	}
	if len(sigs) == 0 || every <= 0 || duration < every {
		return nil, fmt.Errorf("%s: device %q: nothing to sample (signals %d, every %v, duration %v)", path, device, len(sigs), every, duration)
	}
	t := &replay.Table{}
	for _, s := range sigs {
		name := s.Name
		if f, ok := simFields[name]; ok {
			name = f
		}
		t.Columns = append(t.Columns, name)
	}
	for at := from; at < from+duration; at += every {
		r := replay.Row{TimeNS: int64(at), Values: make([]float64, len(sigs))}
		for j, s := range sigs {
			r.Values[j] = s.Signal.At(at)
		}
		t.Rows = append(t.Rows, r)
	}
	return t, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readingsTable reads the readings of source (and series) from a recorder, the named fields
// (default: those of the first reading) in order.
func readingsTable(path, source, series string, fields []string) (*replay.Table, error) {
	db, err := store.OpenReadOnly(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	q := `SELECT time_ns, fields FROM readings WHERE source = ?`
	qargs := []any{source}
	if series != "" {
		q += ` AND series = ?`
		qargs = append(qargs, series)
	}
	rows, err := db.Query(q+` ORDER BY id`, qargs...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer rows.Close()
	t := &replay.Table{Columns: fields}
	for rows.Next() {
		var ns int64
		var raw []byte
		if err := rows.Scan(&ns, &raw); err != nil {
			return nil, err
		}
		var obj map[string]float64
		if err := json.Unmarshal(raw, &obj); err != nil {
			continue // a reading with a non-number field: not a training sample
		}
		if t.Columns == nil {
			for k := range obj {
				t.Columns = append(t.Columns, k)
			}
			slices.Sort(t.Columns)
		}
		r := replay.Row{TimeNS: ns, Values: make([]float64, len(t.Columns))}
		for j, c := range t.Columns {
			v, ok := obj[c]
			if !ok {
				v = math.NaN()
			}
			r.Values[j] = v
		}
		t.Rows = append(t.Rows, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(t.Rows) == 0 {
		return nil, fmt.Errorf("%s: no readings of source %q", path, source)
	}
	return t, nil
}

// cmdModelEval runs an evaluation protocol through the runtime path and prints its figures.
func cmdModelEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch model eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	protocol := fs.String("protocol", "", "skab or nab")
	data := fs.String("data", "", "the dataset `folder` (SKAB: its data folder; NAB: the folder with data/ and labels/)")
	precision := fs.String("precision", card.FP32, "fp32 or int8")
	asJSON := fs.Bool("json", false, "print one JSON object")
	replayWasm := fs.String("replay", "", "the replay driver `module` (default: build/modules/replay.wasm beside the binary's checkout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *data == "" {
		return errors.New("perch model eval: --data is required")
	}
	env := evaluate.Env{ReplayWasm: *replayWasm}
	if env.ReplayWasm == "" {
		env.ReplayWasm = defaultModule("replay")
	}
	t0 := time.Now()
	var s evaluate.Summary
	switch *protocol {
	case "skab":
		r, err := evaluate.SKAB(ctx, *data, anomaly.DefaultOptions(), *precision, env)
		if err != nil {
			return err
		}
		s = r.Summary()
	case "nab":
		o := anomaly.DefaultNABOptions()
		o.Precision = *precision
		r, err := evaluate.NAB(ctx, *data, o, env)
		if err != nil {
			return err
		}
		s = r.Summary()
	default:
		return fmt.Errorf("perch model eval: --protocol must be skab or nab, got %q", *protocol)
	}
	s.Seconds = time.Since(t0).Seconds()
	if *asJSON {
		return json.NewEncoder(stdout).Encode(s)
	}
	fmt.Fprintf(stdout, "%s (%s, %d files): F1 %.3f  FAR %.2f %%  MAR %.2f %%  NAB standard %.2f  low-FP %.2f  low-FN %.2f  (%.1f s)\n",
		s.Protocol, s.Precision, s.Files, s.F1, s.FAR, s.MAR, s.NABStandard, s.NABLowFP, s.NABLowFN, s.Seconds)
	return nil
}

// defaultModule is build/modules/NAME.wasm of the checkout the binary runs from: next to the
// working folder's build/, or the executable's ../modules (a release bundle).
func defaultModule(name string) string {
	candidates := []string{filepath.Join("build", "modules", name+".wasm")}
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "modules", name+".wasm"),
			filepath.Join(filepath.Dir(exe), "..", "modules", name+".wasm"))
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			abs, _ := filepath.Abs(c)
			return abs
		}
	}
	return candidates[0]
}
