package perch

import (
	"unsafe"

	"github.com/perch-edge/perch/sdk/abi"
)

// Out collects the records a module produces during one perch_process or perch_poll call; the SDK
// emits them to the host as one batch when the call returns. Write a record with Begin, then
// Field calls, then Tag calls, then End; or with one of the helpers. The source of every record
// is left empty: the host fills it in.
//
// An Out is owned by the SDK and valid only during the call it was passed to. Its buffer is
// reused across calls, so writing records allocates nothing once it has grown.
type Out struct {
	b abi.Builder
}

func (o *Out) reset() { o.b.Buf = o.b.Buf[:0] }

// Begin starts a record of the given kind, time (nanoseconds since the Unix epoch) and series.
func (o *Out) Begin(kind abi.Kind, timeNS int64, series string) {
	o.b.Begin(kind, timeNS, "", series)
}

// Field adds a numeric field to the current record. All fields must come before the first tag;
// see [abi.Builder.Field].
func (o *Out) Field(name string, v float64) { o.b.Field(name, v) }

// Tag adds a string tag to the current record.
func (o *Out) Tag(key, value string) { o.b.Tag(key, value) }

// End finishes the current record.
func (o *Out) End() { o.b.End() }

// Reading writes a whole reading with one field.
func (o *Out) Reading(timeNS int64, series, field string, v float64) {
	o.b.Begin(abi.KindReading, timeNS, "", series)
	o.b.Field(field, v)
	o.b.End()
}

// Alert writes a whole alert with the tags severity and message and no fields. For alerts with
// fields (the value, the threshold) use Begin, Field, Tag and End.
func (o *Out) Alert(timeNS int64, series, severity, message string) {
	o.b.Begin(abi.KindAlert, timeNS, "", series)
	o.b.Tag("severity", severity)
	o.b.Tag("message", message)
	o.b.End()
}

// Builder returns the builder underneath, for module logic written against [abi.Builder] (which
// can then be used natively too). Records written through it must leave their source empty, and
// must be finished with End before the call returns.
func (o *Out) Builder() *abi.Builder { return &o.b }

// Len returns the number of bytes written so far in this call.
func (o *Out) Len() int { return len(o.b.Buf) }

// Str returns the bytes of b as a string without copying them, to pass a name or series from an
// input record to Out's methods (which copy it) without allocating: string(b) allocates when b
// is longer than 32 bytes. The string shares b's memory, so it must not be kept past the call:
// the input batch is reused by the next one.
func Str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
