package wasm

import (
	"context"
	"encoding/binary"
	"math"

	"github.com/tetratelabs/wazero/api"

	"github.com/perch-edge/perch/sdk/abi"
)

// Caps on one perch:infer/v1 infer call; larger calls get EINVAL.
const (
	maxInferRows   = 4096    // rows per call
	maxInferValues = 1 << 20 // float32 values per call (4 MiB)
	maxModelName   = abi.MaxString
)

// Scorer scores rows of float32 values: one score per row. models/ort's Session is one.
// Implementations must be safe for concurrent use: a model node and the modules granted the
// model call the same Scorer.
type Scorer interface {
	// Features is the number of values in one row.
	Features() int
	// ScoreFlat writes one score per row of x (whole rows back to back) into dst[:rows].
	ScoreFlat(dst, x []float32) error
}

// Model is one model granted to a module instance, by name.
type Model struct {
	Name string
	// Scorer scores its rows; nil when the model is unavailable (the ONNX Runtime library is
	// missing or the model failed to load): perch:infer/v1 then returns ENODEV.
	Scorer Scorer
}

// inferState is an instance's scratch space for infer, grown to the largest call seen and kept:
// a call in steady state allocates nothing.
type inferState struct {
	in  []float32
	out []float32
}

// model returns the granted model with the id, or an errno.
func (i *Instance) model(id uint32) (*Model, abi.Errno) {
	if uint64(id) >= uint64(len(i.spec.Grants.Models)) {
		return nil, abi.EPERM
	}
	m := &i.spec.Grants.Models[id]
	if m.Scorer == nil {
		return nil, abi.ENODEV
	}
	return m, abi.OK
}

// inferOpen is perch:infer/v1 open(name_ptr, name_len, info_ptr i32) -> errno.
//
// Looks up the model named by the UTF-8 bytes at [name_ptr, +name_len) (1 to 255 bytes) among
// the models granted to the module and writes two u32 at info_ptr (8 bytes): the model's id for
// infer (its index in the module's grants.models) and the number of float32 values in one of its
// input rows. Reads the name, writes 8 bytes. Errnos: OK; EINVAL (name length); EPERM (no model
// of that name is granted); ENODEV (granted, but unavailable: the ONNX Runtime library is missing
// or the model failed to load; the id is still written). A bad pointer closes the guest
// (bad_pointer).
func (i *Instance) inferOpen(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n, info := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
	if n == 0 || n > maxModelName {
		ret(stack, abi.EINVAL)
		return
	}
	name := i.read(ctx, mod, "infer.open", ptr, n)
	out := i.read(ctx, mod, "infer.open", info, 8)
	for id := range i.spec.Grants.Models {
		m := &i.spec.Grants.Models[id]
		if m.Name != string(name) {
			continue
		}
		binary.LittleEndian.PutUint32(out, uint32(id))
		if m.Scorer == nil {
			binary.LittleEndian.PutUint32(out[4:], 0)
			ret(stack, abi.ENODEV)
			return
		}
		binary.LittleEndian.PutUint32(out[4:], uint32(m.Scorer.Features()))
		ret(stack, abi.OK)
		return
	}
	ret(stack, abi.EPERM)
}

// infer is perch:infer/v1 infer(model_id, in_ptr, in_len, out_ptr, out_cap i32) -> errno.
//
// Scores the rows of little-endian float32 values at [in_ptr, +4·in_len) with the model: in_len
// is a count of values, a whole number of rows of the model's width (see open), at most 4096
// rows and 2^20 values. Writes one float32 score per row to [out_ptr, +4·rows); out_cap is the
// room there, in scores. The host applies no normalisation: rows go to the model as written
// (model nodes apply the card's; a module does its own). All rows are scored in one call into
// ONNX Runtime (in batches of the model's batch size). Reads 4·in_len bytes, writes 4·rows.
// Errnos: OK (in_len 0 scores nothing); EPERM (no model with this id is granted); ENODEV (the
// model is unavailable); EINVAL (in_len not whole rows, too many rows, or out_cap below the row
// count; nothing is written); EIO (ONNX Runtime failed). A bad pointer closes the guest
// (bad_pointer).
func (i *Instance) infer(ctx context.Context, mod api.Module, stack []uint64) {
	id, inPtr, inLen, outPtr, outCap := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3]), uint32(stack[4])
	m, e := i.model(id)
	if e != abi.OK {
		ret(stack, e)
		return
	}
	f := uint32(m.Scorer.Features())
	if inLen == 0 {
		ret(stack, abi.OK)
		return
	}
	if f == 0 || inLen > maxInferValues || inLen%f != 0 || inLen/f > maxInferRows || outCap < inLen/f {
		ret(stack, abi.EINVAL)
		return
	}
	rows := inLen / f
	in := i.read(ctx, mod, "infer", inPtr, 4*inLen)
	out := i.read(ctx, mod, "infer", outPtr, 4*rows)
	st := &i.inferScratch
	if uint32(cap(st.in)) < inLen {
		st.in = make([]float32, inLen)
	}
	if uint32(cap(st.out)) < rows {
		st.out = make([]float32, rows)
	}
	x, dst := st.in[:inLen], st.out[:rows]
	for k := range x {
		x[k] = math.Float32frombits(binary.LittleEndian.Uint32(in[4*k:]))
	}
	if err := m.Scorer.ScoreFlat(dst, x); err != nil {
		i.spec.Logger.Warn("infer failed", "module", i.spec.Name, "model", m.Name, "err", err)
		ret(stack, abi.EIO)
		return
	}
	for k, v := range dst {
		binary.LittleEndian.PutUint32(out[4*k:], math.Float32bits(v))
	}
	ret(stack, abi.OK)
}
