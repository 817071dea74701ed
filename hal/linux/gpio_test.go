//go:build linux

package linux

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// fakeChip is a gpiochip with n lines behind a fakeKernel. A line request gets the read end of
// a pipe as its file; the test writes gpio_v2_line_events into the write end.
type fakeChip struct {
	mu      sync.Mutex
	req     gpioV2LineRequest // the last line request
	configs []gpioV2LineConfig
	level   bool
	events  *os.File // write end of the last line's pipe
	reqErr  error
}

func newFakeChip(t *testing.T, k *fakeKernel, lines uint32) *fakeChip {
	c := &fakeChip{}
	k.handle(gpioGetChipInfo, func(a unsafe.Pointer) error {
		info := (*gpioChipInfo)(a)
		copy(info.name[:], "gpiochip0")
		copy(info.label[:], "pinctrl-fake")
		info.lines = lines
		return nil
	})
	k.handle(gpioV2GetLine, func(a unsafe.Pointer) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.reqErr != nil {
			return c.reqErr
		}
		req := (*gpioV2LineRequest)(a)
		c.req = *req
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return err
		}
		c.events = os.NewFile(uintptr(fds[1]), "events")
		t.Cleanup(func() { c.events.Close() })
		req.fd = int32(fds[0])
		if req.config.attrs[0].attr.id == gpioV2AttrValues {
			c.level = req.config.attrs[0].attr.val&1 != 0
		}
		return nil
	})
	k.handle(gpioV2LineSetConfig, func(a unsafe.Pointer) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		cfg := (*gpioV2LineConfig)(a)
		c.configs = append(c.configs, *cfg)
		if cfg.flags&gpioV2FlagOutput != 0 && cfg.attrs[0].attr.id == gpioV2AttrValues {
			c.level = cfg.attrs[0].attr.val&1 != 0
		}
		return nil
	})
	k.handle(gpioV2LineGetValues, func(a unsafe.Pointer) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		v := (*gpioV2LineValues)(a)
		if v.mask != 1 {
			return unix.EINVAL
		}
		v.bits = 0
		if c.level {
			v.bits = 1
		}
		return nil
	})
	k.handle(gpioV2LineSetValues, func(a unsafe.Pointer) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		v := (*gpioV2LineValues)(a)
		c.level = v.bits&v.mask&1 != 0
		return nil
	})
	return c
}

func (c *fakeChip) setLevel(v bool) {
	c.mu.Lock()
	c.level = v
	c.mu.Unlock()
}

func (c *fakeChip) lastConfig() gpioV2LineConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.configs) == 0 {
		return gpioV2LineConfig{}
	}
	return c.configs[len(c.configs)-1]
}

// event encodes a gpio_v2_line_event.
func event(ts time.Duration, rising bool, offset, seqno, lineSeqno uint32) []byte {
	b := make([]byte, gpioV2LineEventSize)
	ne := binary.NativeEndian
	ne.PutUint64(b[0:], uint64(ts))
	id := uint32(gpioV2EventFalling)
	if rising {
		id = gpioV2EventRising
	}
	ne.PutUint32(b[8:], id)
	ne.PutUint32(b[12:], offset)
	ne.PutUint32(b[16:], seqno)
	ne.PutUint32(b[20:], lineSeqno)
	return b
}

func TestGPIORequestFlags(t *testing.T) {
	tests := []struct {
		name  string
		o     LineOptions
		flags uint64
		attr  gpioV2LineAttribute // attrs[0], zero if none
	}{
		{"default input", LineOptions{}, gpioV2FlagInput, gpioV2LineAttribute{}},
		{"button", LineOptions{Bias: BiasPullUp, ActiveLow: true, Edges: EdgeFalling, Debounce: 5 * time.Millisecond},
			gpioV2FlagInput | gpioV2FlagPullUp | gpioV2FlagActiveLow | gpioV2FlagEdgeFall,
			gpioV2LineAttribute{id: gpioV2AttrDebounce}},
		{"both edges, no pull", LineOptions{Bias: BiasDisabled, Edges: EdgeBoth},
			gpioV2FlagInput | gpioV2FlagBiasOff | gpioV2FlagEdgeRise | gpioV2FlagEdgeFall, gpioV2LineAttribute{}},
		{"relay", LineOptions{Direction: DirOut, Initial: true, Bias: BiasPullDown},
			gpioV2FlagOutput | gpioV2FlagPullDown, gpioV2LineAttribute{id: gpioV2AttrValues, val: 1}},
		{"open drain", LineOptions{Direction: DirOut, Drive: DriveOpenDrain},
			gpioV2FlagOutput | gpioV2FlagOpenDrain, gpioV2LineAttribute{id: gpioV2AttrValues, val: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel()
			c := newFakeChip(t, k, 54)
			p := fakeProvider(t, k, Options{GPIO: map[int]LineOptions{17: tt.o}, Consumer: "perch-test"}, "gpiochip0")
			if _, err := p.GPIOLine(17); err != nil {
				t.Fatal(err)
			}
			req := c.req
			if req.numLines != 1 || req.offsets[0] != 17 {
				t.Errorf("requested %d lines, offset %d; want 1 line, offset 17", req.numLines, req.offsets[0])
			}
			if got := strings.TrimRight(string(req.consumer[:]), "\x00"); got != "perch-test" {
				t.Errorf("consumer %q, want perch-test", got)
			}
			if req.config.flags != tt.flags {
				t.Errorf("flags %#x, want %#x", req.config.flags, tt.flags)
			}
			var want gpioV2LineAttribute
			if tt.attr.id == gpioV2AttrDebounce {
				want.id = gpioV2AttrDebounce
				want.setU32(5000) // µs
			} else {
				want = tt.attr
			}
			if got := req.config.attrs[0].attr; got != want {
				t.Errorf("attrs[0] = %+v, want %+v", got, want)
			}
			if n := req.config.numAttrs; (want.id != 0) != (n == 1) {
				t.Errorf("num_attrs = %d", n)
			}
			if want.id != 0 && req.config.attrs[0].mask != 1 {
				t.Errorf("attrs[0].mask = %#x, want 1 (the first requested line)", req.config.attrs[0].mask)
			}
		})
	}
}

func TestGPIOReadWrite(t *testing.T) {
	k := newFakeKernel()
	c := newFakeChip(t, k, 54)
	p := fakeProvider(t, k, Options{GPIO: map[int]LineOptions{4: {Direction: DirIn}}}, "gpiochip0")
	ctx := context.Background()

	line, err := p.GPIOLine(27)
	if err != nil {
		t.Fatal(err)
	}
	c.setLevel(true)
	if v, err := line.Read(ctx); err != nil || !v {
		t.Errorf("Read = %v, %v; want true", v, err)
	}
	// The first Write turns the DirAuto input into an output in one SET_CONFIG...
	if err := line.Write(ctx, false); err != nil {
		t.Fatal(err)
	}
	cfg := c.lastConfig()
	if cfg.flags != gpioV2FlagOutput || cfg.attrs[0].attr.id != gpioV2AttrValues || cfg.attrs[0].attr.val != 0 {
		t.Errorf("SET_CONFIG = flags %#x attrs[0] %+v; want an output driving 0", cfg.flags, cfg.attrs[0].attr)
	}
	// ...and later ones just set the value.
	if err := line.Write(ctx, true); err != nil {
		t.Fatal(err)
	}
	if k.count(gpioV2LineSetConfig) != 1 || k.count(gpioV2LineSetValues) != 1 {
		t.Errorf("%d SET_CONFIG and %d SET_VALUES, want 1 and 1", k.count(gpioV2LineSetConfig), k.count(gpioV2LineSetValues))
	}
	if v, err := line.Read(ctx); err != nil || !v {
		t.Errorf("Read of the output = %v, %v; want true", v, err)
	}
	if _, err := line.(*Line).WaitEdge(ctx); !errors.Is(err, hal.ErrInvalid) {
		t.Errorf("WaitEdge on an output = %v, want hal.ErrInvalid", err)
	}

	in, err := p.GPIOLine(4)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Write(ctx, true); !errors.Is(err, hal.ErrInvalid) {
		t.Errorf("Write to a DirIn line = %v, want hal.ErrInvalid", err)
	}
	if again, _ := p.GPIOLine(4); again != in {
		t.Error("GPIOLine(4) twice returned two handles")
	}
}

func TestGPIOWaitEdge(t *testing.T) {
	k := newFakeKernel()
	c := newFakeChip(t, k, 54)
	p := fakeProvider(t, k, Options{}, "gpiochip0")
	line, err := p.Line(17)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// No edges configured: the first WaitEdge turns on both, and nothing has happened yet, so it
	// waits until its context gives up.
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = line.WaitEdge(short)
	stop()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEdge with no edge = %v, want context.DeadlineExceeded", err)
	}
	if cfg := c.lastConfig(); cfg.flags != gpioV2FlagInput|gpioV2FlagEdgeRise|gpioV2FlagEdgeFall {
		t.Errorf("SET_CONFIG flags %#x, want input with both edges", cfg.flags)
	}

	// Two edges in one read come back one per call, in order; the deadline set by the
	// cancelled call must not linger.
	mono := monotonicNow()
	ev := append(event(mono-time.Millisecond, true, 17, 1, 1), event(mono, false, 17, 2, 2)...)
	if _, err := c.events.Write(ev); err != nil {
		t.Fatal(err)
	}
	e1, err := line.WaitEdge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := line.WaitEdge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !e1.Rising || e1.Seqno != 1 || e1.LineSeqno != 1 || e1.Monotonic != mono-time.Millisecond {
		t.Errorf("first edge %+v, want rising, seqno 1, at %v", e1, mono-time.Millisecond)
	}
	if e2.Rising || e2.Seqno != 2 || e2.Monotonic != mono {
		t.Errorf("second edge %+v, want falling, seqno 2, at %v", e2, mono)
	}
	if d := e2.Time.Sub(e1.Time); d != time.Millisecond {
		t.Errorf("wall-clock interval %v, want 1ms", d)
	}
	if now := time.Now(); e2.Time.After(now) || now.Sub(e2.Time) > time.Minute {
		t.Errorf("edge wall-clock time %v is not just before now (%v)", e2.Time, now)
	}

	// A waiter blocked in WaitEdge does not hold up Read, and is woken by an edge.
	got := make(chan error, 1)
	go func() {
		e, err := line.WaitEdge(ctx)
		if err == nil && !e.Rising {
			err = errors.New("want a rising edge")
		}
		got <- err
	}()
	if _, err := line.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.events.Write(event(monotonicNow(), true, 17, 3, 3)); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	// A short read from the kernel is a corrupt event stream.
	if _, err := c.events.Write(make([]byte, 20)); err != nil {
		t.Fatal(err)
	}
	if _, err := line.WaitEdge(ctx); !errors.Is(err, hal.ErrCorrupt) {
		t.Errorf("WaitEdge after a 20-byte read = %v, want hal.ErrCorrupt", err)
	}

	// Close wakes a blocked waiter with ErrClosed.
	go func() {
		_, err := line.WaitEdge(ctx)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block; the assertion below holds either way
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, ErrClosed) || !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("WaitEdge across Close = %v, want ErrClosed and hal.ErrNoDevice", err)
	}
	if _, err := line.Read(ctx); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("Read after Close = %v, want hal.ErrNoDevice", err)
	}
	if _, err := p.GPIOLine(17); !errors.Is(err, ErrClosed) {
		t.Errorf("GPIOLine after Close = %v, want ErrClosed", err)
	}
}

func TestGPIOConfiguredEdges(t *testing.T) {
	k := newFakeKernel()
	c := newFakeChip(t, k, 54)
	p := fakeProvider(t, k, Options{GPIO: map[int]LineOptions{5: {Edges: EdgeRising}}}, "gpiochip0")
	line, err := p.Line(5)
	if err != nil {
		t.Fatal(err)
	}
	// Edges were requested with the line: an edge that happens before WaitEdge is queued.
	if _, err := c.events.Write(event(monotonicNow(), true, 5, 1, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e, err := line.WaitEdge(ctx); err != nil || !e.Rising {
		t.Fatalf("WaitEdge = %+v, %v; want the queued rising edge", e, err)
	}
	if n := k.count(gpioV2LineSetConfig); n != 0 {
		t.Errorf("%d SET_CONFIG for a line requested with edges, want 0", n)
	}
}

func TestGPIOOpenErrors(t *testing.T) {
	k := newFakeKernel()
	c := newFakeChip(t, k, 8)
	p := fakeProvider(t, k, Options{}, "gpiochip0")
	for _, n := range []int{-1, 8, 100} {
		if _, err := p.GPIOLine(n); !errors.Is(err, hal.ErrNoDevice) {
			t.Errorf("GPIOLine(%d) on an 8-line chip = %v, want hal.ErrNoDevice", n, err)
		}
	}
	c.reqErr = unix.EBUSY
	if _, err := p.GPIOLine(3); !errors.Is(err, hal.ErrIO) || !errors.Is(err, unix.EBUSY) {
		t.Errorf("GPIOLine of a busy line = %v, want hal.ErrIO wrapping EBUSY", err)
	}
	c.reqErr = nil
	if _, err := p.GPIOLine(3); err != nil {
		t.Errorf("GPIOLine after the line was freed = %v (errors must not be cached)", err)
	}

	real := fakeProvider(t, sysKernel{}, Options{
		GPIO: map[int]LineOptions{2: {Chip: "gpiochip1"}, 3: {Chip: "../gpiochip0"}},
	}, "gpiochip0")
	for n, want := range map[int]error{0: hal.ErrNoDevice, 2: hal.ErrNoDevice, 3: hal.ErrInvalid} {
		// 0: gpiochip0 is a regular file (ENOTTY); 2: no gpiochip1; 3: a name out of DevDir.
		if _, err := real.GPIOLine(n); !errors.Is(err, want) {
			t.Errorf("GPIOLine(%d) = %v, want %v", n, err, want)
		}
	}
}

func TestLineOptionsValidate(t *testing.T) {
	bad := []LineOptions{
		{Direction: 3},
		{Bias: 9},
		{Drive: 9},
		{Edges: 9},
		{Direction: DirOut, Edges: EdgeBoth},
		{Direction: DirOut, Debounce: time.Millisecond},
		{Debounce: -time.Second},
	}
	for _, o := range bad {
		if _, err := New(Options{GPIO: map[int]LineOptions{1: o}}); !errors.Is(err, hal.ErrInvalid) {
			t.Errorf("New with %+v = %v, want hal.ErrInvalid", o, err)
		}
	}
}

func TestDecodeEvents(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	b := append(event(10*time.Second, true, 1, 7, 3), event(10*time.Second+1500*time.Microsecond, false, 1, 8, 4)...)
	got := decodeEvents(nil, b, now, 11*time.Second)
	want := []Edge{
		{Rising: true, Monotonic: 10 * time.Second, Time: now.Add(-time.Second), Seqno: 7, LineSeqno: 3},
		{Rising: false, Monotonic: 10*time.Second + 1500*time.Microsecond, Time: now.Add(-998500 * time.Microsecond), Seqno: 8, LineSeqno: 4},
	}
	if len(got) != len(want) {
		t.Fatalf("decoded %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if !got[i].Time.Equal(want[i].Time) || got[i].Rising != want[i].Rising || got[i].Monotonic != want[i].Monotonic ||
			got[i].Seqno != want[i].Seqno || got[i].LineSeqno != want[i].LineSeqno {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
