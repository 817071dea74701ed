package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/onnx"
	"github.com/perch-edge/perch/models/quantize"
	"go.yaml.in/yaml/v3"
)

// modelToolArgs parses args with fs, allowing flags after the positional arguments (`perch model
// inspect FILE --json`), and returns the positional arguments.
func modelToolArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if len(args) > 1 && args[0] == "--" { // everything after -- is positional
			return append(pos, args[1:]...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// cmdModelQuantize implements `perch model quantize CARD.card.yaml [--out DIR]`: it writes the
// int8 (weight-only, see models/quantize) version of an fp32 model as NAME-int8.onnx with its
// card, beside the input or in DIR.
func cmdModelQuantize(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch model quantize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "the `folder` to write NAME-int8.onnx and its card to (default: the card's folder)")
	pos, err := modelToolArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("perch model quantize: give one CARD.card.yaml")
	}
	path := pos[0]
	c, err := card.Load(path) // checks the model's digest
	if err != nil {
		return fmt.Errorf("perch model quantize: %w", err)
	}
	if c.Precision != card.FP32 {
		return fmt.Errorf("perch model quantize: %s: precision is %s; only an %s model can be quantised", path, c.Precision, card.FP32)
	}
	modelPath := c.ModelPath(path)
	m, err := readModelFile(modelPath)
	if err != nil {
		return fmt.Errorf("perch model quantize: %w", err)
	}
	if err := checkInputs(c, m); err != nil {
		return fmt.Errorf("perch model quantize: %s: %w", path, err)
	}
	q, rep, err := quantize.Weights(m)
	if err != nil {
		return fmt.Errorf("perch model quantize: %s: %w", modelPath, err)
	}
	model, err := q.Marshal()
	if err != nil {
		return fmt.Errorf("perch model quantize: %s: %w", modelPath, err)
	}
	qc := *c
	qc.Name = c.Name + "-" + card.Int8
	qc.Precision = card.Int8
	qc.Evaluation = nil // measured on the fp32 model
	dir := *out
	if dir == "" {
		dir = filepath.Dir(path)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("perch model quantize: %w", err)
	}
	written, err := card.Write(dir, &qc, model)
	if err != nil {
		return fmt.Errorf("perch model quantize: %s: %w", dir, err)
	}
	for _, t := range rep.Tensors {
		fmt.Fprintf(stdout, "  %s [%d %d]: %d → %d bytes (max |Δw| %.3g)\n", t.Name, t.Rows, t.Cols, t.BytesFP32, t.BytesInt8, t.MaxAbsDiff)
	}
	dropped := ""
	if n := len(c.Evaluation); n > 0 {
		dropped = fmt.Sprintf("; %d evaluation entries of the fp32 model dropped", n)
	}
	fmt.Fprintf(stdout, "perch model quantize: %s → %s (int8 weights, %d tensors; model %d → %d bytes, %.1f %%%s)\n",
		path, written, len(rep.Tensors), rep.ModelBytesBefore, rep.ModelBytesAfter,
		100*float64(rep.ModelBytesAfter)/float64(rep.ModelBytesBefore), dropped)
	return nil
}

// readModelFile reads and decodes an ONNX file; errors name it.
func readModelFile(path string) (*onnx.Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := onnx.Read(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// checkInputs reports a model whose first input's last dimension is fixed and differs from the
// card's row width.
func checkInputs(c *card.Card, m *onnx.Model) error {
	in := m.Graph.Inputs[0]
	if n := len(in.Shape); n > 0 && in.Shape[n-1].Param == "" && in.Shape[n-1].Value != int64(c.Inputs()) {
		return fmt.Errorf("model input %q has %d columns, the card's %d features × window %d need %d",
			in.Name, in.Shape[n-1].Value, len(c.Features), c.Window, c.Inputs())
	}
	return nil
}

// Inspection is what `perch model inspect` reports (its --json form).
type inspection struct {
	CardPath string         `json:"card_path,omitempty"`
	Card     map[string]any `json:"card,omitempty"` // the card's YAML fields
	Model    modelInfo      `json:"model"`
	Warnings []string       `json:"warnings,omitempty"`
}

type modelInfo struct {
	Path             string            `json:"path"`
	Bytes            int               `json:"bytes"`
	SHA256           string            `json:"sha256"`
	IRVersion        int64             `json:"ir_version"`
	Opset            int64             `json:"opset"`
	Producer         string            `json:"producer"`
	DocString        string            `json:"doc_string,omitempty"`
	Graph            string            `json:"graph"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	Inputs           []valueInfo       `json:"inputs"`
	Outputs          []valueInfo       `json:"outputs"`
	Nodes            []nodeInfo        `json:"nodes"`
	Initializers     []tensorInfo      `json:"initializers"`
	InitializerBytes int               `json:"initializer_bytes"`
}

type valueInfo struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	Shape []string `json:"shape"` // a number or a symbolic name per dimension
}

type nodeInfo struct {
	Name    string            `json:"name,omitempty"`
	Op      string            `json:"op"`
	Domain  string            `json:"domain,omitempty"`
	Inputs  []string          `json:"inputs"`
	Outputs []string          `json:"outputs"`
	Attrs   map[string]string `json:"attrs,omitempty"`
}

type tensorInfo struct {
	Name  string  `json:"name"`
	Type  string  `json:"type"`
	Dims  []int64 `json:"dims"`
	Bytes int     `json:"bytes"`
}

// cmdModelInspect implements `perch model inspect CARD.card.yaml|MODEL.onnx [--json]`: it prints
// the card (if given one) and the model's graph.
func cmdModelInspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch model inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := modelToolArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("perch model inspect: give one CARD.card.yaml or MODEL.onnx")
	}
	path := pos[0]
	var ins inspection
	modelPath := path
	var c *card.Card
	if strings.HasSuffix(path, card.Suffix) {
		if c, err = card.Load(path); err != nil {
			return fmt.Errorf("perch model inspect: %w", err)
		}
		ins.CardPath, modelPath = path, c.ModelPath(path)
		y, err := yaml.Marshal(c)
		if err != nil {
			return fmt.Errorf("perch model inspect: %s: %w", path, err)
		}
		if err := yaml.Unmarshal(y, &ins.Card); err != nil {
			return fmt.Errorf("perch model inspect: %s: %w", path, err)
		}
	}
	b, err := os.ReadFile(modelPath)
	if err != nil {
		return fmt.Errorf("perch model inspect: %w", err)
	}
	m, err := onnx.Read(b)
	if err != nil {
		return fmt.Errorf("perch model inspect: %s: %w", modelPath, err)
	}
	ins.Model = describe(m)
	ins.Model.Path, ins.Model.Bytes, ins.Model.SHA256 = modelPath, len(b), card.Digest(b)
	if c != nil {
		if err := checkInputs(c, m); err != nil {
			ins.Warnings = append(ins.Warnings, err.Error())
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ins)
	}
	if c != nil {
		printCard(stdout, path, c)
	}
	printModel(stdout, &ins.Model)
	for _, w := range ins.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return nil
}

// describe summarises m's graph.
func describe(m *onnx.Model) modelInfo {
	g := m.Graph
	mi := modelInfo{IRVersion: m.IRVersion, Opset: m.OpsetVersion, Producer: m.ProducerName, DocString: m.DocString,
		Graph: g.Name, Metadata: m.MetadataProps}
	values := func(vs []onnx.ValueInfo) []valueInfo {
		out := []valueInfo{}
		for _, v := range vs {
			vi := valueInfo{Name: v.Name, Type: v.Type.String(), Shape: []string{}}
			for _, d := range v.Shape {
				if d.Param != "" {
					vi.Shape = append(vi.Shape, d.Param)
				} else {
					vi.Shape = append(vi.Shape, fmt.Sprint(d.Value))
				}
			}
			out = append(out, vi)
		}
		return out
	}
	mi.Inputs, mi.Outputs = values(g.Inputs), values(g.Outputs)
	mi.Nodes = []nodeInfo{}
	for _, n := range g.Nodes {
		ni := nodeInfo{Name: n.Name, Op: n.OpType, Domain: n.Domain, Inputs: n.Inputs, Outputs: n.Outputs}
		for _, a := range n.Attrs {
			if ni.Attrs == nil {
				ni.Attrs = map[string]string{}
			}
			ni.Attrs[a.Name] = attrString(a)
		}
		mi.Nodes = append(mi.Nodes, ni)
	}
	mi.Initializers = []tensorInfo{}
	for _, t := range g.Initializers {
		n := t.DataBytes()
		mi.Initializers = append(mi.Initializers, tensorInfo{Name: t.Name, Type: t.Type.String(), Dims: t.Dims, Bytes: n})
		mi.InitializerBytes += n
	}
	return mi
}

func attrString(a onnx.Attr) string {
	switch {
	case a.Float != nil:
		return fmt.Sprint(*a.Float)
	case a.Int != nil:
		return fmt.Sprint(*a.Int)
	case a.Floats != nil:
		return fmt.Sprint(a.Floats)
	default:
		return fmt.Sprint(a.Ints)
	}
}

func printCard(w io.Writer, path string, c *card.Card) {
	fmt.Fprintf(w, "card %s\n", path)
	fmt.Fprintf(w, "  name %s, version %s, precision %s, detector %s\n", c.Name, c.Version, c.Precision, c.Detector)
	fmt.Fprintf(w, "  model %s (sha256 %s)\n", c.Model, c.SHA256)
	fmt.Fprintf(w, "  features (%d) × window %d = %d inputs per row\n", len(c.Features), c.Window, c.Inputs())
	fmt.Fprintf(w, "  %-24s %14s %14s\n", "feature", "mean", "std")
	for i, f := range c.Features {
		fmt.Fprintf(w, "  %-24s %14.6g %14.6g\n", f, c.Normalization.Mean[i], c.Normalization.Std[i])
	}
	s := c.Score
	fmt.Fprintf(w, "  score: smooth %d, threshold %.6g, clear %.6g, consecutive %d\n", s.Smooth, s.Threshold, s.Clear, s.Consecutive)
	if l := s.Likelihood; l != nil {
		fmt.Fprintf(w, "  likelihood: short %d, history %d, eps %g, min_std %g, holdoff %d, two_sided %v, spatial %g\n",
			l.Short, l.History, l.Eps, l.MinStd, l.Holdoff, l.TwoSided, l.Spatial)
	}
	t := c.Training
	fmt.Fprintf(w, "  training: %s, %d rows, sha256 %s\n", t.Data, t.Rows, t.SHA256)
	if len(t.Params) > 0 {
		fmt.Fprintf(w, "  params: %s\n", sortedFloats(t.Params))
	}
	if len(c.Evaluation) == 0 {
		fmt.Fprintf(w, "  evaluation: none\n")
	}
	for _, e := range c.Evaluation {
		fmt.Fprintf(w, "  evaluation: %s on %s: %s\n", e.Protocol, e.Data, sortedFloats(e.Metrics))
	}
}

// sortedFloats formats m as "k=v, ..." in key order.
func sortedFloats(m map[string]float64) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%.6g", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func printModel(w io.Writer, mi *modelInfo) {
	fmt.Fprintf(w, "model %s (%d bytes, sha256 %s)\n", mi.Path, mi.Bytes, mi.SHA256)
	fmt.Fprintf(w, "  ir_version %d, opset %d, producer %q, graph %q\n", mi.IRVersion, mi.Opset, mi.Producer, mi.Graph)
	if mi.DocString != "" {
		fmt.Fprintf(w, "  doc: %s\n", mi.DocString)
	}
	for _, k := range slices.Sorted(maps.Keys(mi.Metadata)) {
		fmt.Fprintf(w, "  metadata %s = %q\n", k, mi.Metadata[k])
	}
	for _, v := range mi.Inputs {
		fmt.Fprintf(w, "  input  %s %s [%s]\n", v.Name, v.Type, strings.Join(v.Shape, ", "))
	}
	for _, v := range mi.Outputs {
		fmt.Fprintf(w, "  output %s %s [%s]\n", v.Name, v.Type, strings.Join(v.Shape, ", "))
	}
	fmt.Fprintf(w, "  nodes (%d):\n", len(mi.Nodes))
	for i, n := range mi.Nodes {
		op := n.Op
		if n.Domain != "" {
			op = n.Domain + "." + op
		}
		var attrs []string
		for _, k := range slices.Sorted(maps.Keys(n.Attrs)) {
			attrs = append(attrs, k+"="+n.Attrs[k])
		}
		fmt.Fprintf(w, "  %3d  %-18s %s → %s", i+1, op, strings.Join(n.Inputs, ", "), strings.Join(n.Outputs, ", "))
		if len(attrs) > 0 {
			fmt.Fprintf(w, "  (%s)", strings.Join(attrs, ", "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  initializers (%d, %d bytes of data):\n", len(mi.Initializers), mi.InitializerBytes)
	for _, t := range mi.Initializers {
		dims := make([]string, len(t.Dims))
		for i, d := range t.Dims {
			dims[i] = fmt.Sprint(d)
		}
		fmt.Fprintf(w, "       %-12s %-6s [%s] %d bytes\n", t.Name, t.Type, strings.Join(dims, ", "), t.Bytes)
	}
}
