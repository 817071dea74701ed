//go:build linux

package linux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// GPIO character device uAPI v2 (include/uapi/linux/gpio.h, Linux 5.10 and later): type 0xB4.
const (
	gpioIOCType         = 0xB4
	gpioMaxNameSize     = 32
	gpioV2LinesMax      = 64
	gpioV2NumAttrsMax   = 10
	gpioChipInfoSize    = 68  // sizeof(struct gpiochip_info)
	gpioV2LineReqSize   = 592 // sizeof(struct gpio_v2_line_request)
	gpioV2LineCfgSize   = 272 // sizeof(struct gpio_v2_line_config)
	gpioV2LineValsSize  = 16  // sizeof(struct gpio_v2_line_values)
	gpioV2LineEventSize = 48  // sizeof(struct gpio_v2_line_event)

	// GPIO_GET_CHIPINFO_IOCTL = _IOR(0xB4, 0x01, struct gpiochip_info)
	gpioGetChipInfo = iocRead<<iocDirShift | gpioChipInfoSize<<iocSizeShift | gpioIOCType<<iocTypeShift | 0x01
	// GPIO_V2_GET_LINE_IOCTL = _IOWR(0xB4, 0x07, struct gpio_v2_line_request)
	gpioV2GetLine = (iocRead|iocWrite)<<iocDirShift | gpioV2LineReqSize<<iocSizeShift | gpioIOCType<<iocTypeShift | 0x07
	// GPIO_V2_LINE_SET_CONFIG_IOCTL = _IOWR(0xB4, 0x0D, struct gpio_v2_line_config)
	gpioV2LineSetConfig = (iocRead|iocWrite)<<iocDirShift | gpioV2LineCfgSize<<iocSizeShift | gpioIOCType<<iocTypeShift | 0x0D
	// GPIO_V2_LINE_GET_VALUES_IOCTL = _IOWR(0xB4, 0x0E, struct gpio_v2_line_values)
	gpioV2LineGetValues = (iocRead|iocWrite)<<iocDirShift | gpioV2LineValsSize<<iocSizeShift | gpioIOCType<<iocTypeShift | 0x0E
	// GPIO_V2_LINE_SET_VALUES_IOCTL = _IOWR(0xB4, 0x0F, struct gpio_v2_line_values)
	gpioV2LineSetValues = (iocRead|iocWrite)<<iocDirShift | gpioV2LineValsSize<<iocSizeShift | gpioIOCType<<iocTypeShift | 0x0F

	// enum gpio_v2_line_flag
	gpioV2FlagActiveLow  = 1 << 1
	gpioV2FlagInput      = 1 << 2
	gpioV2FlagOutput     = 1 << 3
	gpioV2FlagEdgeRise   = 1 << 4
	gpioV2FlagEdgeFall   = 1 << 5
	gpioV2FlagOpenDrain  = 1 << 6
	gpioV2FlagOpenSource = 1 << 7
	gpioV2FlagPullUp     = 1 << 8
	gpioV2FlagPullDown   = 1 << 9
	gpioV2FlagBiasOff    = 1 << 10

	// enum gpio_v2_line_attr_id
	gpioV2AttrFlags    = 1
	gpioV2AttrValues   = 2
	gpioV2AttrDebounce = 3

	// enum gpio_v2_line_event_id
	gpioV2EventRising  = 1
	gpioV2EventFalling = 2
)

// gpioChipInfo is struct gpiochip_info.
type gpioChipInfo struct {
	name  [gpioMaxNameSize]byte
	label [gpioMaxNameSize]byte
	lines uint32
}

// gpioV2LineAttribute is struct gpio_v2_line_attribute; val is the union of the __u64 flags, the
// __u64 values and the __u32 debounce_period_us (the union's first four bytes: see setU32).
type gpioV2LineAttribute struct {
	id  uint32
	_   uint32
	val uint64
}

// setU32 stores v in the union's first four bytes, where the kernel reads a __u32 member on
// little- and big-endian machines alike.
func (a *gpioV2LineAttribute) setU32(v uint32) {
	a.val = 0
	*(*uint32)(unsafe.Pointer(&a.val)) = v
}

// gpioV2LineConfigAttribute is struct gpio_v2_line_config_attribute.
type gpioV2LineConfigAttribute struct {
	attr gpioV2LineAttribute
	mask uint64
}

// gpioV2LineConfig is struct gpio_v2_line_config.
type gpioV2LineConfig struct {
	flags    uint64
	numAttrs uint32
	_        [5]uint32
	attrs    [gpioV2NumAttrsMax]gpioV2LineConfigAttribute
}

// gpioV2LineRequest is struct gpio_v2_line_request.
type gpioV2LineRequest struct {
	offsets         [gpioV2LinesMax]uint32
	consumer        [gpioMaxNameSize]byte
	config          gpioV2LineConfig
	numLines        uint32
	eventBufferSize uint32
	_               [5]uint32
	fd              int32
}

// gpioV2LineValues is struct gpio_v2_line_values.
type gpioV2LineValues struct {
	bits uint64
	mask uint64
}

// gpioV2LineEvent is struct gpio_v2_line_event; events are decoded from the bytes read from
// the line's file (see decodeEvent), this type documents and tests the layout.
type gpioV2LineEvent struct {
	timestampNs uint64
	id          uint32
	offset      uint32
	seqno       uint32
	lineSeqno   uint32
	_           [6]uint32
}

// Direction is how a line is requested.
type Direction uint8

const (
	// DirAuto requests the line as an input; the first [Line.Write] turns it into an output
	// driving that level, and it stays one.
	DirAuto Direction = iota
	// DirIn requests the line as an input; [Line.Write] fails with [hal.ErrInvalid].
	DirIn
	// DirOut requests the line as an output driving [LineOptions.Initial].
	DirOut
)

// Bias is a line's pull resistor.
type Bias uint8

const (
	BiasAsIs     Bias = iota // leave the bias as the firmware or device tree set it
	BiasDisabled             // no pull resistor
	BiasPullUp               // pull up
	BiasPullDown             // pull down
)

// Drive is how an output drives the line.
type Drive uint8

const (
	DrivePushPull   Drive = iota // drives both levels
	DriveOpenDrain               // drives low only; high is the pull-up's job
	DriveOpenSource              // drives high only
)

// EdgeMode selects the edges an input reports as events.
type EdgeMode uint8

const (
	EdgeNone    EdgeMode = iota // none (until the first Line.WaitEdge, which enables both)
	EdgeRising                  // inactive to active
	EdgeFalling                 // active to inactive
	EdgeBoth                    // both
)

// LineOptions configures one GPIO line. The zero value is an input (see [DirAuto]) with the
// bias as found, active high, no edge detection and no debounce.
type LineOptions struct {
	// Chip is the GPIO character device the line is on, like [Options.GPIOChip]; "" means
	// Options.GPIOChip. The line number is the offset on this chip.
	Chip      string
	Direction Direction
	Initial   bool // the level a DirOut line drives when requested
	ActiveLow bool // levels and edges are logical: true and rising mean electrically low and falling
	Bias      Bias
	Drive     Drive // outputs only
	Edges     EdgeMode
	// Debounce filters input glitches shorter than this, in hardware or in the kernel;
	// microsecond resolution, 0 for none.
	Debounce time.Duration
}

func (o LineOptions) validate() error {
	var errs []error
	if o.Direction > DirOut {
		errs = append(errs, fmt.Errorf("direction %d: %w", o.Direction, hal.ErrInvalid))
	}
	if o.Bias > BiasPullDown {
		errs = append(errs, fmt.Errorf("bias %d: %w", o.Bias, hal.ErrInvalid))
	}
	if o.Drive > DriveOpenSource {
		errs = append(errs, fmt.Errorf("drive %d: %w", o.Drive, hal.ErrInvalid))
	}
	if o.Edges > EdgeBoth {
		errs = append(errs, fmt.Errorf("edges %d: %w", o.Edges, hal.ErrInvalid))
	}
	if o.Direction == DirOut && (o.Edges != EdgeNone || o.Debounce != 0) {
		errs = append(errs, fmt.Errorf("an output has no edge detection or debounce: %w", hal.ErrInvalid))
	}
	if o.Debounce < 0 || o.Debounce/time.Microsecond > 1<<32-1 {
		errs = append(errs, fmt.Errorf("debounce %v: %w", o.Debounce, hal.ErrInvalid))
	}
	return errors.Join(errs...)
}

// config builds the kernel line config for the line as an output or as an input watching
// edges. The kernel refuses drive flags on inputs and edge flags on outputs.
func (o LineOptions) config(output bool, level bool, edges EdgeMode) gpioV2LineConfig {
	var c gpioV2LineConfig
	if o.ActiveLow {
		c.flags |= gpioV2FlagActiveLow
	}
	switch o.Bias {
	case BiasDisabled:
		c.flags |= gpioV2FlagBiasOff
	case BiasPullUp:
		c.flags |= gpioV2FlagPullUp
	case BiasPullDown:
		c.flags |= gpioV2FlagPullDown
	}
	if output {
		c.flags |= gpioV2FlagOutput
		switch o.Drive {
		case DriveOpenDrain:
			c.flags |= gpioV2FlagOpenDrain
		case DriveOpenSource:
			c.flags |= gpioV2FlagOpenSource
		}
		var v uint64
		if level {
			v = 1
		}
		c.attrs[0] = gpioV2LineConfigAttribute{attr: gpioV2LineAttribute{id: gpioV2AttrValues, val: v}, mask: 1}
		c.numAttrs = 1
		return c
	}
	c.flags |= gpioV2FlagInput
	if edges == EdgeRising || edges == EdgeBoth {
		c.flags |= gpioV2FlagEdgeRise
	}
	if edges == EdgeFalling || edges == EdgeBoth {
		c.flags |= gpioV2FlagEdgeFall
	}
	if o.Debounce > 0 {
		us := o.Debounce / time.Microsecond
		if us == 0 {
			us = 1
		}
		c.attrs[0] = gpioV2LineConfigAttribute{attr: gpioV2LineAttribute{id: gpioV2AttrDebounce}, mask: 1}
		c.attrs[0].attr.setU32(uint32(us))
		c.numAttrs = 1
	}
	return c
}

// gpioChip is an open /dev/gpiochipN.
type gpioChip struct {
	path  string
	dev   device
	lines uint32
}

func openChip(k kernel, path string) (*gpioChip, error) {
	what := fmt.Sprintf("gpio chip %s", path)
	f, err := openFile(path, 0, what)
	if err != nil {
		return nil, err
	}
	dev, err := newDevice(f, k)
	if err != nil {
		return nil, wrap(err, opening, "%s", what)
	}
	var info gpioChipInfo
	if err := dev.ioctl(gpioGetChipInfo, unsafe.Pointer(&info)); err != nil {
		f.Close()
		return nil, wrap(err, opening, "%s: not a GPIO character device", what)
	}
	return &gpioChip{path: path, dev: dev, lines: info.lines}, nil
}

// request asks the kernel for line offset n.
func (c *gpioChip) request(n int, o LineOptions, consumer string) (*Line, error) {
	what := fmt.Sprintf("gpio line %d on %s", n, c.path)
	if n >= int(c.lines) {
		return nil, fmt.Errorf("linux: %s: the chip has %d lines: %w", what, c.lines, hal.ErrNoDevice)
	}
	var req gpioV2LineRequest
	req.offsets[0] = uint32(n)
	req.numLines = 1
	copy(req.consumer[:gpioMaxNameSize-1], consumer)
	edges := o.Edges
	output := o.Direction == DirOut
	req.config = o.config(output, o.Initial, edges)
	if err := c.dev.ioctl(gpioV2GetLine, unsafe.Pointer(&req)); err != nil {
		return nil, wrap(err, transfer, "%s: request", what)
	}
	// The line's file must be non-blocking for Go's poller, which then serves WaitEdge's reads
	// and their deadlines.
	fd := int(req.fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, wrap(err, transfer, "%s", what)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("gpio line %d", n))
	dev, err := newDevice(f, c.dev.k)
	if err != nil {
		return nil, wrap(err, transfer, "%s", what)
	}
	return &Line{
		n: n, what: what, opts: o, f: f, dev: dev,
		output: output, edges: edges,
		mu: newCtxLock(), evMu: newCtxLock(),
	}, nil
}

// Edge is one edge seen on an input line.
type Edge struct {
	// Rising is true for an inactive-to-active edge (electrically low to high, unless the line
	// is active low) and false for a falling one.
	Rising bool
	// Monotonic is when the kernel saw the edge, on CLOCK_MONOTONIC (time since boot, not
	// counting suspend), in nanoseconds: use it to measure intervals between edges.
	Monotonic time.Duration
	// Time is Monotonic translated to wall-clock time when the event was read.
	Time time.Time
	// Seqno counts the events of this line request and LineSeqno those of this line, from 1; a
	// gap means the kernel's event buffer (16 events) overflowed and dropped events.
	Seqno, LineSeqno uint32
}

// Line is one requested GPIO line. Get it from [Provider.Line] (or [Provider.GPIOLine]). It is
// safe for concurrent use; [Line.WaitEdge] callers take turns, and a waiting WaitEdge does not
// hold up Read and Write.
//
// Edges are events, not polling: when edge detection is on, the kernel timestamps each edge in
// its interrupt handler and queues it (up to 16) until [Line.WaitEdge] reads it.
type Line struct {
	n    int
	what string
	opts LineOptions
	f    *os.File // the line request's file: ioctls and events
	dev  device

	mu     ctxLock // guards output and edges, serialises ioctls
	output bool
	edges  EdgeMode

	evMu    ctxLock // one WaitEdge reads at a time; guards pending and buf
	pending []Edge
	buf     [16 * gpioV2LineEventSize]byte
}

// Read implements [hal.GPIO]: the line's logical level (for an output, the level it drives).
// Errors wrap [hal.ErrNoDevice] after [Provider.Close] or when the chip went away, and [hal.ErrIO]
// otherwise.
func (l *Line) Read(ctx context.Context) (bool, error) {
	if err := l.mu.lock(ctx); err != nil {
		return false, fmt.Errorf("linux: %s: %w", l.what, err)
	}
	defer l.mu.unlock()
	v := gpioV2LineValues{mask: 1}
	if err := l.dev.ioctl(gpioV2LineGetValues, unsafe.Pointer(&v)); err != nil {
		return false, wrap(err, transfer, "%s: read", l.what)
	}
	return v.bits&1 != 0, nil
}

// Write implements [hal.GPIO]: it drives the line to the logical level. A [DirAuto] line that is
// still an input becomes an output driving level in one step (edge detection stops, and a
// waiting [Line.WaitEdge] sees no more edges). Errors wrap [hal.ErrInvalid] for a [DirIn] line,
// [hal.ErrNoDevice] or [hal.ErrIO].
func (l *Line) Write(ctx context.Context, level bool) error {
	if l.opts.Direction == DirIn {
		return fmt.Errorf("linux: %s: configured as an input: %w", l.what, hal.ErrInvalid)
	}
	if err := l.mu.lock(ctx); err != nil {
		return fmt.Errorf("linux: %s: %w", l.what, err)
	}
	defer l.mu.unlock()
	if !l.output {
		c := l.opts.config(true, level, EdgeNone)
		if err := l.dev.ioctl(gpioV2LineSetConfig, unsafe.Pointer(&c)); err != nil {
			return wrap(err, transfer, "%s: make output", l.what)
		}
		l.output, l.edges = true, EdgeNone
		return nil
	}
	v := gpioV2LineValues{mask: 1}
	if level {
		v.bits = 1
	}
	return wrap(l.dev.ioctl(gpioV2LineSetValues, unsafe.Pointer(&v)), transfer, "%s: write", l.what)
}

// WaitEdge blocks until the line reports an edge, or ctx is done, and returns the edge. Edges
// come in the order they happened; those that happened while nobody waited are queued by the
// kernel (16 at most: see [Edge.Seqno]). If [LineOptions.Edges] is [EdgeNone], the first call
// turns on detection of both edges, so edges before that call are not seen. Errors: ctx.Err()
// (wrapped) when ctx is done first; [hal.ErrInvalid] for an output; [hal.ErrNoDevice] after
// [Provider.Close]; [hal.ErrIO].
func (l *Line) WaitEdge(ctx context.Context) (Edge, error) {
	if err := l.mu.lock(ctx); err != nil {
		return Edge{}, fmt.Errorf("linux: %s: %w", l.what, err)
	}
	if l.output {
		l.mu.unlock()
		return Edge{}, fmt.Errorf("linux: %s: an output has no edges: %w", l.what, hal.ErrInvalid)
	}
	if l.edges == EdgeNone {
		c := l.opts.config(false, false, EdgeBoth)
		if err := l.dev.ioctl(gpioV2LineSetConfig, unsafe.Pointer(&c)); err != nil {
			l.mu.unlock()
			return Edge{}, wrap(err, transfer, "%s: enable edge detection", l.what)
		}
		l.edges = EdgeBoth
	}
	l.mu.unlock()

	if err := l.evMu.lock(ctx); err != nil {
		return Edge{}, fmt.Errorf("linux: %s: %w", l.what, err)
	}
	defer l.evMu.unlock()
	for len(l.pending) == 0 {
		var n int
		err := cancelable(ctx, l.f.SetReadDeadline, func() (err error) {
			n, err = l.f.Read(l.buf[:])
			return err
		})
		switch {
		case err != nil && errors.Is(err, os.ErrClosed):
			return Edge{}, fmt.Errorf("linux: %s: %w", l.what, errClosed)
		case err != nil:
			return Edge{}, wrap(err, transfer, "%s: wait for edge", l.what)
		case n%gpioV2LineEventSize != 0:
			return Edge{}, fmt.Errorf("linux: %s: read %d bytes of events, not a multiple of %d: %w", l.what, n, gpioV2LineEventSize, hal.ErrCorrupt)
		}
		l.pending = decodeEvents(l.pending[:0], l.buf[:n], time.Now(), monotonicNow())
	}
	e := l.pending[0]
	l.pending = l.pending[1:]
	return e, nil
}

// decodeEvents appends the gpio_v2_line_events in b (whole events, native byte order) to dst.
// now and mono are the wall-clock and CLOCK_MONOTONIC times of the same instant.
func decodeEvents(dst []Edge, b []byte, now time.Time, mono time.Duration) []Edge {
	ne := binary.NativeEndian
	for ; len(b) >= gpioV2LineEventSize; b = b[gpioV2LineEventSize:] {
		ts := time.Duration(ne.Uint64(b[0:]))
		dst = append(dst, Edge{
			Rising:    ne.Uint32(b[8:]) == gpioV2EventRising,
			Monotonic: ts,
			Time:      now.Add(ts - mono),
			Seqno:     ne.Uint32(b[16:]),
			LineSeqno: ne.Uint32(b[20:]),
		})
	}
	return dst
}

// monotonicNow reads CLOCK_MONOTONIC, the clock the kernel stamps GPIO events with.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
