package replay

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perch-edge/perch/hal"
)

// The line protocol a [Device] speaks.
const (
	HeaderPrefix = "#perch-replay v1 " // then the column names, comma-separated
	EOFLine      = "#eof"              // after the last row, unless looping
	LoopPrefix   = "#loop "            // then the loop's number (1, 2, ...), before its first row
	CmdHeader    = "header"            // a command line: send the header again
	CmdSeek      = "#seek "            // a command line, then a row index: resume from that row
)

// Options configure a [Device].
type Options struct {
	// Speed scales the recorded pace: 1 plays rows as far apart as they were recorded, 10 ten
	// times faster; 0 makes every row available at once (as fast as the reader reads). It must
	// not be negative.
	Speed float64
	// Loop plays the recording again after its last row, forever, instead of ending it.
	Loop bool
	// Clock gives the current time; nil means time.Now.
	Clock func() time.Time
}

// Device plays a [Table] on a UART as lines of text. It implements [hal.UART] and is safe for
// concurrent use.
//
// # Protocol
//
// Every line ends with "\n". The first is the header: [HeaderPrefix] and the column names,
// comma-separated:
//
//	#perch-replay v1 Accelerometer1RMS,Current,Pressure
//
// Then one line per row: the row's recorded time (ns since the Unix epoch, decimal) and its
// values, comma-separated, each written as strconv.FormatFloat(v, 'g', -1, 64) writes it (so
// that it parses back to the same float64), NaN as "nan" and infinities as "+Inf" and "-Inf":
//
//	1583748873000000000,0.0265878,1.3302,nan
//
// After the last row comes [EOFLine], "#eof", and then nothing. With [Options.Loop] the
// recording starts again instead, after a line "#loop N" (N = 1, 2, ...); the times of loop N
// are the recorded ones plus N periods, a period being the recording's span plus its mean row
// interval, so that they keep increasing. Readers must ignore other lines starting with "#".
//
// # Pacing
//
// Row i becomes available at start + (time_i - time_0) / Speed, where start is when the device
// was made or [Device.SetStart]'s instant; with Speed 0 every row is available at once. The
// header is available at start. A Read returns what is available, oldest first, up to len(p)
// bytes: a line may be split across reads. Unlike a real UART nothing is ever lost: a reader
// that falls behind gets every row late, in order.
//
// # Commands
//
// Write takes command lines; lines it does not know are ignored.
//
// "#seek N\n" ([CmdSeek], N a decimal row index from 0) resumes the replay at row N: what was
// generated and not read yet is dropped (but for the rest of a line being read), the header
// comes next, then row N and the rows after it, then "#eof". Rows are counted from the recording's first, across loops: with
// [Options.Loop], row N is row N mod len(rows) of loop N / len(rows), with that loop's times.
// Past the last row of a recording that does not loop, the header is followed by "#eof". The
// pace does not change for rows already due; if row N is not due yet, the pacing is moved so
// that it is due now and the rows after it follow at their recorded intervals (a runtime that
// restarts in the middle of a replay resumes at once). A driver that restarts in the middle of
// a replay keeps the index of the next row it has not handed on, and seeks to it: nothing is
// lost or repeated, whatever it had read and not yet handled.
//
// "header\n" ([CmdHeader]), for drivers that do not seek, sends the header again, right after
// the line being read.
type Device struct {
	t      *Table
	speed  float64
	loop   bool
	clock  func() time.Time
	header []byte
	period int64 // ns between loops

	mu         sync.Mutex
	start      time.Time
	out        []byte // generated, not read yet; it holds whole lines, the first maybe partly read
	next       int    // the next row to generate
	iter       int64  // the loop the next row belongs to
	begun      bool   // the header was generated
	read       bool   // some byte was read
	midLine    bool   // the last read ended inside a line
	ended      bool   // "#eof" was generated
	wantHeader bool
	cmd        []byte
}

// NewDevice returns a Device that plays t from now (by o.Clock). t must not change afterwards.
func NewDevice(t *Table, o Options) (*Device, error) {
	if o.Speed < 0 || math.IsNaN(o.Speed) || math.IsInf(o.Speed, 0) {
		return nil, fmt.Errorf("replay: speed %v: want 0 or more: %w", o.Speed, hal.ErrInvalid)
	}
	if len(t.Columns) == 0 {
		return nil, fmt.Errorf("replay: no columns: %w", hal.ErrInvalid)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	d := &Device{t: t, speed: o.Speed, loop: o.Loop, clock: o.Clock, start: o.Clock()}
	d.header = []byte(HeaderPrefix + strings.Join(t.Columns, ",") + "\n")
	d.period = int64(time.Second)
	if n := len(t.Rows); n >= 2 {
		if span := t.Rows[n-1].TimeNS - t.Rows[0].TimeNS; span > 0 {
			d.period = span + span/int64(n-1)
		}
	}
	return d, nil
}

// Open reads the recording at path ([ReadFile]) and returns a Device that plays it.
func Open(path string, f Format, ro ReadOptions, o Options) (*Device, error) {
	t, err := ReadFile(path, f, ro)
	if err != nil {
		return nil, err
	}
	return NewDevice(t, o)
}

// Table returns the recording the device plays.
func (d *Device) Table() *Table { return d.t }

// SetStart sets the instant the pacing counts from and plays the recording again from its
// header, forgetting what was not read.
func (d *Device) SetStart(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.start, d.out, d.next, d.iter = t, nil, 0, 0
	d.begun, d.read, d.midLine, d.ended, d.wantHeader = false, false, false, false, false
}

// Ended reports whether the reader has read the whole recording, "#eof" included.
func (d *Device) Ended() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ended && len(d.out) == 0
}

// due reports whether row i of loop iter is available at now. d.mu must be held.
func (d *Device) due(now time.Time, i int, iter int64) bool {
	if d.speed == 0 {
		return true
	}
	off := float64(d.t.Rows[i].TimeNS-d.t.Rows[0].TimeNS) + float64(iter)*float64(d.period)
	return !now.Before(d.start.Add(time.Duration(off / d.speed)))
}

// generate appends the next line if it is available, and reports whether it did. d.mu must be
// held.
func (d *Device) generate(now time.Time) bool {
	switch {
	case now.Before(d.start):
		return false
	case !d.begun:
		d.out = append(d.out, d.header...)
		d.begun = true
	case d.next < len(d.t.Rows):
		if !d.due(now, d.next, d.iter) {
			return false
		}
		d.out = d.appendRow(d.out, &d.t.Rows[d.next])
		d.next++
	case d.loop && len(d.t.Rows) > 0:
		if !d.due(now, 0, d.iter+1) { // the loop line comes with the loop's first row
			return false
		}
		d.iter++
		d.next = 0
		d.out = append(d.out, LoopPrefix...)
		d.out = strconv.AppendInt(d.out, d.iter, 10)
		d.out = append(d.out, '\n')
	case !d.ended:
		d.out = append(d.out, EOFLine+"\n"...)
		d.ended = true
	default:
		return false
	}
	return true
}

func (d *Device) appendRow(b []byte, r *Row) []byte {
	b = strconv.AppendInt(b, r.TimeNS+d.iter*d.period, 10)
	for _, v := range r.Values {
		b = append(b, ',')
		if math.IsNaN(v) {
			b = append(b, "nan"...)
		} else {
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		}
	}
	return append(b, '\n')
}

// Read implements [hal.UART]: it returns the bytes available and not read yet.
func (d *Device) Read(ctx context.Context, p []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock()
	if d.wantHeader {
		// Right after the line being read, if any.
		i := 0
		if d.midLine {
			i = bytes.IndexByte(d.out, '\n') + 1
		}
		d.out = append(d.out[:i], append(append([]byte(nil), d.header...), d.out[i:]...)...)
		d.wantHeader = false
	}
	for len(d.out) < len(p) && d.generate(now) {
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	if len(d.out) == 0 {
		d.out = nil // let the backing array go
	}
	if n > 0 {
		d.read, d.midLine = true, p[n-1] != '\n'
	}
	return n, nil
}

// Write implements [hal.UART]: it takes command lines (see [Device]).
func (d *Device) Write(ctx context.Context, p []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range p {
		if c != '\n' {
			if len(d.cmd) < 64 {
				d.cmd = append(d.cmd, c)
			}
			continue
		}
		line := strings.TrimSpace(string(d.cmd))
		switch {
		case line == CmdHeader && d.read:
			d.wantHeader = true
		case strings.HasPrefix(line, CmdSeek):
			if n, err := strconv.ParseInt(line[len(CmdSeek):], 10, 64); err == nil && n >= 0 {
				d.seek(n)
			}
		}
		d.cmd = d.cmd[:0]
	}
	return len(p), nil
}

// seek resumes the replay at row n (see [Device]'s commands). d.mu must be held.
func (d *Device) seek(n int64) {
	rows := int64(len(d.t.Rows))
	d.iter, d.next = 0, int(min(n, rows))
	if d.loop && rows > 0 {
		d.iter, d.next = n/rows, int(n%rows)
	}
	i := 0 // the rest of a line being read stays: the reader gets whole lines
	if d.midLine {
		i = bytes.IndexByte(d.out, '\n') + 1
	}
	d.out = append(d.out[:i:i], d.header...)
	d.begun, d.ended, d.wantHeader = true, false, false
	if d.speed > 0 && d.next < len(d.t.Rows) {
		now := d.clock()
		if !d.due(now, d.next, d.iter) {
			off := float64(d.t.Rows[d.next].TimeNS-d.t.Rows[0].TimeNS) + float64(d.iter)*float64(d.period)
			d.start = now.Add(-time.Duration(off / d.speed))
		}
	}
}

var _ hal.UART = (*Device)(nil)
