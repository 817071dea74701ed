package perch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
)

// counter is a module with state in memory: it counts readings and hands the count over on a
// hot swap, as "CNT1" and a u64.
type counter struct{ n uint64 }

func (c *counter) module() Module {
	return Module{
		Process: func(in *abi.Iter, out *Out) error {
			for in.Next() {
				c.n++
			}
			return in.Err()
		},
		Snapshot: func() ([]byte, error) {
			return binary.LittleEndian.AppendUint64([]byte("CNT1"), c.n), nil
		},
		Restore: func(snap []byte) error {
			if len(snap) != 12 || string(snap[:4]) != "CNT1" {
				return fmt.Errorf("not a counter snapshot (%d bytes)", len(snap))
			}
			c.n = binary.LittleEndian.Uint64(snap[4:])
			return nil
		},
	}
}

// captureSave replaces the host's save with one that keeps what it is given.
func captureSave(t *testing.T, ret abi.Errno) *[][]byte {
	t.Helper()
	saved := saveSnapshot
	t.Cleanup(func() { saveSnapshot = saved })
	var got [][]byte
	saveSnapshot = func(b []byte) abi.Errno {
		got = append(got, append([]byte(nil), b...))
		return ret
	}
	return &got
}

// TestHandoffRoundTrip: the state one instance hands over is where a fresh one carries on.
func TestHandoffRoundTrip(t *testing.T) {
	old := &counter{}
	setup(t, old.module())
	in := readings(5)
	if e := process(write(t, in), uint32(len(in))); e != abi.OK {
		t.Fatal(e)
	}
	saves := captureSave(t, abi.OK)
	if e := snapshot(); e != abi.OK || len(*saves) != 1 {
		t.Fatalf("snapshot = %v, %d saves", e, len(*saves))
	}
	snap := (*saves)[0]

	fresh := &counter{}
	setup(t, fresh.module())
	if e := restore(write(t, snap), uint32(len(snap))); e != abi.OK {
		t.Fatalf("restore = %v", e)
	}
	if e := process(write(t, in), uint32(len(in))); e != abi.OK || fresh.n != 10 {
		t.Fatalf("process = %v, count %d, want 5+5", e, fresh.n)
	}
}

func TestSnapshot(t *testing.T) {
	big := make([]byte, abi.MaxSnapshot+1)
	for _, tc := range []struct {
		name  string
		snap  func() ([]byte, error)
		host  abi.Errno
		want  abi.Errno
		saved int // bytes handed to the host; -1: no save call
	}{
		{"no Snapshot", nil, abi.OK, abi.OK, -1},
		{"nothing to hand over", func() ([]byte, error) { return nil, nil }, abi.OK, abi.OK, -1},
		{"some state", func() ([]byte, error) { return []byte("state"), nil }, abi.OK, abi.OK, 5},
		{"the host refuses", func() ([]byte, error) { return []byte("state"), nil }, abi.EINVAL, abi.EINVAL, 5},
		{"an error", func() ([]byte, error) { return nil, errors.New("broken") }, abi.OK, abi.EIO, -1},
		{"an errno", func() ([]byte, error) { return nil, fmt.Errorf("busy: %w", abi.ENOSPC) }, abi.OK, abi.ENOSPC, -1},
		{"too big", func() ([]byte, error) { return big, nil }, abi.OK, abi.ENOSPC, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setup(t, Module{Process: double, Snapshot: tc.snap})
			saves := captureSave(t, tc.host)
			if e := snapshot(); e != tc.want {
				t.Errorf("snapshot = %v, want %v", e, tc.want)
			}
			switch {
			case tc.saved < 0 && len(*saves) != 0:
				t.Errorf("%d save calls, want none", len(*saves))
			case tc.saved >= 0 && (len(*saves) != 1 || len((*saves)[0]) != tc.saved):
				t.Errorf("saves %q, want one of %d bytes", *saves, tc.saved)
			}
		})
	}
}

func TestRestore(t *testing.T) {
	refuse := func(err error) func([]byte) error { return func([]byte) error { return err } }
	for _, tc := range []struct {
		name    string
		restore func([]byte) error
		outside bool // pass a pointer outside the perch_buffer buffer
		want    abi.Errno
	}{
		{"no Restore", nil, false, abi.ENOSYS},
		{"taken", refuse(nil), false, abi.OK},
		{"refused", refuse(errors.New("unknown format")), false, abi.EINVAL},
		{"refused with an errno", refuse(fmt.Errorf("x: %w", abi.ENOSPC)), false, abi.ENOSPC},
		{"outside the buffer", refuse(nil), true, abi.EFAULT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setup(t, Module{Process: double, Restore: tc.restore})
			snap := []byte("CNT1........")
			p := write(t, snap)
			if tc.outside {
				p += uintptr(len(g.in))
			}
			if e := restore(p, uint32(len(snap))); e != tc.want {
				t.Errorf("restore = %v, want %v", e, tc.want)
			}
		})
	}
}
