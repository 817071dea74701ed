package onnx_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/internal/modeltest"
	"github.com/perch-edge/perch/models/onnx"
	"google.golang.org/protobuf/encoding/protowire"
)

// exported returns every graph models/anomaly writes for a few detectors: PCA and autoencoder,
// with and without the square root, fp32 and int8.
func exported(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, d := range modeltest.Detectors(t) {
		for _, p := range []string{card.FP32, card.Int8} {
			b, err := d.ONNX(p)
			if err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprintf("%s/window=%d/sqrt=%v/%s", d.Kind, d.Window, d.Sqrt, p)] = b
		}
	}
	return out
}

// withDefaults is m as Read returns it after Marshal: Marshal's defaults filled in, and empty
// slices where Marshal cannot tell nil from empty.
func withDefaults(m *onnx.Model) *onnx.Model {
	c := *m
	if c.ProducerName == "" {
		c.ProducerName = "perch"
	}
	if c.IRVersion == 0 {
		c.IRVersion = onnx.IRVersion
	}
	if c.OpsetVersion == 0 {
		c.OpsetVersion = onnx.Opset
	}
	g := *m.Graph
	g.Initializers = append([]onnx.Tensor(nil), g.Initializers...)
	for i, t := range g.Initializers {
		if t.Dims == nil {
			g.Initializers[i].Dims = []int64{}
		}
	}
	fix := func(vs []onnx.ValueInfo) []onnx.ValueInfo {
		vs = append([]onnx.ValueInfo(nil), vs...)
		for i := range vs {
			if len(vs[i].Shape) == 0 {
				vs[i].Shape = nil
			}
		}
		return vs
	}
	g.Inputs, g.Outputs = fix(g.Inputs), fix(g.Outputs)
	c.Graph = &g
	return &c
}

func TestReadRoundTripAnomalyExports(t *testing.T) {
	for name, b := range exported(t) {
		t.Run(name, func(t *testing.T) {
			m, err := onnx.Read(b)
			if err != nil {
				t.Fatal(err)
			}
			back, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, b) {
				t.Fatalf("Marshal(Read(b)) differs from b: %d vs %d bytes", len(back), len(b))
			}
			if m.Graph.Inputs[0].Name != "x" || m.Graph.Outputs[0].Name != "score" || m.Graph.Outputs[0].Shape[0].Param != "N" {
				t.Errorf("io = %+v → %+v", m.Graph.Inputs, m.Graph.Outputs)
			}
			if !strings.HasPrefix(m.DocString, "pca-t2q anomaly score") && !strings.HasPrefix(m.DocString, "autoencoder anomaly score") {
				t.Errorf("doc string %q", m.DocString)
			}
			int8s := 0
			for _, in := range m.Graph.Initializers {
				if in.Type == onnx.Int8 {
					int8s++
				}
			}
			if strings.HasSuffix(name, card.Int8) != (int8s > 0) {
				t.Errorf("%d int8 initializers", int8s)
			}
		})
	}
}

func TestReadRoundTripModel(t *testing.T) {
	w := []float32{1, 0.5, -2, 0, 1, 0.25, 3, -1, 1}
	m, err := onnx.ReconstructionScorer(3, w, []float32{0.5, -1, 2})
	if err != nil {
		t.Fatal(err)
	}
	m.MetadataProps = map[string]string{"a": "1", "b": ""}
	m.ModelVersion = 7
	// Everything else the writer supports: raw and int8 data, scalars, negative ints, FLOATS
	// and empty FLOATS attributes, a node domain, a named node.
	g := m.Graph
	g.Initializers = append(g.Initializers,
		onnx.Tensor{Name: "q", Type: onnx.Int8, Dims: []int64{2, 2}, Raw: []byte{1, 0xff, 0x80, 0x7f}},
		onnx.Tensor{Name: "u", Type: onnx.Uint8, Dims: []int64{}, Raw: []byte{200}},
		onnx.Tensor{Name: "rf", Type: onnx.Float, Dims: []int64{1}, Raw: []byte{0, 0, 0x80, 0x3f}},
		onnx.Tensor{Name: "empty", Type: onnx.Float, Dims: []int64{0, 3}, Floats: []float32{}},
		onnx.Tensor{Name: "neg", Type: onnx.Int64, Dims: []int64{2}, Int64s: []int64{-1, 1 << 40}})
	g.Nodes = append(g.Nodes,
		onnx.Node{Name: "custom", OpType: "Foo", Domain: "ai.onnx", Inputs: []string{"score", ""}, Outputs: []string{"z"},
			Attrs: []onnx.Attr{onnx.AttrInts("axes", -1, 2), onnx.AttrFloat("alpha", -0.5), {Name: "fs", Floats: []float32{1.5, 2}},
				{Name: "none", Floats: []float32{}}, onnx.AttrInt("neg", -3)}})
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := onnx.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := withDefaults(m); !reflect.DeepEqual(got, want) {
		t.Errorf("Read(Marshal(m)):\n got %+v\nwant %+v", got.Graph, want.Graph)
		for i := range want.Graph.Nodes {
			if !reflect.DeepEqual(got.Graph.Nodes[i], want.Graph.Nodes[i]) {
				t.Errorf("node %d: got %+v, want %+v", i, got.Graph.Nodes[i], want.Graph.Nodes[i])
			}
		}
		for i := range want.Graph.Initializers {
			if !reflect.DeepEqual(got.Graph.Initializers[i], want.Graph.Initializers[i]) {
				t.Errorf("initializer %d: got %+v, want %+v", i, got.Graph.Initializers[i], want.Graph.Initializers[i])
			}
		}
	}
	if f, err := got.Graph.Initializers[5].FloatData(); err != nil || len(f) != 1 || f[0] != 1 {
		t.Errorf("raw float data = %v, %v; want [1]", f, err)
	}
}

// Hand-written protobuf in the forms other producers use: unpacked dims and ints, int32_data,
// no attribute type (IR 1), unknown fields everywhere.
func TestReadOtherEncodings(t *testing.T) {
	var attr []byte
	attr = protowire.AppendTag(attr, 1, protowire.BytesType)
	attr = protowire.AppendString(attr, "perm")
	for _, v := range []uint64{1, 0} {
		attr = protowire.AppendTag(attr, 8, protowire.VarintType) // unpacked ints, no type
		attr = protowire.AppendVarint(attr, v)
	}
	attr = protowire.AppendTag(attr, 99, protowire.VarintType) // unknown
	attr = protowire.AppendVarint(attr, 5)
	var node []byte
	node = protowire.AppendTag(node, 1, protowire.BytesType)
	node = protowire.AppendString(node, "x")
	node = protowire.AppendTag(node, 2, protowire.BytesType)
	node = protowire.AppendString(node, "y")
	node = protowire.AppendTag(node, 4, protowire.BytesType)
	node = protowire.AppendString(node, "Transpose")
	node = protowire.AppendTag(node, 5, protowire.BytesType)
	node = protowire.AppendBytes(node, attr)
	node = protowire.AppendTag(node, 6, protowire.BytesType) // doc_string: skipped
	node = protowire.AppendString(node, "doc")
	var tensor []byte
	for _, d := range []uint64{2, 1} {
		tensor = protowire.AppendTag(tensor, 1, protowire.VarintType) // unpacked dims
		tensor = protowire.AppendVarint(tensor, d)
	}
	tensor = protowire.AppendTag(tensor, 2, protowire.VarintType)
	tensor = protowire.AppendVarint(tensor, uint64(onnx.Int8))
	tensor = protowire.AppendTag(tensor, 5, protowire.BytesType) // packed int32_data
	tensor = protowire.AppendBytes(tensor, protowire.AppendVarint(protowire.AppendVarint(nil, 3), uint64(0xffffffffffffffff)))
	tensor = protowire.AppendTag(tensor, 8, protowire.BytesType)
	tensor = protowire.AppendString(tensor, "t")
	g := &onnx.Graph{Name: "g"}
	g.Input("x", onnx.Float, onnx.Fixed(1), onnx.Fixed(2))
	g.Output("y", onnx.Float, onnx.Fixed(2), onnx.Fixed(1))
	base, err := (&onnx.Model{Graph: g}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m0, err := onnx.Read(base)
	if err != nil {
		t.Fatal(err)
	}
	// Append more graph fields by re-encoding the graph: a GraphProto's fields may come in any
	// order and a repeated field may be split, so graph = old graph bytes + new fields.
	var graph []byte
	walkTop(t, base, func(num protowire.Number, b []byte) {
		if num == 7 {
			graph = append([]byte(nil), b...)
		}
	})
	graph = protowire.AppendTag(graph, 1, protowire.BytesType)
	graph = protowire.AppendBytes(graph, node)
	graph = protowire.AppendTag(graph, 5, protowire.BytesType)
	graph = protowire.AppendBytes(graph, tensor)
	graph = protowire.AppendTag(graph, 13, protowire.BytesType) // value_info: skipped
	graph = protowire.AppendBytes(graph, nil)
	var model []byte
	model = protowire.AppendTag(model, 3, protowire.BytesType) // producer_version: skipped
	model = protowire.AppendString(model, "1.0")
	model = protowire.AppendTag(model, 7, protowire.BytesType)
	model = protowire.AppendBytes(model, graph)
	model = protowire.AppendTag(model, 1, protowire.VarintType)
	model = protowire.AppendVarint(model, 9)
	m, err := onnx.Read(model)
	if err != nil {
		t.Fatal(err)
	}
	if m.IRVersion != 9 || m.OpsetVersion != 0 || m.Graph.Name != "g" || !reflect.DeepEqual(m.Graph.Inputs, m0.Graph.Inputs) {
		t.Errorf("model = %+v, graph %+v", m, m.Graph)
	}
	n := m.Graph.Nodes[0]
	if n.OpType != "Transpose" || len(n.Attrs) != 1 || !reflect.DeepEqual(n.Attrs[0].Ints, []int64{1, 0}) || n.Attrs[0].Int != nil {
		t.Errorf("node = %+v", n)
	}
	tt := m.Graph.Initializers[0]
	if tt.Name != "t" || tt.Type != onnx.Int8 || !reflect.DeepEqual(tt.Dims, []int64{2, 1}) || !bytes.Equal(tt.Raw, []byte{3, 0xff}) {
		t.Errorf("tensor = %+v", tt)
	}
}

// walkTop calls fn with each length-delimited top-level field of b.
func walkTop(t *testing.T, b []byte, fn func(protowire.Number, []byte)) {
	t.Helper()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatal(protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			fn(num, v)
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		b = b[n:]
	}
}

func TestReadMalformed(t *testing.T) {
	good, err := onnx.ReconstructionScorer(2, []float32{1, 0, 0, 1}, []float32{0, 0})
	if err != nil {
		t.Fatal(err)
	}
	goodBytes, err := good.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// model wraps graph fields (appended to a valid graph) into a model.
	model := func(extra func(g []byte) []byte) []byte {
		var graph []byte
		walkTop(t, goodBytes, func(num protowire.Number, b []byte) {
			if num == 7 {
				graph = append([]byte(nil), b...)
			}
		})
		b := protowire.AppendTag(nil, 7, protowire.BytesType)
		return protowire.AppendBytes(b, extra(graph))
	}
	msg := func(g []byte, num protowire.Number, body []byte) []byte {
		g = protowire.AppendTag(g, num, protowire.BytesType)
		return protowire.AppendBytes(g, body)
	}
	tensor := func(dims []uint64, typ onnx.DataType, field protowire.Number, data []byte) []byte {
		var b []byte
		for _, d := range dims {
			b = protowire.AppendTag(b, 1, protowire.VarintType)
			b = protowire.AppendVarint(b, d)
		}
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(typ))
		b = protowire.AppendTag(b, 8, protowire.BytesType)
		b = protowire.AppendString(b, "bad")
		return msg(b, field, data)
	}
	nodeWithAttr := func(attr []byte) []byte {
		var n []byte
		n = protowire.AppendTag(n, 4, protowire.BytesType)
		n = protowire.AppendString(n, "Op")
		return msg(n, 5, attr)
	}
	stringAttr := append(protowire.AppendVarint(protowire.AppendTag(nil, 20, protowire.VarintType), 3),
		protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "mode")...)
	opset := func(domain string) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, domain)
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		return protowire.AppendVarint(b, 1)
	}
	for _, c := range []struct {
		name, want string
		data       []byte
	}{
		{"empty", "no graph", nil},
		{"truncated", "", goodBytes[:len(goodBytes)-3]},
		{"garbage", "", []byte{0xff, 0xff, 0xff}},
		{"graph varint", "graph", protowire.AppendVarint(protowire.AppendTag(nil, 7, protowire.VarintType), 1)},
		{"two graphs", "more than one graph", append(append([]byte(nil), goodBytes...), msg(nil, 7, nil)...)},
		{"other domain", `domain "com.microsoft"`, append(append([]byte(nil), goodBytes...), msg(nil, 8, opset("com.microsoft"))...)},
		{"functions", "functions", append(append([]byte(nil), goodBytes...), msg(nil, 25, nil)...)},
		{"short raw", `initializer "bad": raw_data has 3 bytes`, model(func(g []byte) []byte { return msg(g, 5, tensor([]uint64{2}, onnx.Float, 9, []byte{1, 2, 3})) })},
		{"short floats", `initializer "bad": 1 float_data values`, model(func(g []byte) []byte { return msg(g, 5, tensor([]uint64{2}, onnx.Float, 4, []byte{0, 0, 0, 0})) })},
		{"ragged floats", "not a whole number of floats", model(func(g []byte) []byte { return msg(g, 5, tensor([]uint64{2}, onnx.Float, 4, []byte{0, 0, 0})) })},
		{"negative dim", "negative dimension", model(func(g []byte) []byte {
			return msg(g, 5, tensor([]uint64{uint64(0xffffffffffffffff)}, onnx.Float, 9, nil))
		})},
		{"huge dims", "more elements than the data holds", model(func(g []byte) []byte {
			return msg(g, 5, tensor([]uint64{1 << 40, 1 << 40}, onnx.Int8, 9, []byte{1}))
		})},
		{"string tensor", "not supported", model(func(g []byte) []byte { return msg(g, 5, tensor([]uint64{1}, 8, 6, []byte("s"))) })},
		{"external", "external data", model(func(g []byte) []byte { return msg(g, 5, tensor([]uint64{1}, onnx.Float, 13, nil)) })},
		{"string attr", `attribute "mode": STRING attributes are not supported`, model(func(g []byte) []byte { return msg(g, 1, nodeWithAttr(stringAttr)) })},
		{"no op_type", "no op_type", model(func(g []byte) []byte { return msg(g, 1, nil) })},
		{"sparse", "sparse", model(func(g []byte) []byte { return msg(g, 15, nil) })},
		{"no io", "input and one output", msg(nil, 7, nil)},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := onnx.Read(c.data)
			if !errors.Is(err, onnx.ErrMalformed) {
				t.Fatalf("Read = %v, %v; want ErrMalformed", m, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	m, err := onnx.ReconstructionScorer(2, []float32{1, 0, 0, 1}, []float32{0, 0})
	if err != nil {
		f.Fatal(err)
	}
	m.Graph.Initializers = append(m.Graph.Initializers, onnx.Tensor{Name: "q", Type: onnx.Int8, Dims: []int64{2}, Raw: []byte{1, 2}})
	m.Graph.Nodes[0].Attrs = []onnx.Attr{onnx.AttrFloat("f", 1), {Name: "fs", Floats: []float32{1}}}
	b, err := m.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := onnx.Read(data)
		if err != nil {
			if !errors.Is(err, onnx.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What Read accepts, Marshal writes, and reading that gives the same model.
		b, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a model Read accepted: %v", err)
		}
		again, err := onnx.Read(b)
		if err != nil {
			t.Fatalf("Read(Marshal(Read(data))): %v", err)
		}
		b2, err := again.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, b2) { // bytes, not reflect.DeepEqual: a NaN is not equal to itself
			t.Fatalf("round trip differs:\n%+v\n%+v", again.Graph, m.Graph)
		}
	})
}
