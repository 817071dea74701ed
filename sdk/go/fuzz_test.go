package perch

import (
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
)

// FuzzProcessPointer checks the guard on the (ptr, len) the host passes to perch_process: a
// range inside the perch_buffer buffer is accepted, anything else is EFAULT, nothing panics.
func FuzzProcessPointer(f *testing.F) {
	f.Add(int64(0), uint32(10))
	f.Add(int64(-1), uint32(1))
	f.Add(int64(minBuffer), uint32(1))
	f.Add(int64(8), ^uint32(0))
	f.Fuzz(func(t *testing.T, off int64, n uint32) {
		saved := g
		defer func() { g = saved }()
		g = guest{}
		Register(Module{Process: func(in *abi.Iter, out *Out) error { return nil }})
		base := buffer(16)
		size := int64(len(g.in))
		e := process(base+uintptr(off), n)
		inside := n == 0 || (off >= 0 && off <= size && int64(n) <= size-off)
		if inside && e != abi.OK || !inside && e != abi.EFAULT {
			t.Fatalf("offset %d length %d in a buffer of %d: %v", off, n, size, e)
		}
	})
}

// FuzzDecodeConfig checks that no configuration document makes the decoder panic.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"window":"10s","factor":2}`))
	f.Add([]byte(`{"factor":[1,2]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v struct {
			Window string   `json:"window"`
			Factor *float64 `json:"factor"`
		}
		_ = decodeConfig(b, &v)
	})
}
