package perch

import (
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/perch-edge/perch/sdk/abi"
)

// setup registers m on a fresh guest and captures what the exports emit.
func setup(t *testing.T, m Module) *[][]byte {
	t.Helper()
	saved, savedEmit := g, emitBatch
	t.Cleanup(func() { g, emitBatch = saved, savedEmit })
	g = guest{}
	Register(m)
	var emitted [][]byte
	emitBatch = func(b []byte) abi.Errno {
		emitted = append(emitted, append([]byte(nil), b...))
		return abi.OK
	}
	return &emitted
}

// write copies batch into the perch_buffer buffer, as the host does, and returns its address.
func write(t *testing.T, batch []byte) uintptr {
	t.Helper()
	p := buffer(int32(len(batch)))
	if p == 0 {
		t.Fatalf("buffer(%d) = 0", len(batch))
	}
	copy(g.in, batch)
	return p
}

func readings(n int) []byte { return readingsOf(n, "env") }

func readingsOf(n int, series string) []byte {
	var b abi.Builder
	for i := range n {
		b.Begin(abi.KindReading, int64(i), "sensor", series)
		b.Field("temp", float64(i))
		b.Field("hum", 50)
		b.Tag("unit", "C")
		b.End()
	}
	return b.Buf
}

// double re-emits every reading's temp field doubled, through the Out helpers.
func double(in *abi.Iter, out *Out) error {
	for in.Next() {
		r := &in.Rec
		if v, ok := r.Field("temp"); ok {
			out.Begin(abi.KindReading, r.TimeNS, "env")
			out.Field("temp", 2*v)
			out.Tag("unit", "C")
			out.End()
		}
	}
	return nil
}

func TestProcessEmitsOnceWithAllRecords(t *testing.T) {
	emitted := setup(t, Module{Process: double})
	in := readings(3)
	if e := process(write(t, in), uint32(len(in))); e != abi.OK {
		t.Fatalf("process = %v", e)
	}
	if len(*emitted) != 1 {
		t.Fatalf("emit called %d times, want 1", len(*emitted))
	}
	it := abi.Iter{Buf: (*emitted)[0]}
	n := 0
	for it.Next() {
		r := &it.Rec
		v, _ := r.Field("temp")
		if len(r.Source) != 0 || string(r.Series) != "env" || v != 2*float64(n) || r.TimeNS != int64(n) {
			t.Errorf("record %d: source %q series %q temp %v time %d", n, r.Source, r.Series, v, r.TimeNS)
		}
		n++
	}
	if it.Err() != nil || n != 3 {
		t.Fatalf("emitted %d records, err %v", n, it.Err())
	}
}

func TestProcessNoOutputNoEmit(t *testing.T) {
	emitted := setup(t, Module{Process: func(in *abi.Iter, out *Out) error { return nil }})
	in := readings(2)
	if e := process(write(t, in), uint32(len(in))); e != abi.OK || len(*emitted) != 0 {
		t.Fatalf("process = %v, %d emits", e, len(*emitted))
	}
}

func TestProcessErrorDropsOutput(t *testing.T) {
	emitted := setup(t, Module{Process: func(in *abi.Iter, out *Out) error {
		out.Reading(1, "env", "x", 1)
		return errors.New("boom")
	}})
	in := readings(1)
	if e := process(write(t, in), uint32(len(in))); e != abi.EIO {
		t.Fatalf("process = %v, want EIO", e)
	}
	if len(*emitted) != 0 {
		t.Fatalf("emitted %d batches after an error", len(*emitted))
	}
	// The next call starts from an empty Out.
	g.mod.Process = double
	if e := process(write(t, in), uint32(len(in))); e != abi.OK || len(*emitted) != 1 {
		t.Fatalf("process = %v, %d emits", e, len(*emitted))
	}
	if n, _ := abi.Count((*emitted)[0]); n != 1 {
		t.Fatalf("emitted %d records, want 1", n)
	}
}

func TestProcessBadBatchIsEIO(t *testing.T) {
	setup(t, Module{Process: double})
	in := readings(2)
	in[len(in)-1]++ // corrupt the last record: its size no longer matches its contents
	in = in[:len(in)-3]
	if e := process(write(t, in), uint32(len(in))); e != abi.EIO {
		t.Fatalf("process = %v, want EIO", e)
	}
}

func TestProcessGuardsTheBuffer(t *testing.T) {
	setup(t, Module{Process: double})
	in := readings(1)
	p := write(t, in)
	size := uint32(len(g.in))
	for _, tc := range []struct {
		name string
		ptr  uintptr
		n    uint32
		want abi.Errno
	}{
		{"whole buffer", p, uint32(len(in)), abi.OK},
		{"empty batch anywhere", 12345, 0, abi.OK},
		{"length past the end", p, size + 1, abi.EFAULT},
		{"huge length", p, ^uint32(0), abi.EFAULT},
		{"offset batch past the end", p + 8, size - 7, abi.EFAULT},
		{"before the buffer", p - 1, 1, abi.EFAULT},
		{"after the buffer", p + uintptr(size), 1, abi.EFAULT},
	} {
		if e := process(tc.ptr, tc.n); e != tc.want {
			t.Errorf("%s: process = %v, want %v", tc.name, e, tc.want)
		}
	}
}

func TestBuffer(t *testing.T) {
	setup(t, Module{Process: double})
	p := buffer(0)
	if p == 0 || len(g.in) < minBuffer {
		t.Fatalf("buffer(0) = %#x with %d bytes", p, len(g.in))
	}
	if q := buffer(100); q != p {
		t.Errorf("buffer(100) moved the buffer although it fit")
	}
	q := buffer(minBuffer + 1)
	if q == 0 || len(g.in) < minBuffer+1 {
		t.Fatalf("buffer(%d) = %#x with %d bytes", minBuffer+1, q, len(g.in))
	}
	if q != uintptr(unsafe.Pointer(&g.in[0])) {
		t.Errorf("buffer does not return the address of the buffer")
	}
	if buffer(-1) != 0 || buffer(maxBuffer+1) != 0 {
		t.Errorf("buffer accepted a negative or too large size")
	}
}

func TestPoll(t *testing.T) {
	var gotMax int
	emitted := setup(t, Module{Poll: func(max int, out *Out) error {
		gotMax = max
		for i := range max {
			out.Reading(int64(i), "env", "temp", 20)
		}
		return nil
	}})
	if e := poll(5); e != abi.OK || gotMax != 5 || len(*emitted) != 1 {
		t.Fatalf("poll = %v, max %d, %d emits", e, gotMax, len(*emitted))
	}
	if n, err := abi.Count((*emitted)[0]); n != 5 || err != nil {
		t.Fatalf("emitted %d records, %v", n, err)
	}
	if e := poll(-1); e != abi.EINVAL {
		t.Errorf("poll(-1) = %v, want EINVAL", e)
	}
	if e := process(0, 0); e != abi.ENOSYS {
		t.Errorf("process on a driver = %v, want ENOSYS", e)
	}
}

func TestInit(t *testing.T) {
	for _, tc := range []struct {
		name string
		init func() error
		want abi.Errno
	}{
		{"none", nil, abi.OK},
		{"ok", func() error { return nil }, abi.OK},
		{"plain error", func() error { return errors.New("bad") }, abi.EINVAL},
		{"errno", func() error { return I2CRead(1, 0x76, 0xd0, make([]byte, 1)) }, abi.ENOSYS},
	} {
		setup(t, Module{Init: tc.init, Process: double})
		if e := initModule(); e != tc.want {
			t.Errorf("%s: init = %v, want %v", tc.name, e, tc.want)
		}
	}
	g = guest{}
	if e := initModule(); e != abi.ENOSYS {
		t.Errorf("init without Register = %v, want ENOSYS", e)
	}
}

func TestRegisterPanics(t *testing.T) {
	setup(t, Module{Process: double})
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"twice", func() { Register(Module{Process: double}) }},
		{"without Process or Poll", func() { g = guest{}; Register(Module{}) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register %s did not panic", tc.name)
				}
			}()
			tc.fn()
		}()
	}
}

func TestProcessAllocatesNothing(t *testing.T) {
	setup(t, Module{Process: double})
	emitBatch = func([]byte) abi.Errno { return abi.OK }
	in := readings(100)
	p := write(t, in)
	process(p, uint32(len(in))) // grow the output buffer
	if a := testing.AllocsPerRun(100, func() { process(p, uint32(len(in))) }); a != 0 {
		t.Errorf("process allocates %v times per batch of 100", a)
	}
}

func TestOutPassesInputSeriesWithoutAllocating(t *testing.T) {
	setup(t, Module{Process: func(in *abi.Iter, out *Out) error {
		for in.Next() {
			r := &in.Rec
			out.Reading(r.TimeNS, Str(r.Series), "temp", 1)
		}
		return nil
	}})
	emitBatch = func([]byte) abi.Errno { return abi.OK }
	in := readingsOf(100, strings.Repeat("s", 200))
	p := write(t, in)
	process(p, uint32(len(in)))
	if a := testing.AllocsPerRun(100, func() { process(p, uint32(len(in))) }); a != 0 {
		t.Errorf("process allocates %v times per batch of 100", a)
	}
}

func TestAlertHelper(t *testing.T) {
	var o Out
	o.Alert(7, "env", "critical", "too hot")
	it := abi.Iter{Buf: o.Builder().Buf}
	if !it.Next() {
		t.Fatal(it.Err())
	}
	r := &it.Rec
	sev, _ := r.Tag("severity")
	msg, _ := r.Tag("message")
	if r.Kind != abi.KindAlert || r.TimeNS != 7 || string(sev) != "critical" || string(msg) != "too hot" {
		t.Errorf("alert = kind %v time %d severity %q message %q", r.Kind, r.TimeNS, sev, msg)
	}
}

func TestDecodeConfig(t *testing.T) {
	type cfg struct {
		Window string  `json:"window"`
		Factor float64 `json:"factor"`
	}
	for _, tc := range []struct {
		in, wantErr string
	}{
		{`{"window":"10s","factor":2}`, ""},
		{`{"window":10}`, `config field "window"`},
		{`{"factor":"x"}`, `config field "factor"`},
		{`{"windw":"10s"}`, `unknown field "windw"`},
		{`{"window":"10s"} {}`, "data after"},
		{`{"window":`, "unexpected EOF"},
	} {
		var c cfg
		err := decodeConfig([]byte(tc.in), &c)
		if tc.wantErr == "" {
			if err != nil || c.Window != "10s" || c.Factor != 2 {
				t.Errorf("%s: %+v, %v", tc.in, c, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestStubsReturnENOSYS(t *testing.T) {
	var v struct{}
	buf := make([]byte, 2)
	_, gerr := GPIORead(1)
	_, uerr := UARTRead("/dev/ttyS0", buf)
	_, serr := StateGet("k")
	for i, err := range []error{
		Config(&v), I2CRead(1, 0x76, 0xd0, buf), I2CWrite(1, 0x76, buf), SPITransfer(0, 0, buf, buf),
		gerr, GPIOWrite(4, true), uerr, UARTWrite("/dev/ttyS0", buf), serr, StateSet("k", buf),
		StateDelete("k"),
	} {
		if !errors.Is(err, abi.ENOSYS) {
			t.Errorf("call %d: %v, want ENOSYS", i, err)
		}
	}
	if SPITransfer(0, 0, buf, buf[:1]) != abi.EINVAL {
		t.Errorf("SPITransfer with unequal lengths is not EINVAL")
	}
	if Now() == 0 {
		t.Errorf("Now() = 0 natively")
	}
}
