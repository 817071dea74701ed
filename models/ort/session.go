package ort

import (
	"errors"
	"fmt"
	"os"
	"sync"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// Options configure a [Session]. The zero value is one intra-op thread and batches of up to 64.
type Options struct {
	// IntraOpThreads is ONNX Runtime's intra-op thread count; 0 means 1 (an edge box runs other
	// work too, and tiny models gain nothing from more threads).
	IntraOpThreads int
	// MaxBatch is the largest batch one Run takes; larger batches are scored in chunks. 0 means 64.
	MaxBatch int
}

// ErrClosed is returned by a [Session] used after Close.
var ErrClosed = errors.New("ort: session closed")

// Session is one model loaded into ONNX Runtime. The model has one float input of shape
// [N, features] (N symbolic or fixed) and one float output of N scores ([N] or [N, 1]).
//
// Input and output tensors are allocated once per batch size (up to MaxBatch) and bound to the
// session, so a call in steady state allocates nothing in Go. Calls are serialised by a mutex:
// a Session is safe for concurrent use, but callers that need parallelism want one Session each.
// Close releases it.
type Session struct {
	mu       sync.Mutex
	sess     *onnxruntime.DynamicAdvancedSession
	inName   string
	outName  string
	features int
	maxBatch int
	fixedN   int64 // > 0 when the model's batch dimension is fixed
	outRank  int   // 1 for [N], 2 for [N, 1]
	bufs     []*batchBuf
}

type batchBuf struct {
	in      *onnxruntime.Tensor[float32]
	out     *onnxruntime.Tensor[float32]
	inData  []float32
	outData []float32
	binding *onnxruntime.IoBinding
}

// NewSessionFromFile loads the .onnx file at path; see [NewSession].
func NewSessionFromFile(path string, opts Options) (*Session, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ort: read model: %w", err)
	}
	s, err := NewSession(data, opts)
	if err != nil {
		return nil, fmt.Errorf("%w (model %s)", err, path)
	}
	return s, nil
}

// NewSession loads a serialized ONNX model. [Init] must have succeeded; otherwise its error is
// returned.
func NewSession(model []byte, opts Options) (*Session, error) {
	if err := Init(""); err != nil {
		return nil, err
	}
	if opts.IntraOpThreads < 0 || opts.MaxBatch < 0 {
		return nil, fmt.Errorf("ort: negative option: intra_op_threads %d, max_batch %d", opts.IntraOpThreads, opts.MaxBatch)
	}
	if opts.IntraOpThreads == 0 {
		opts.IntraOpThreads = 1
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 64
	}
	ins, outs, err := onnxruntime.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, fmt.Errorf("ort: inspect model: %w", err)
	}
	if len(ins) != 1 || len(outs) != 1 {
		return nil, fmt.Errorf("ort: model has %d inputs and %d outputs; want 1 and 1", len(ins), len(outs))
	}
	in, out := ins[0], outs[0]
	if in.OrtValueType != onnxruntime.ONNXTypeTensor || in.DataType != onnxruntime.TensorElementDataTypeFloat || len(in.Dimensions) != 2 || in.Dimensions[1] <= 0 {
		return nil, fmt.Errorf("ort: input %q is %v %v; want float [N, features]", in.Name, in.DataType, in.Dimensions)
	}
	if out.OrtValueType != onnxruntime.ONNXTypeTensor || out.DataType != onnxruntime.TensorElementDataTypeFloat ||
		len(out.Dimensions) < 1 || len(out.Dimensions) > 2 || (len(out.Dimensions) == 2 && out.Dimensions[1] != 1) {
		return nil, fmt.Errorf("ort: output %q is %v %v; want float [N] or [N, 1]", out.Name, out.DataType, out.Dimensions)
	}
	s := &Session{inName: in.Name, outName: out.Name, features: int(in.Dimensions[1]), maxBatch: opts.MaxBatch, outRank: len(out.Dimensions)}
	if n := in.Dimensions[0]; n > 0 {
		s.fixedN, s.maxBatch = n, int(n)
	}
	so, err := onnxruntime.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	defer so.Destroy()
	if err := errors.Join(
		so.SetIntraOpNumThreads(opts.IntraOpThreads),
		so.SetInterOpNumThreads(1),
		so.SetExecutionMode(onnxruntime.ExecutionModeSequential),
	); err != nil {
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	s.sess, err = onnxruntime.NewDynamicAdvancedSessionWithONNXData(model, []string{in.Name}, []string{out.Name}, so)
	if err != nil {
		return nil, fmt.Errorf("ort: create session: %w", err)
	}
	s.bufs = make([]*batchBuf, s.maxBatch+1)
	// Batch 1 and the largest batch are the common shapes: allocate them now.
	for _, n := range []int{1, s.maxBatch} {
		if s.fixedN > 0 && int64(n) != s.fixedN {
			continue
		}
		if _, err := s.buf(n); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Features is the number of values in one input row.
func (s *Session) Features() int { return s.features }

// MaxBatch is the number of rows one Run scores.
func (s *Session) MaxBatch() int { return s.maxBatch }

// buf returns the tensors for batches of n rows, allocating them on first use. s.mu held.
func (s *Session) buf(n int) (*batchBuf, error) {
	if b := s.bufs[n]; b != nil {
		return b, nil
	}
	b := &batchBuf{inData: make([]float32, n*s.features), outData: make([]float32, n)}
	var err error
	if b.in, err = onnxruntime.NewTensor(onnxruntime.NewShape(int64(n), int64(s.features)), b.inData); err != nil {
		return nil, fmt.Errorf("ort: input tensor: %w", err)
	}
	outShape := onnxruntime.NewShape(int64(n))
	if s.outRank == 2 {
		outShape = onnxruntime.NewShape(int64(n), 1)
	}
	if b.out, err = onnxruntime.NewTensor(outShape, b.outData); err != nil {
		b.destroy()
		return nil, fmt.Errorf("ort: output tensor: %w", err)
	}
	if b.binding, err = s.sess.CreateIoBinding(); err == nil {
		err = errors.Join(b.binding.BindInput(s.inName, b.in), b.binding.BindOutput(s.outName, b.out))
	}
	if err != nil {
		b.destroy()
		return nil, fmt.Errorf("ort: bind tensors: %w", err)
	}
	s.bufs[n] = b
	return b, nil
}

func (b *batchBuf) destroy() {
	if b.binding != nil {
		b.binding.Destroy()
	}
	if b.in != nil {
		b.in.Destroy()
	}
	if b.out != nil {
		b.out.Destroy()
	}
}

// Score returns one score per row of batch. Every row has [Session.Features] values.
func (s *Session) Score(batch [][]float32) ([]float32, error) {
	dst := make([]float32, len(batch))
	return dst, s.ScoreInto(dst, batch)
}

// ScoreInto writes one score per row of batch into dst[:len(batch)], allocating nothing once the
// batch sizes in use have been seen.
func (s *Session) ScoreInto(dst []float32, batch [][]float32) error {
	if len(dst) < len(batch) {
		return fmt.Errorf("ort: dst holds %d scores, batch has %d rows", len(dst), len(batch))
	}
	for i, r := range batch {
		if len(r) != s.features {
			return fmt.Errorf("ort: row %d has %d values, model takes %d", i, len(r), s.features)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for off := 0; off < len(batch); off += s.maxBatch {
		rows := batch[off:min(off+s.maxBatch, len(batch))]
		b, err := s.prepare(len(rows))
		if err != nil {
			return err
		}
		for i, r := range rows {
			copy(b.inData[i*s.features:], r)
		}
		if err := s.run(b, dst[off:off+len(rows)]); err != nil {
			return err
		}
	}
	return nil
}

// ScoreFlat is [Session.ScoreInto] for rows stored back to back: x holds n·Features values and
// dst at least n.
func (s *Session) ScoreFlat(dst, x []float32) error {
	if len(x)%s.features != 0 {
		return fmt.Errorf("ort: %d values are not whole rows of %d", len(x), s.features)
	}
	n := len(x) / s.features
	if len(dst) < n {
		return fmt.Errorf("ort: dst holds %d scores, x has %d rows", len(dst), n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for off := 0; off < n; off += s.maxBatch {
		k := min(s.maxBatch, n-off)
		b, err := s.prepare(k)
		if err != nil {
			return err
		}
		copy(b.inData, x[off*s.features:(off+k)*s.features])
		if err := s.run(b, dst[off:off+k]); err != nil {
			return err
		}
	}
	return nil
}

// prepare returns the buffer for k rows. s.mu held.
func (s *Session) prepare(k int) (*batchBuf, error) {
	if s.sess == nil {
		return nil, ErrClosed
	}
	if s.fixedN > 0 && int64(k) != s.fixedN {
		return nil, fmt.Errorf("ort: model takes batches of exactly %d rows, got %d", s.fixedN, k)
	}
	return s.buf(k)
}

func (s *Session) run(b *batchBuf, dst []float32) error {
	if err := s.sess.RunWithBinding(b.binding); err != nil {
		return fmt.Errorf("ort: run: %w", err)
	}
	copy(dst, b.outData)
	return nil
}

// Close releases the session and its tensors. Safe to call twice.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range s.bufs {
		if b != nil {
			b.destroy()
			s.bufs[i] = nil
		}
	}
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	return err
}
