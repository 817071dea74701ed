package perch

import (
	"errors"
	"unsafe"

	"github.com/perch-edge/perch/sdk/abi"
)

// Module is what a module registers: the functions the SDK's exports call. Set Process for a
// filter or rule, Poll for a driver; at least one of them is required.
type Module struct {
	// Init runs once, from perch_init, after the host has set the module up; read the
	// configuration here. Optional. An error is logged; perch_init then returns the error's
	// errno if it is an [abi.Errno], and EINVAL otherwise.
	Init func() error

	// Process handles one batch of records (perch_process). in is valid only during the call;
	// out is emitted when Process returns. An error is logged at error level, the call's
	// output is dropped and perch_process returns EIO.
	Process func(in *abi.Iter, out *Out) error

	// Poll produces up to max records (perch_poll). Errors are handled as for Process.
	Poll func(max int, out *Out) error

	// Snapshot returns the module's in-memory state for its next binary, on a hot swap
	// (perch_snapshot; sdk/ABI.md, State handoff), at most abi.MaxSnapshot bytes. Optional:
	// without it, or when it returns nothing, nothing is handed over and the next binary starts
	// fresh. Start the bytes with a format version of your own, so that Restore can tell. An
	// error is logged and nothing is handed over.
	Snapshot func() ([]byte, error)

	// Restore takes back the state an earlier binary's Snapshot returned (perch_restore), after
	// Init and before any other call; snap is valid only during the call. It must return an
	// error, before changing anything, for a snapshot it does not understand (another format
	// version, another module's); the error is logged and the host then starts the module
	// fresh. Optional: without it every snapshot is refused (ENOSYS).
	Restore func(snap []byte) error
}

const (
	minBuffer = 4 << 10   // the smallest input buffer perch_buffer hands out
	maxBuffer = 256 << 20 // perch_buffer refuses (returns 0) above this many bytes
	outBuffer = 64 << 10  // the output buffer's initial capacity
)

// guest is the state behind the exports. There is one per module instance.
type guest struct {
	mod        Module
	registered bool
	in         []byte   // the perch_buffer buffer; its length is its capacity
	iter       abi.Iter // reused for every batch
	out        Out
}

var g guest

// saveSnapshot hands a snapshot to the host (perch:io/v1 save); tests replace it.
var saveSnapshot = func(b []byte) abi.Errno {
	return abi.Errno(hostSave(ptr(b), uint32(len(b))))
}

// emitBatch hands a batch to the host; tests replace it.
var emitBatch = func(b []byte) abi.Errno {
	return abi.Errno(hostEmit(unsafe.SliceData(b), uint32(len(b))))
}

// Register sets the module the exports call. Call it once, from an init function of the main
// package. It panics if called twice or if m has neither Process nor Poll.
func Register(m Module) {
	if g.registered {
		panic("perch: Register called twice")
	}
	if m.Process == nil && m.Poll == nil {
		panic("perch: Register: the Module has neither Process nor Poll")
	}
	g.mod, g.registered = m, true
	g.out.b.Buf = make([]byte, 0, outBuffer)
}

// abiVersion implements perch_abi_version.
func abiVersion() int32 { return abi.Version }

// buffer implements perch_buffer: it returns the address of a buffer of at least size bytes,
// valid until the next call, or 0 if it cannot.
func buffer(size int32) uintptr {
	if size < 0 || size > maxBuffer {
		return 0
	}
	if int(size) > len(g.in) || g.in == nil {
		n := max(minBuffer, 2*len(g.in))
		for n < int(size) {
			n *= 2
		}
		g.in = nil // let the old buffer go before allocating the new one
		g.in = make([]byte, min(n, maxBuffer))
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(g.in)))
}

// batch returns the part [ptr, ptr+n) of the perch_buffer buffer, or false if that range is not
// inside it: the host may only pass a batch it wrote there.
func batch(ptr uintptr, n uint32) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	if len(g.in) == 0 {
		return nil, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(g.in)))
	size := uintptr(len(g.in))
	if ptr < base || ptr-base > size || uintptr(n) > size-(ptr-base) {
		return nil, false
	}
	off := int(ptr - base)
	return g.in[off : off+int(n) : off+int(n)], true
}

// initModule implements perch_init.
func initModule() abi.Errno {
	if !g.registered {
		Log(abi.LevelError, "perch: no module registered: call perch.Register from an init function")
		return abi.ENOSYS
	}
	if g.mod.Init == nil {
		return abi.OK
	}
	if err := g.mod.Init(); err != nil {
		Log(abi.LevelError, "perch_init failed: "+err.Error())
		var e abi.Errno
		if errors.As(err, &e) && e != abi.OK {
			return e
		}
		return abi.EINVAL
	}
	return abi.OK
}

// process implements perch_process.
func process(ptr uintptr, n uint32) abi.Errno {
	if g.mod.Process == nil {
		return abi.ENOSYS
	}
	in, ok := batch(ptr, n)
	if !ok {
		Log(abi.LevelError, "perch_process failed: the batch is not inside the perch_buffer buffer")
		return abi.EFAULT
	}
	g.iter = abi.Iter{Buf: in}
	g.out.reset()
	err := g.mod.Process(&g.iter, &g.out)
	if err == nil {
		err = g.iter.Err()
	}
	return g.finish("perch_process failed: ", err)
}

// poll implements perch_poll.
func poll(limit int32) abi.Errno {
	if g.mod.Poll == nil {
		return abi.ENOSYS
	}
	if limit < 0 {
		return abi.EINVAL
	}
	g.out.reset()
	return g.finish("perch_poll failed: ", g.mod.Poll(int(limit), &g.out))
}

// snapshot implements perch_snapshot.
func snapshot() abi.Errno {
	if g.mod.Snapshot == nil {
		return abi.OK
	}
	b, err := g.mod.Snapshot()
	switch {
	case err != nil:
		Log(abi.LevelError, "perch_snapshot failed: "+err.Error())
		return errnoOf(err, abi.EIO)
	case len(b) == 0:
		return abi.OK
	case len(b) > abi.MaxSnapshot:
		Logf(abi.LevelError, "perch_snapshot failed: the snapshot is %d bytes, more than %d", len(b), abi.MaxSnapshot)
		return abi.ENOSPC
	}
	return saveSnapshot(b)
}

// restore implements perch_restore.
func restore(p uintptr, n uint32) abi.Errno {
	if g.mod.Restore == nil {
		Log(abi.LevelWarn, "perch_restore: refused: the module takes no snapshot (no Module.Restore)")
		return abi.ENOSYS
	}
	snap, ok := batch(p, n)
	if !ok {
		Log(abi.LevelError, "perch_restore failed: the snapshot is not inside the perch_buffer buffer")
		return abi.EFAULT
	}
	if err := g.mod.Restore(snap); err != nil {
		Log(abi.LevelWarn, "perch_restore: refused: "+err.Error())
		return errnoOf(err, abi.EINVAL)
	}
	return abi.OK
}

// errnoOf returns the errno err carries (an abi.Errno in its chain), or def.
func errnoOf(err error, def abi.Errno) abi.Errno {
	var e abi.Errno
	if errors.As(err, &e) && e != abi.OK {
		return e
	}
	return def
}

// finish emits the call's output, or logs err and drops the output.
func (g *guest) finish(what string, err error) abi.Errno {
	if err != nil {
		Log(abi.LevelError, what+err.Error())
		g.out.reset()
		return abi.EIO
	}
	if len(g.out.b.Buf) == 0 {
		return abi.OK
	}
	e := emitBatch(g.out.b.Buf)
	g.out.reset()
	return e
}
