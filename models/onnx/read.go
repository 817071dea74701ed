package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformed reports bytes that [Read] cannot decode as a model of the supported subset.
var ErrMalformed = errors.New("onnx: malformed model")

// Read decodes a serialized ModelProto into a [Model]: the subset [Model.Marshal] writes (one
// graph; nodes with INT, FLOAT, INTS and FLOATS attributes; FLOAT, INT64 and raw-data
// initializers of fixed-size types; inputs and outputs with fixed or symbolic dimensions; the
// default-domain opset; doc string; metadata). Read(m.Marshal()) equals m with Marshal's defaults
// filled in (ProducerName, IRVersion, OpsetVersion).
//
// Fields outside that subset that do not change what the graph computes (producer_version,
// value_info, doc strings of nodes and graphs, training_info, ...) are skipped. Fields that do
// (a sparse initializer, a model-local function, an opset import of another domain, STRING or
// GRAPH attributes, external tensor data) are errors, as is anything malformed: each error
// wraps [ErrMalformed] and names the field and the node, tensor or value it is in. Raw initializer
// data is kept as [Tensor.Raw] (see [Tensor.FloatData]); int32_data of INT8, UINT8 and INT32
// tensors is converted to Raw. Read never panics and allocates at most a small multiple of
// len(data); it does not retain data.
func Read(data []byte) (*Model, error) {
	m, err := readModel(data)
	if err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return m, nil
}

// field is one decoded protobuf field: a varint, fixed32 or fixed64 in v, or bytes in b.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

// walk calls fn for each field of the message msg; where names the message in errors.
func walk(msg []byte, where string, fn func(f field) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return fmt.Errorf("%w: %s: bad tag: %w", ErrMalformed, where, protowire.ParseError(n))
		}
		msg = msg[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(msg)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(msg)
			f.v = uint64(v)
		case protowire.Fixed64Type:
			f.v, n = protowire.ConsumeFixed64(msg)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(msg)
		default:
			n = protowire.ConsumeFieldValue(num, typ, msg) // groups: skipped
		}
		if n < 0 {
			return fmt.Errorf("%w: %s: field %d: %w", ErrMalformed, where, num, protowire.ParseError(n))
		}
		msg = msg[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// wireErr reports a known field with the wrong wire type.
func wireErr(where, name string, f field) error {
	return fmt.Errorf("%w: %s: %s (field %d) has wire type %d", ErrMalformed, where, name, f.num, f.typ)
}

// varint reads a singular varint field.
func varint(where, name string, f field) (int64, error) {
	if f.typ != protowire.VarintType {
		return 0, wireErr(where, name, f)
	}
	return int64(f.v), nil
}

// str reads a string or bytes field.
func str(where, name string, f field) (string, error) {
	if f.typ != protowire.BytesType {
		return "", wireErr(where, name, f)
	}
	return string(f.b), nil
}

// varints appends a repeated varint field, packed or not.
func varints(dst []int64, where, name string, f field) ([]int64, error) {
	switch f.typ {
	case protowire.VarintType:
		return append(dst, int64(f.v)), nil
	case protowire.BytesType:
		for b := f.b; len(b) > 0; {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("%w: %s: packed %s: %w", ErrMalformed, where, name, protowire.ParseError(n))
			}
			dst = append(dst, int64(v))
			b = b[n:]
		}
		return dst, nil
	}
	return nil, wireErr(where, name, f)
}

// floats appends a repeated float field, packed or not.
func floats(dst []float32, where, name string, f field) ([]float32, error) {
	switch f.typ {
	case protowire.Fixed32Type:
		return append(dst, math.Float32frombits(uint32(f.v))), nil
	case protowire.BytesType:
		if len(f.b)%4 != 0 {
			return nil, fmt.Errorf("%w: %s: packed %s: %d bytes is not a whole number of floats", ErrMalformed, where, name, len(f.b))
		}
		for b := f.b; len(b) > 0; b = b[4:] {
			dst = append(dst, math.Float32frombits(binary.LittleEndian.Uint32(b)))
		}
		return dst, nil
	}
	return nil, wireErr(where, name, f)
}

func readModel(data []byte) (*Model, error) {
	m := &Model{}
	graphs := 0
	err := walk(data, "model", func(f field) error {
		var err error
		switch f.num {
		case 1:
			m.IRVersion, err = varint("model", "ir_version", f)
		case 2:
			m.ProducerName, err = str("model", "producer_name", f)
		case 5:
			m.ModelVersion, err = varint("model", "model_version", f)
		case 6:
			m.DocString, err = str("model", "doc_string", f)
		case 7:
			if f.typ != protowire.BytesType {
				return wireErr("model", "graph", f)
			}
			if graphs++; graphs > 1 {
				return fmt.Errorf("%w: model: more than one graph field", ErrMalformed)
			}
			m.Graph, err = readGraph(f.b)
		case 8:
			if f.typ != protowire.BytesType {
				return wireErr("model", "opset_import", f)
			}
			err = readOpset(m, f.b)
		case 14:
			if f.typ != protowire.BytesType {
				return wireErr("model", "metadata_props", f)
			}
			var k, v string
			err = walk(f.b, "model: metadata_props", func(f field) error {
				var err error
				switch f.num {
				case 1:
					k, err = str("model: metadata_props", "key", f)
				case 2:
					v, err = str("model: metadata_props", "value", f)
				}
				return err
			})
			if m.MetadataProps == nil {
				m.MetadataProps = map[string]string{}
			}
			m.MetadataProps[k] = v
		case 25:
			return fmt.Errorf("%w: model: model-local functions are not supported", ErrMalformed)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if m.Graph == nil {
		return nil, fmt.Errorf("%w: model: no graph", ErrMalformed)
	}
	return m, nil
}

// readOpset reads one OperatorSetIdProto into m.OpsetVersion; only the default domain ("" or
// "ai.onnx") is supported.
func readOpset(m *Model, b []byte) error {
	var domain string
	var version int64
	err := walk(b, "model: opset_import", func(f field) error {
		var err error
		switch f.num {
		case 1:
			domain, err = str("model: opset_import", "domain", f)
		case 2:
			version, err = varint("model: opset_import", "version", f)
		}
		return err
	})
	if err != nil {
		return err
	}
	if domain != "" && domain != "ai.onnx" {
		return fmt.Errorf("%w: model: opset_import of domain %q: only the default domain is supported", ErrMalformed, domain)
	}
	if m.OpsetVersion != 0 && m.OpsetVersion != version {
		return fmt.Errorf("%w: model: two opset_imports of the default domain (%d and %d)", ErrMalformed, m.OpsetVersion, version)
	}
	if version <= 0 {
		return fmt.Errorf("%w: model: opset_import of the default domain has version %d", ErrMalformed, version)
	}
	m.OpsetVersion = version
	return nil
}

func readGraph(b []byte) (*Graph, error) {
	g := &Graph{}
	err := walk(b, "graph", func(f field) error {
		var err error
		switch f.num {
		case 1, 5, 11, 12, 15:
			if f.typ != protowire.BytesType {
				return wireErr("graph", "a message field", f)
			}
		}
		switch f.num {
		case 1:
			var n Node
			n, err = readNode(f.b, len(g.Nodes))
			g.Nodes = append(g.Nodes, n)
		case 2:
			g.Name, err = str("graph", "name", f)
		case 5:
			var t Tensor
			t, err = readTensor(f.b, len(g.Initializers))
			g.Initializers = append(g.Initializers, t)
		case 11, 12:
			var v ValueInfo
			v, err = readValueInfo(f.b)
			if f.num == 11 {
				g.Inputs = append(g.Inputs, v)
			} else {
				g.Outputs = append(g.Outputs, v)
			}
		case 15:
			err = fmt.Errorf("%w: graph: sparse initializers are not supported", ErrMalformed)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

func readNode(b []byte, index int) (Node, error) {
	var n Node
	where := fmt.Sprintf("node %d", index)
	err := walk(b, where, func(f field) error {
		var err error
		var s string
		switch f.num {
		case 1:
			s, err = str(where, "input", f)
			n.Inputs = append(n.Inputs, s)
		case 2:
			s, err = str(where, "output", f)
			n.Outputs = append(n.Outputs, s)
		case 3:
			n.Name, err = str(where, "name", f)
		case 4:
			n.OpType, err = str(where, "op_type", f)
		case 5:
			if f.typ != protowire.BytesType {
				return wireErr(where, "attribute", f)
			}
			var a Attr
			a, err = readAttr(f.b, fmt.Sprintf("%s (%s %q)", where, n.OpType, n.Name))
			n.Attrs = append(n.Attrs, a)
		case 7:
			n.Domain, err = str(where, "domain", f)
		}
		return err
	})
	if err != nil {
		return Node{}, err
	}
	if n.OpType == "" {
		return Node{}, fmt.Errorf("%w: %s (%q): no op_type", ErrMalformed, where, n.Name)
	}
	return n, nil
}

// AttributeProto.AttributeType values the writer does not produce, for error messages.
var attrTypeNames = map[int64]string{3: "STRING", 4: "TENSOR", 5: "GRAPH", 8: "STRINGS", 9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR", 12: "SPARSE_TENSORS", 13: "TYPE_PROTO", 14: "TYPE_PROTOS"}

func readAttr(b []byte, where string) (Attr, error) {
	var a Attr
	var typ int64
	var i int64
	var fl float32
	var hasI, hasF, hasInts, hasFloats, other bool
	err := walk(b, where+": attribute", func(f field) error {
		var err error
		w := where + ": attribute " + a.Name
		switch f.num {
		case 1:
			a.Name, err = str(where, "attribute name", f)
		case 2:
			if f.typ != protowire.Fixed32Type {
				return wireErr(w, "f", f)
			}
			fl, hasF = math.Float32frombits(uint32(f.v)), true
		case 3:
			i, err = varint(w, "i", f)
			hasI = true
		case 7:
			a.Floats, err = floats(a.Floats, w, "floats", f)
			hasFloats = true
		case 8:
			a.Ints, err = varints(a.Ints, w, "ints", f)
			hasInts = true
		case 4, 5, 6, 9, 10, 11, 22, 23, 15, 16:
			other = true
		case 20:
			typ, err = varint(w, "type", f)
		}
		return err
	})
	if err != nil {
		return Attr{}, err
	}
	if typ == 0 { // IR < 2 models have no type: infer it from the value present
		switch {
		case hasF:
			typ = attrFloat
		case hasI:
			typ = attrInt
		case hasFloats:
			typ = attrFloats
		case hasInts:
			typ = attrInts
		case other:
			typ = 3
		}
	}
	switch typ {
	case attrFloat:
		a.Float, a.Floats, a.Ints = &fl, nil, nil
	case attrInt:
		a.Int, a.Floats, a.Ints = &i, nil, nil
	case attrFloats:
		if a.Floats == nil {
			a.Floats = []float32{} // non-nil: an empty FLOATS attribute
		}
		a.Ints = nil
	case attrInts:
		a.Floats = nil
	default:
		name := attrTypeNames[typ]
		if name == "" {
			name = fmt.Sprintf("type %d", typ)
		}
		return Attr{}, fmt.Errorf("%w: %s: attribute %q: %s attributes are not supported", ErrMalformed, where, a.Name, name)
	}
	return a, nil
}

// elemSize is the byte size of one element of each fixed-size TensorProto.DataType.
var elemSize = map[DataType]int64{
	1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
	17: 1, 18: 1, 19: 1, 20: 1,
}

// elements is the number of elements of a tensor of dims, or an error if a dim is negative or
// the count exceeds limit.
func elements(dims []int64, limit int64) (int64, error) {
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in %v", dims)
		}
		if d == 0 {
			return 0, nil
		}
	}
	n := int64(1)
	for _, d := range dims {
		if n > limit/d {
			return 0, fmt.Errorf("dims %v: more elements than the data holds", dims)
		}
		n *= d
	}
	return n, nil
}

func readTensor(b []byte, index int) (Tensor, error) {
	t := Tensor{Dims: []int64{}}
	where := fmt.Sprintf("initializer %d", index)
	var int32s []int64
	var hasRaw, hasInt32 bool
	err := walk(b, where, func(f field) error {
		var err error
		switch f.num {
		case 1:
			t.Dims, err = varints(t.Dims, where, "dims", f)
		case 2:
			var v int64
			v, err = varint(where, "data_type", f)
			t.Type = DataType(v)
		case 4:
			t.Floats, err = floats(t.Floats, where, "float_data", f)
		case 5:
			int32s, err = varints(int32s, where, "int32_data", f)
			hasInt32 = true
		case 7:
			t.Int64s, err = varints(t.Int64s, where, "int64_data", f)
		case 8:
			t.Name, err = str(where, "name", f)
			where = fmt.Sprintf("initializer %q", t.Name)
		case 9:
			if f.typ != protowire.BytesType {
				return wireErr(where, "raw_data", f)
			}
			t.Raw, hasRaw = append([]byte{}, f.b...), true
		case 6, 10, 11:
			return fmt.Errorf("%w: %s: string, double or uint64 data is not supported", ErrMalformed, where)
		case 13, 14:
			if f.num == 14 && f.typ == protowire.VarintType && f.v == 0 {
				return nil // data_location DEFAULT
			}
			return fmt.Errorf("%w: %s: external data is not supported", ErrMalformed, where)
		case 12:
			return fmt.Errorf("%w: %s: segmented tensors are not supported", ErrMalformed, where)
		}
		return err
	})
	if err != nil {
		return Tensor{}, err
	}
	size, ok := elemSize[t.Type]
	if !ok {
		return Tensor{}, fmt.Errorf("%w: %s: data type %d is not supported", ErrMalformed, where, t.Type)
	}
	n, err := elements(t.Dims, int64(len(b))+1)
	if err != nil {
		return Tensor{}, fmt.Errorf("%w: %s: %w", ErrMalformed, where, err)
	}
	typed := 0
	for _, has := range []bool{t.Floats != nil, t.Int64s != nil, hasInt32, hasRaw} {
		if has {
			typed++
		}
	}
	if typed > 1 {
		return Tensor{}, fmt.Errorf("%w: %s: data in more than one field", ErrMalformed, where)
	}
	switch {
	case hasRaw:
		if int64(len(t.Raw)) != n*size {
			return Tensor{}, fmt.Errorf("%w: %s: raw_data has %d bytes, dims %v of type %d need %d", ErrMalformed, where, len(t.Raw), t.Dims, t.Type, n*size)
		}
	case t.Floats != nil && t.Type != Float, t.Int64s != nil && t.Type != Int64:
		return Tensor{}, fmt.Errorf("%w: %s: data field does not match data type %d", ErrMalformed, where, t.Type)
	case hasInt32:
		if t.Type != Int8 && t.Type != Uint8 && t.Type != Int32 {
			return Tensor{}, fmt.Errorf("%w: %s: int32_data of data type %d is not supported", ErrMalformed, where, t.Type)
		}
		if int64(len(int32s)) != n {
			return Tensor{}, fmt.Errorf("%w: %s: %d int32_data values, dims %v need %d", ErrMalformed, where, len(int32s), t.Dims, n)
		}
		t.Raw = make([]byte, 0, n*size)
		for _, v := range int32s {
			if t.Type == Int32 {
				t.Raw = binary.LittleEndian.AppendUint32(t.Raw, uint32(v))
			} else {
				t.Raw = append(t.Raw, byte(v))
			}
		}
	case t.Type == Float:
		if int64(len(t.Floats)) != n {
			return Tensor{}, fmt.Errorf("%w: %s: %d float_data values, dims %v need %d", ErrMalformed, where, len(t.Floats), t.Dims, n)
		}
		if t.Floats == nil {
			t.Floats = []float32{}
		}
	case t.Type == Int64:
		if int64(len(t.Int64s)) != n {
			return Tensor{}, fmt.Errorf("%w: %s: %d int64_data values, dims %v need %d", ErrMalformed, where, len(t.Int64s), t.Dims, n)
		}
		if t.Int64s == nil {
			t.Int64s = []int64{}
		}
	default:
		return Tensor{}, fmt.Errorf("%w: %s: no data for data type %d", ErrMalformed, where, t.Type)
	}
	return t, nil
}

func readValueInfo(b []byte) (ValueInfo, error) {
	var v ValueInfo
	where := "value"
	var typ []byte
	err := walk(b, where, func(f field) error {
		var err error
		switch f.num {
		case 1:
			v.Name, err = str(where, "name", f)
			where = fmt.Sprintf("value %q", v.Name)
		case 2:
			if f.typ != protowire.BytesType {
				return wireErr(where, "type", f)
			}
			typ = f.b
		}
		return err
	})
	if err != nil {
		return ValueInfo{}, err
	}
	var tensor []byte
	hasTensor := false
	err = walk(typ, where+": type", func(f field) error {
		switch f.num {
		case 1:
			if f.typ != protowire.BytesType {
				return wireErr(where, "tensor_type", f)
			}
			tensor, hasTensor = f.b, true
		case 4, 5, 6, 8, 9:
			return fmt.Errorf("%w: %s: only tensor types are supported", ErrMalformed, where)
		}
		return nil
	})
	if err != nil {
		return ValueInfo{}, err
	}
	if !hasTensor {
		return ValueInfo{}, fmt.Errorf("%w: %s: no tensor type", ErrMalformed, where)
	}
	err = walk(tensor, where+": tensor_type", func(f field) error {
		switch f.num {
		case 1:
			t, err := varint(where, "elem_type", f)
			v.Type = DataType(t)
			return err
		case 2:
			if f.typ != protowire.BytesType {
				return wireErr(where, "shape", f)
			}
			return walk(f.b, where+": shape", func(f field) error {
				if f.num != 1 {
					return nil
				}
				if f.typ != protowire.BytesType {
					return wireErr(where, "dim", f)
				}
				var d Dim
				err := walk(f.b, where+": dim", func(f field) error {
					var err error
					switch f.num {
					case 1:
						d.Value, err = varint(where, "dim_value", f)
					case 2:
						d.Param, err = str(where, "dim_param", f)
					}
					return err
				})
				v.Shape = append(v.Shape, d)
				return err
			})
		}
		return nil
	})
	if err != nil {
		return ValueInfo{}, err
	}
	return v, nil
}

// FloatData returns the values of a FLOAT tensor, from Floats or from little-endian Raw data.
// The result may share memory with t.
func (t *Tensor) FloatData() ([]float32, error) {
	if t.Type != Float {
		return nil, fmt.Errorf("onnx: tensor %q: data type %d is not FLOAT", t.Name, t.Type)
	}
	if t.Raw == nil {
		return t.Floats, nil
	}
	if len(t.Raw)%4 != 0 {
		return nil, fmt.Errorf("onnx: tensor %q: %d raw bytes is not a whole number of floats", t.Name, len(t.Raw))
	}
	out := make([]float32, len(t.Raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Raw[4*i:]))
	}
	return out, nil
}

// DataBytes is the size in bytes of t's elements: len(Raw) for raw data, else 4 per float and 8
// per int64 (what the tensor occupies in memory; Marshal writes int64s as varints, often fewer).
func (t *Tensor) DataBytes() int {
	switch {
	case t.Raw != nil:
		return len(t.Raw)
	case t.Type == Float:
		return 4 * len(t.Floats)
	case t.Type == Int64:
		return 8 * len(t.Int64s)
	}
	return 0
}

// String is the name of a data type as ONNX spells it ("FLOAT", "INT8", ...).
func (d DataType) String() string {
	if s, ok := dataTypeNames[d]; ok {
		return s
	}
	return fmt.Sprintf("DataType(%d)", int32(d))
}

var dataTypeNames = map[DataType]string{
	0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
	8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
	15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ",
}
