//go:build linux

package linux

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeKernel stands in for a driver this machine does not have: it records the ioctls a handle
// makes and answers them with handlers that read and fill the very structs the real kernel
// would get. Requests without a handler fail with ENOTTY, like a file of the wrong kind.
type fakeKernel struct {
	mu       sync.Mutex
	calls    []uint
	handlers map[uint]func(arg unsafe.Pointer) error
	intCalls []uintptr
	onInt    func(req uint, arg uintptr) error
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{handlers: make(map[uint]func(unsafe.Pointer) error)}
}

func (k *fakeKernel) handle(req uint, h func(arg unsafe.Pointer) error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.handlers[req] = h
}

func (k *fakeKernel) ioctl(fd uintptr, req uint, arg unsafe.Pointer) error {
	k.mu.Lock()
	k.calls = append(k.calls, req)
	h := k.handlers[req]
	k.mu.Unlock()
	if h == nil {
		return unix.ENOTTY
	}
	return h(arg)
}

func (k *fakeKernel) ioctlInt(fd uintptr, req uint, arg uintptr) error {
	k.mu.Lock()
	k.intCalls = append(k.intCalls, arg)
	h := k.onInt
	k.mu.Unlock()
	if h == nil {
		return unix.ENOTTY
	}
	return h(req, arg)
}

func (k *fakeKernel) count(req uint) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, c := range k.calls {
		if c == req {
			n++
		}
	}
	return n
}

// fakeProvider returns a Provider whose DevDir holds empty regular files with the given names
// and whose ioctls go to k.
func fakeProvider(t *testing.T, k kernel, opts Options, files ...string) *Provider {
	t.Helper()
	opts.DevDir = t.TempDir()
	for _, name := range files {
		if err := os.WriteFile(filepath.Join(opts.DevDir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p.k = k
	t.Cleanup(func() { p.Close() })
	return p
}

// goBytes views n bytes at a buffer address the kernel would read from a __u64 (little-endian
// 64-bit test machines: the low half holds the pointer).
func goBytes(addr *uint64, n uint32) []byte {
	return unsafe.Slice(*(**byte)(unsafe.Pointer(addr)), n)
}
