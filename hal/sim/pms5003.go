package sim

import (
	"context"
	"encoding/binary"
	"math"
	"sync"
	"time"

	"github.com/perch-edge/perch/hal"
)

// PMS5003 frame and command layout (Plantower PMS5003 data manual, appendix I and II).
const (
	PMS5003FrameLen  = 32   // 0x42 0x4D, length (28), 13 data words, checksum: all big-endian
	PMS5003Start1    = 0x42 // 'B'
	PMS5003Start2    = 0x4D // 'M'
	PMS5003FrameBody = 28   // the frame length field: 13 words and the checksum

	PMS5003CmdRead  = 0xE2                    // passive mode: send one frame
	PMS5003CmdMode  = 0xE1                    // data 0: passive, 1: active
	PMS5003CmdSleep = 0xE4                    // data 0: sleep, 1: wake up
	PMS5003CmdLen   = 7                       // 0x42 0x4D cmd data_h data_l sum_h sum_l
	pmsByteTime     = time.Second * 10 / 9600 // 8N1 at 9600 baud: 10 bits a byte
	pmsInterval     = time.Second             // one frame a second in active mode
	pmsMaxQueued    = 4096 / PMS5003FrameLen  // the receive buffer holds 4 KiB
)

// PMS5003Signals are the quantities a [PMS5003] reports: mass concentrations in µg/m³ (standard
// particle, CF=1, and under atmospheric environment) and particle counts beyond a diameter, per
// 0.1 L of air. Each is rounded to an integer and saturated at 0..65535.
type PMS5003Signals struct {
	PM1     Signal `json:"pm1_0" yaml:"pm1_0"`         // PM1.0, CF=1
	PM25    Signal `json:"pm2_5" yaml:"pm2_5"`         // PM2.5, CF=1
	PM10    Signal `json:"pm10" yaml:"pm10"`           // PM10, CF=1
	PM1Atm  Signal `json:"pm1_0_atm" yaml:"pm1_0_atm"` // PM1.0, atmospheric environment
	PM25Atm Signal `json:"pm2_5_atm" yaml:"pm2_5_atm"` // PM2.5, atmospheric environment
	PM10Atm Signal `json:"pm10_atm" yaml:"pm10_atm"`   // PM10, atmospheric environment
	N03     Signal `json:"n0_3" yaml:"n0_3"`           // particles beyond 0.3 µm in 0.1 L
	N05     Signal `json:"n0_5" yaml:"n0_5"`           // beyond 0.5 µm
	N1      Signal `json:"n1_0" yaml:"n1_0"`           // beyond 1.0 µm
	N25     Signal `json:"n2_5" yaml:"n2_5"`           // beyond 2.5 µm
	N5      Signal `json:"n5_0" yaml:"n5_0"`           // beyond 5.0 µm
	N10     Signal `json:"n10" yaml:"n10"`             // beyond 10 µm
}

// list returns the signals in frame order.
func (s *PMS5003Signals) list() [12]*Signal {
	return [12]*Signal{&s.PM1, &s.PM25, &s.PM10, &s.PM1Atm, &s.PM25Atm, &s.PM10Atm,
		&s.N03, &s.N05, &s.N1, &s.N25, &s.N5, &s.N10}
}

// PMS5003SignalNames are the configuration names of the [PMS5003Signals], in frame order.
var PMS5003SignalNames = []string{"pm1_0", "pm2_5", "pm10", "pm1_0_atm", "pm2_5_atm", "pm10_atm",
	"n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10"}

// Validate reports every problem of the signals at once, each naming its field, such as
// `signals.pm2_5: unknown shape "sinus"`. Each error matches [ErrBadSignal].
func (s *PMS5003Signals) Validate() error {
	m := map[string]*Signal{}
	for i, sig := range s.list() {
		m[PMS5003SignalNames[i]] = sig
	}
	return validateSignals(m, PMS5003SignalNames...)
}

// PMS5003Data is the content of one data frame: the 13 data words, in frame order (PM1.0,
// PM2.5, PM10 at CF=1; the same under atmospheric environment; the six particle counts; the
// reserved word, 0).
type PMS5003Data [13]uint16

// Frame encodes d as a 32-byte frame with its checksum: the 16-bit sum of the 30 bytes before it.
func (d *PMS5003Data) Frame() [PMS5003FrameLen]byte {
	var b [PMS5003FrameLen]byte
	b[0], b[1] = PMS5003Start1, PMS5003Start2
	binary.BigEndian.PutUint16(b[2:], PMS5003FrameBody)
	for i, v := range d {
		binary.BigEndian.PutUint16(b[4+2*i:], v)
	}
	binary.BigEndian.PutUint16(b[30:], PMS5003Checksum(b[:30]))
	return b
}

// PMS5003Checksum returns the 16-bit sum of the bytes of b.
func PMS5003Checksum(b []byte) uint16 {
	var sum uint16
	for _, c := range b {
		sum += uint16(c)
	}
	return sum
}

// PMS5003Command returns the 7-byte host command cmd with data (PMS5003CmdMode with 1, for
// active mode).
func PMS5003Command(cmd byte, data uint16) [PMS5003CmdLen]byte {
	b := [PMS5003CmdLen]byte{PMS5003Start1, PMS5003Start2, cmd, byte(data >> 8), byte(data)}
	binary.BigEndian.PutUint16(b[5:], PMS5003Checksum(b[:5]))
	return b
}

// pmsFrame is a frame on its way to the host: its first byte starts arriving at at.
type pmsFrame struct {
	at  time.Time
	b   [PMS5003FrameLen]byte
	off int // bytes read
}

// PMS5003 models a Plantower PMS5003 particulate sensor at the far end of a UART (9600 baud,
// 8N1). It is safe for concurrent use.
//
// In active mode (the power-on mode) it sends one 32-byte frame at every whole second since the
// start, with the values of its [PMS5003Signals] at that instant; the bytes arrive one every
// 1.04 ms (10 bits at 9600 baud), so a read can return part of a frame. Reads return the bytes
// that have arrived since the last read; the receive buffer holds 4 KiB (128 frames), and the
// oldest whole frames are lost when a reader falls behind. It obeys the host commands of the data manual
// (0x42 0x4D cmd data_h data_l and the 16-bit sum of those five bytes): 0xE1 changes mode
// (data 0 passive, 1 active), 0xE2 asks for one frame in passive mode (sent at once), 0xE4
// sleeps (data 0: no frames) or wakes up (1). Commands with a bad checksum or unknown are
// ignored, as on the sensor; it sends no reply to the mode and sleep commands. Simplifications:
// no warm-up after waking, no 2.3 s stable-mode interval.
//
// Faults ([PMS5003.Faults]): timeout and disconnect stop the frames due while they last and
// fail reads and writes (with [hal.ErrTimeout], [hal.ErrNoDevice]); a disconnect is a power
// loss, so the sensor comes back in active mode, awake. Stuck sends frames with the values of
// the instant it began; corrupt sends frames whose checksum does not match (one data bit is
// flipped).
type PMS5003 struct {
	sig    PMS5003Signals
	clock  func() time.Time
	faults *Faults

	mu        sync.Mutex
	start     time.Time
	next      int64 // index of the next periodic frame
	queue     []pmsFrame
	passive   bool
	asleep    bool
	lostPower bool
	cmd       []byte // command bytes received so far
	sent      int    // frames sent, to vary which bit corrupt flips
}

// NewPMS5003 returns a PMS5003 in active mode that measures sig. clock gives the current time
// (nil means time.Now); frames are sent at every whole second since the clock's time when
// NewPMS5003 was called (see [PMS5003.SetStart]). sig should have passed
// [PMS5003Signals.Validate].
func NewPMS5003(sig PMS5003Signals, clock func() time.Time) *PMS5003 {
	if clock == nil {
		clock = time.Now
	}
	return &PMS5003{sig: sig, clock: clock, faults: NewFaults(clock), start: clock()}
}

// SetStart sets the instant the frames, the signals' time and the fault scripts count from, and
// forgets frames not read yet.
func (d *PMS5003) SetStart(t time.Time) {
	d.mu.Lock()
	d.start, d.next, d.queue = t, 0, nil
	d.mu.Unlock()
	d.faults.SetStart(t)
}

// Faults returns the sensor's faults, to inject or script.
func (d *PMS5003) Faults() *Faults { return d.faults }

// Truth returns the data the sensor measures at t, faults aside.
func (d *PMS5003) Truth(t time.Time) PMS5003Data {
	d.mu.Lock()
	since := t.Sub(d.start)
	d.mu.Unlock()
	return d.data(since)
}

func (d *PMS5003) data(since time.Duration) PMS5003Data {
	var out PMS5003Data
	for i, s := range d.sig.list() {
		v := math.Round(s.At(since))
		switch {
		case math.IsNaN(v) || v < 0:
			v = 0
		case v > math.MaxUint16:
			v = math.MaxUint16
		}
		out[i] = uint16(v)
	}
	return out
}

// send queues a frame that starts arriving at at. d.mu must be held.
func (d *PMS5003) send(at time.Time) {
	data := d.data(d.faults.SignalTime(at).Sub(d.start))
	f := pmsFrame{at: at, b: data.Frame()}
	if d.faults.ActiveAt(FaultCorrupt, at) {
		f.b[4+d.sent%26] ^= 1 << (d.sent % 8)
	}
	d.sent++
	if len(d.queue) == pmsMaxQueued { // overrun: the oldest frame not begun is lost
		i := 0
		if d.queue[0].off > 0 {
			i = 1
		}
		d.queue = append(d.queue[:i], d.queue[i+1:]...)
	}
	d.queue = append(d.queue, f)
}

// advance sends the periodic frames due up to now. d.mu must be held.
func (d *PMS5003) advance(now time.Time) {
	since := now.Sub(d.start)
	if since < 0 {
		return
	}
	last := int64(since / pmsInterval)
	if last-d.next >= pmsMaxQueued {
		d.next = last - pmsMaxQueued + 1 // the older ones would be lost anyway
	}
	for k := d.next; k <= last; k++ {
		at := d.start.Add(time.Duration(k) * pmsInterval)
		if d.power(at) && !d.passive && !d.asleep && !d.faults.ActiveAt(FaultTimeout, at) {
			d.send(at)
		}
	}
	d.next = last + 1
}

// power reports whether the sensor has power at t, and puts it in its power-on state if it
// lost power before. d.mu must be held.
func (d *PMS5003) power(t time.Time) bool {
	if d.faults.ActiveAt(FaultDisconnect, t) {
		d.lostPower = true
		return false
	}
	if d.lostPower {
		d.lostPower, d.passive, d.asleep, d.cmd = false, false, false, d.cmd[:0]
	}
	return true
}

// begin starts a read or write at now: it sends the frames due, then checks the faults. d.mu
// must be held.
func (d *PMS5003) begin(now time.Time) error {
	d.advance(now)
	switch {
	case !d.power(now):
		return hal.ErrNoDevice
	case d.faults.ActiveAt(FaultTimeout, now):
		return hal.ErrTimeout
	}
	return nil
}

// Read implements [UARTDevice]: it returns the bytes that have arrived and not been read.
func (d *PMS5003) Read(_ context.Context, p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock()
	if err := d.begin(now); err != nil {
		return 0, err
	}
	n := 0
	for len(d.queue) > 0 && n < len(p) {
		f := &d.queue[0]
		arrived := min(int(now.Sub(f.at)/pmsByteTime), PMS5003FrameLen)
		if f.off >= arrived {
			break // the rest has not arrived yet, nor has anything after it
		}
		c := copy(p[n:], f.b[f.off:arrived])
		f.off += c
		n += c
		if f.off == PMS5003FrameLen {
			d.queue = d.queue[1:]
		}
	}
	if len(d.queue) == 0 {
		d.queue = nil // let the backing array go
	}
	return n, nil
}

// Write implements [UARTDevice]: it takes host commands.
func (d *PMS5003) Write(_ context.Context, p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock()
	if err := d.begin(now); err != nil {
		return 0, err
	}
	for _, c := range p {
		switch {
		case len(d.cmd) == 0 && c != PMS5003Start1,
			len(d.cmd) == 1 && c != PMS5003Start2:
			d.cmd = d.cmd[:0]
			if c == PMS5003Start1 {
				d.cmd = append(d.cmd, c)
			}
			continue
		}
		d.cmd = append(d.cmd, c)
		if len(d.cmd) == PMS5003CmdLen {
			d.command(now, d.cmd)
			d.cmd = d.cmd[:0]
		}
	}
	return len(p), nil
}

// command obeys one complete command. d.mu must be held.
func (d *PMS5003) command(now time.Time, c []byte) {
	if binary.BigEndian.Uint16(c[5:]) != PMS5003Checksum(c[:5]) {
		return
	}
	data := binary.BigEndian.Uint16(c[3:])
	switch c[2] {
	case PMS5003CmdMode:
		d.passive = data == 0
	case PMS5003CmdSleep:
		d.asleep = data == 0
	case PMS5003CmdRead:
		if d.passive && !d.asleep {
			d.send(now)
		}
	}
}
