// Package onnx writes ONNX models (ModelProto, serialized protobuf) from Go, without Python and
// without generated protobuf code.
//
// # Overview
//
// It covers what Perch's anomaly scorers need: one graph with typed inputs and outputs (fixed or
// symbolic dimensions), float32 and int64 initializers, and nodes with int, ints and float
// attributes, in the default operator domain at opset [Opset]. Field numbers follow
// github.com/onnx/onnx/blob/main/onnx/onnx.proto; the encoder is protowire, so the output is plain
// protobuf that ONNX Runtime and the onnx Python package read.
//
// # Usage
//
//	g := &onnx.Graph{Name: "ae"}
//	g.Input("x", onnx.Float, onnx.Sym("N"), onnx.Fixed(4))
//	g.FloatInit("W", []int64{4, 4}, w)
//	g.Node("MatMul", []string{"x", "W"}, []string{"y"})
//	g.Output("y", onnx.Float, onnx.Sym("N"), onnx.Fixed(4))
//	b, err := (&onnx.Model{Graph: g}).Marshal()
//
// A Graph is plain data built by one goroutine; Marshal does not modify it.
package onnx

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// Opset is the default-domain operator set version models are written for.
const Opset = 17

// IRVersion is the ONNX IR version written into models (IR 8 goes with opset 17).
const IRVersion = 8

// DataType is an onnx.TensorProto.DataType.
type DataType int32

// The element types the writer supports.
const (
	Float DataType = 1
	Uint8 DataType = 2
	Int8  DataType = 3
	Int32 DataType = 6
	Int64 DataType = 7
)

// Dim is one dimension of a value's shape: a fixed size, or a symbolic name such as "N".
type Dim struct {
	Value int64
	Param string
}

// Fixed is a dimension of known size.
func Fixed(n int64) Dim { return Dim{Value: n} }

// Sym is a symbolic dimension (e.g. the batch size), bound at run time.
func Sym(name string) Dim { return Dim{Param: name} }

// ValueInfo is a graph input or output.
type ValueInfo struct {
	Name  string
	Type  DataType
	Shape []Dim
}

// Tensor is an initializer. Exactly one of Floats and Int64s is used, per Type.
type Tensor struct {
	Name   string
	Type   DataType
	Dims   []int64
	Floats []float32
	Int64s []int64
	Raw    []byte // raw little-endian data for other types (e.g. int8 weights); used if non-nil
}

// Attr is a node attribute: set exactly one of the value fields.
type Attr struct {
	Name   string
	Int    *int64
	Float  *float32
	Ints   []int64
	Floats []float32
}

// AttrInt is an INT attribute.
func AttrInt(name string, v int64) Attr { return Attr{Name: name, Int: &v} }

// AttrFloat is a FLOAT attribute.
func AttrFloat(name string, v float32) Attr { return Attr{Name: name, Float: &v} }

// AttrInts is an INTS attribute.
func AttrInts(name string, v ...int64) Attr { return Attr{Name: name, Ints: v} }

// Node is one operator application.
type Node struct {
	Name    string
	OpType  string
	Domain  string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
}

// Graph is a GraphProto.
type Graph struct {
	Name         string
	Inputs       []ValueInfo
	Outputs      []ValueInfo
	Initializers []Tensor
	Nodes        []Node
}

// Input appends a graph input.
func (g *Graph) Input(name string, t DataType, shape ...Dim) {
	g.Inputs = append(g.Inputs, ValueInfo{Name: name, Type: t, Shape: shape})
}

// Output appends a graph output.
func (g *Graph) Output(name string, t DataType, shape ...Dim) {
	g.Outputs = append(g.Outputs, ValueInfo{Name: name, Type: t, Shape: shape})
}

// FloatInit appends a float32 initializer of the given dims (row-major data).
func (g *Graph) FloatInit(name string, dims []int64, data []float32) {
	g.Initializers = append(g.Initializers, Tensor{Name: name, Type: Float, Dims: dims, Floats: data})
}

// Int64Init appends an int64 initializer (e.g. ReduceSum's axes input).
func (g *Graph) Int64Init(name string, dims []int64, data []int64) {
	g.Initializers = append(g.Initializers, Tensor{Name: name, Type: Int64, Dims: dims, Int64s: data})
}

// Node appends a node in the default domain; its name is generated if empty.
func (g *Graph) Node(op string, in, out []string, attrs ...Attr) {
	g.Nodes = append(g.Nodes, Node{Name: fmt.Sprintf("%s_%d", op, len(g.Nodes)), OpType: op, Inputs: in, Outputs: out, Attrs: attrs})
}

// Model is a ModelProto with one graph.
type Model struct {
	Graph         *Graph
	ProducerName  string // default "perch"
	OpsetVersion  int64  // default Opset
	IRVersion     int64  // default IRVersion
	DocString     string
	ModelVersion  int64
	MetadataProps map[string]string
}

// ErrInvalid reports a model the writer refuses to encode.
var ErrInvalid = errors.New("onnx: invalid model")

// Marshal encodes the model as a serialized ModelProto.
func (m *Model) Marshal() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	ir, opset, producer := m.IRVersion, m.OpsetVersion, m.ProducerName
	if ir == 0 {
		ir = IRVersion
	}
	if opset == 0 {
		opset = Opset
	}
	if producer == "" {
		producer = "perch"
	}
	var b []byte
	b = appendVarintField(b, 1, uint64(ir)) // ir_version
	b = appendStringField(b, 2, producer)   // producer_name
	if m.ModelVersion != 0 {
		b = appendVarintField(b, 5, uint64(m.ModelVersion)) // model_version
	}
	if m.DocString != "" {
		b = appendStringField(b, 6, m.DocString) // doc_string
	}
	b = appendMessageField(b, 7, encodeGraph(m.Graph)) // graph
	var op []byte
	op = appendStringField(op, 1, "")            // domain: default
	op = appendVarintField(op, 2, uint64(opset)) // version
	b = appendMessageField(b, 8, op)             // opset_import
	for _, k := range sortedKeys(m.MetadataProps) {
		var e []byte
		e = appendStringField(e, 1, k)
		e = appendStringField(e, 2, m.MetadataProps[k])
		b = appendMessageField(b, 14, e) // metadata_props
	}
	return b, nil
}

func (m *Model) validate() error {
	g := m.Graph
	if g == nil {
		return fmt.Errorf("%w: no graph", ErrInvalid)
	}
	var errs []error
	if len(g.Inputs) == 0 || len(g.Outputs) == 0 {
		errs = append(errs, fmt.Errorf("%w: graph needs at least one input and one output", ErrInvalid))
	}
	for _, t := range g.Initializers {
		n := int64(1)
		for _, d := range t.Dims {
			n *= d
		}
		switch {
		case t.Raw != nil:
		case t.Type == Float && int64(len(t.Floats)) != n:
			errs = append(errs, fmt.Errorf("%w: initializer %q has %d floats, dims %v need %d", ErrInvalid, t.Name, len(t.Floats), t.Dims, n))
		case t.Type == Int64 && int64(len(t.Int64s)) != n:
			errs = append(errs, fmt.Errorf("%w: initializer %q has %d int64s, dims %v need %d", ErrInvalid, t.Name, len(t.Int64s), t.Dims, n))
		case t.Type != Float && t.Type != Int64:
			errs = append(errs, fmt.Errorf("%w: initializer %q of type %d needs Raw data", ErrInvalid, t.Name, t.Type))
		}
	}
	for _, n := range g.Nodes {
		if n.OpType == "" {
			errs = append(errs, fmt.Errorf("%w: node %q has no op_type", ErrInvalid, n.Name))
		}
	}
	return errors.Join(errs...)
}

func encodeGraph(g *Graph) []byte {
	var b []byte
	for _, n := range g.Nodes {
		b = appendMessageField(b, 1, encodeNode(n)) // node
	}
	b = appendStringField(b, 2, g.Name) // name
	for _, t := range g.Initializers {
		b = appendMessageField(b, 5, encodeTensor(t)) // initializer
	}
	for _, v := range g.Inputs {
		b = appendMessageField(b, 11, encodeValueInfo(v)) // input
	}
	for _, v := range g.Outputs {
		b = appendMessageField(b, 12, encodeValueInfo(v)) // output
	}
	return b
}

func encodeNode(n Node) []byte {
	var b []byte
	for _, s := range n.Inputs {
		b = appendStringField(b, 1, s) // input
	}
	for _, s := range n.Outputs {
		b = appendStringField(b, 2, s) // output
	}
	if n.Name != "" {
		b = appendStringField(b, 3, n.Name) // name
	}
	b = appendStringField(b, 4, n.OpType) // op_type
	for _, a := range n.Attrs {
		b = appendMessageField(b, 5, encodeAttr(a)) // attribute
	}
	if n.Domain != "" {
		b = appendStringField(b, 7, n.Domain) // domain
	}
	return b
}

// AttributeProto.AttributeType values.
const (
	attrFloat  = 1
	attrInt    = 2
	attrFloats = 6
	attrInts   = 7
)

func encodeAttr(a Attr) []byte {
	var b []byte
	b = appendStringField(b, 1, a.Name) // name
	switch {
	case a.Float != nil:
		b = protowire.AppendTag(b, 2, protowire.Fixed32Type) // f
		b = protowire.AppendFixed32(b, math.Float32bits(*a.Float))
		b = appendVarintField(b, 20, attrFloat) // type
	case a.Int != nil:
		b = appendVarintField(b, 3, uint64(*a.Int)) // i
		b = appendVarintField(b, 20, attrInt)
	case a.Floats != nil:
		b = appendPackedFloats(b, 7, a.Floats) // floats
		b = appendVarintField(b, 20, attrFloats)
	default:
		b = appendPackedVarints(b, 8, a.Ints) // ints
		b = appendVarintField(b, 20, attrInts)
	}
	return b
}

func encodeTensor(t Tensor) []byte {
	var b []byte
	b = appendPackedVarints(b, 1, t.Dims)       // dims
	b = appendVarintField(b, 2, uint64(t.Type)) // data_type
	switch {
	case t.Raw != nil:
	case t.Type == Float:
		b = appendPackedFloats(b, 4, t.Floats) // float_data
	case t.Type == Int64:
		b = appendPackedVarints(b, 7, t.Int64s) // int64_data
	}
	b = appendStringField(b, 8, t.Name) // name
	if t.Raw != nil {
		b = protowire.AppendTag(b, 9, protowire.BytesType) // raw_data
		b = protowire.AppendBytes(b, t.Raw)
	}
	return b
}

func encodeValueInfo(v ValueInfo) []byte {
	var shape []byte
	for _, d := range v.Shape {
		var dim []byte
		if d.Param != "" {
			dim = appendStringField(dim, 2, d.Param) // dim_param
		} else {
			dim = appendVarintField(dim, 1, uint64(d.Value)) // dim_value
		}
		shape = appendMessageField(shape, 1, dim) // TensorShapeProto.dim
	}
	var tt []byte
	tt = appendVarintField(tt, 1, uint64(v.Type)) // TypeProto.Tensor.elem_type
	tt = appendMessageField(tt, 2, shape)         // shape
	var typ []byte
	typ = appendMessageField(typ, 1, tt) // TypeProto.tensor_type
	var b []byte
	b = appendStringField(b, 1, v.Name) // ValueInfoProto.name
	b = appendMessageField(b, 2, typ)   // type
	return b
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessageField(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendPackedVarints(b []byte, num protowire.Number, v []int64) []byte {
	if len(v) == 0 {
		return b
	}
	var p []byte
	for _, x := range v {
		p = protowire.AppendVarint(p, uint64(x))
	}
	return appendMessageField(b, num, p)
}

func appendPackedFloats(b []byte, num protowire.Number, v []float32) []byte {
	if len(v) == 0 {
		return b
	}
	p := make([]byte, 0, 4*len(v))
	for _, x := range v {
		p = protowire.AppendFixed32(p, math.Float32bits(x))
	}
	return appendMessageField(b, num, p)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic output
	return keys
}
