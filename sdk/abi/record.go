package abi

import (
	"encoding/binary"
	"errors"
	"math"
)

// Kind is a record's kind.
type Kind uint8

// Record kinds.
const (
	KindReading Kind = 1
	KindSummary Kind = 2
	KindScore   Kind = 3
	KindAlert   Kind = 4
	KindEvent   Kind = 5
)

var kindNames = [...]string{KindReading: "reading", KindSummary: "summary", KindScore: "score",
	KindAlert: "alert", KindEvent: "event"}

// String returns the kind's name, such as "reading".
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "kind(" + itoa(uint32(k)) + ")"
}

// Valid reports whether k is one of the defined kinds.
func (k Kind) Valid() bool { return k >= KindReading && k <= KindEvent }

// Record encoding limits.
const (
	HeaderSize = 16  // size u32, kind u8, nfields u8, ntags u8, reserved u8, time i64
	MaxString  = 255 // bytes in one string (its length is one byte)
	MaxFields  = 255
	MaxTags    = 255
)

// Errors returned by [Iter] for a batch that does not decode.
var (
	ErrShort    = errors.New("abi: record truncated")
	ErrBadSize  = errors.New("abi: record size does not match its contents")
	ErrBadKind  = errors.New("abi: unknown record kind")
	ErrReserved = errors.New("abi: reserved header byte is not zero")
)

// Field is a numeric field given to [Append].
type Field struct {
	Name  string
	Value float64
}

// Tag is a string tag given to [Append].
type Tag struct {
	Key, Value string
}

// Append encodes one record at the end of dst and returns the extended slice. Strings longer than
// [MaxString] bytes are cut; fields and tags past [MaxFields] and [MaxTags] are dropped. It
// allocates only when dst must grow.
//
// The layout, all little-endian:
//
//	u32 size (of the whole record) | u8 kind | u8 nfields | u8 ntags | u8 0 | i64 time_ns
//	str source | str series | nfields × (str name, f64 value) | ntags × (str key, str value)
//	str = u8 length | bytes
func Append(dst []byte, kind Kind, timeNS int64, source, series string, fields []Field, tags []Tag) []byte {
	start := len(dst)
	nf, nt := len(fields), len(tags)
	if nf > MaxFields {
		nf = MaxFields
	}
	if nt > MaxTags {
		nt = MaxTags
	}
	dst = append(dst, 0, 0, 0, 0, byte(kind), byte(nf), byte(nt), 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(timeNS))
	dst = appendStr(dst, source)
	dst = appendStr(dst, series)
	for _, f := range fields[:nf] {
		dst = appendStr(dst, f.Name)
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f.Value))
	}
	for _, t := range tags[:nt] {
		dst = appendStr(dst, t.Key)
		dst = appendStr(dst, t.Value)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

func appendStr(dst []byte, s string) []byte {
	if len(s) > MaxString {
		s = s[:MaxString]
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

// Builder encodes one record field by field without building slices of [Field] first:
// Begin, then Field and Tag in any order, then End. The zero value is ready to use; it is not
// safe for concurrent use.
type Builder struct {
	Buf    []byte // the batch being built; reset it with Buf = Buf[:0]
	start  int
	tagsAt int
}

// Begin starts a record with its header, source and series.
func (b *Builder) Begin(kind Kind, timeNS int64, source, series string) {
	b.start = len(b.Buf)
	b.Buf = append(b.Buf, 0, 0, 0, 0, byte(kind), 0, 0, 0)
	b.Buf = binary.LittleEndian.AppendUint64(b.Buf, uint64(timeNS))
	b.Buf = appendStr(b.Buf, source)
	b.Buf = appendStr(b.Buf, series)
	b.tagsAt = -1
}

// Field adds a numeric field. Fields must all come before the first Tag.
func (b *Builder) Field(name string, v float64) {
	if b.tagsAt >= 0 || b.Buf[b.start+5] == MaxFields {
		return
	}
	b.Buf = appendStr(b.Buf, name)
	b.Buf = binary.LittleEndian.AppendUint64(b.Buf, math.Float64bits(v))
	b.Buf[b.start+5]++
}

// Tag adds a string tag.
func (b *Builder) Tag(key, value string) {
	if b.Buf[b.start+6] == MaxTags {
		return
	}
	b.tagsAt = len(b.Buf)
	b.Buf = appendStr(b.Buf, key)
	b.Buf = appendStr(b.Buf, value)
	b.Buf[b.start+6]++
}

// End finishes the record by writing its size.
func (b *Builder) End() {
	binary.LittleEndian.PutUint32(b.Buf[b.start:], uint32(len(b.Buf)-b.start))
}

// Record is a decoded view of one record. Its byte slices point into the batch it came from and
// are valid only as long as that batch is. It allocates nothing.
type Record struct {
	Kind    Kind
	TimeNS  int64
	Source  []byte
	Series  []byte
	nfields int
	ntags   int
	body    []byte // fields then tags
}

// NumFields returns the number of numeric fields.
func (r *Record) NumFields() int { return r.nfields }

// NumTags returns the number of tags.
func (r *Record) NumTags() int { return r.ntags }

// Fields calls fn for each numeric field in order.
func (r *Record) Fields(fn func(name []byte, v float64)) {
	b := r.body
	for i := 0; i < r.nfields; i++ {
		n := int(b[0])
		name := b[1 : 1+n]
		v := math.Float64frombits(binary.LittleEndian.Uint64(b[1+n:]))
		b = b[9+n:]
		fn(name, v)
	}
}

// Field returns the value of the first field with the given name.
func (r *Record) Field(name string) (float64, bool) {
	b := r.body
	for i := 0; i < r.nfields; i++ {
		n := int(b[0])
		if string(b[1:1+n]) == name {
			return math.Float64frombits(binary.LittleEndian.Uint64(b[1+n:])), true
		}
		b = b[9+n:]
	}
	return 0, false
}

// FieldAt returns the i-th field (0-based); it is O(i). Out of range, it returns nil and 0.
func (r *Record) FieldAt(i int) (name []byte, v float64) {
	if i < 0 || i >= r.nfields {
		return nil, 0
	}
	b := r.body
	for j := 0; ; j++ {
		n := int(b[0])
		if j == i {
			return b[1 : 1+n], math.Float64frombits(binary.LittleEndian.Uint64(b[1+n:]))
		}
		b = b[9+n:]
	}
}

// Tags calls fn for each tag in order.
func (r *Record) Tags(fn func(key, value []byte)) {
	b := r.body
	for i := 0; i < r.nfields; i++ {
		b = b[9+int(b[0]):]
	}
	for i := 0; i < r.ntags; i++ {
		kn := int(b[0])
		k := b[1 : 1+kn]
		b = b[1+kn:]
		vn := int(b[0])
		v := b[1 : 1+vn]
		b = b[1+vn:]
		fn(k, v)
	}
}

// Tag returns the value of the first tag with the given key.
func (r *Record) Tag(key string) ([]byte, bool) {
	var out []byte
	found := false
	r.Tags(func(k, v []byte) {
		if !found && string(k) == key {
			out, found = v, true
		}
	})
	return out, found
}

// Iter walks the records of a batch. The zero value of Iter over nil is an empty batch.
//
//	it := abi.Iter{Buf: batch}
//	for it.Next() { r := &it.Rec; ... }
//	if err := it.Err(); err != nil { ... }
type Iter struct {
	Buf []byte // the rest of the batch
	Rec Record // the current record, after Next returned true
	Off int    // the offset of the current record from the start of the batch
	err error
	pos int
}

// Next decodes the next record into it.Rec and reports whether there was one. It stops at the
// end of the batch or at the first record that does not decode (see [Iter.Err]).
func (it *Iter) Next() bool {
	if it.err != nil || len(it.Buf) == 0 {
		return false
	}
	b := it.Buf
	if len(b) < HeaderSize+2 {
		it.err = ErrShort
		return false
	}
	size := int(binary.LittleEndian.Uint32(b))
	if size < HeaderSize+2 || size > len(b) {
		it.err = ErrShort
		return false
	}
	rec := b[:size]
	kind := Kind(rec[4])
	if !kind.Valid() {
		it.err = ErrBadKind
		return false
	}
	if rec[7] != 0 {
		it.err = ErrReserved
		return false
	}
	nf, nt := int(rec[5]), int(rec[6])
	p := HeaderSize
	src, p, ok := str(rec, p)
	if !ok {
		it.err = ErrBadSize
		return false
	}
	series, p, ok := str(rec, p)
	if !ok {
		it.err = ErrBadSize
		return false
	}
	body := p
	for i := 0; i < nf; i++ {
		if _, p, ok = str(rec, p); !ok || p+8 > len(rec) {
			it.err = ErrBadSize
			return false
		}
		p += 8
	}
	for i := 0; i < 2*nt; i++ {
		if _, p, ok = str(rec, p); !ok {
			it.err = ErrBadSize
			return false
		}
	}
	if p != size {
		it.err = ErrBadSize
		return false
	}
	it.Rec = Record{Kind: kind, TimeNS: int64(binary.LittleEndian.Uint64(rec[8:])), Source: src,
		Series: series, nfields: nf, ntags: nt, body: rec[body:]}
	it.Off = it.pos
	it.pos += size
	it.Buf = b[size:]
	return true
}

// Err returns the decoding error that stopped [Iter.Next], with the offset of the bad record.
func (it *Iter) Err() error {
	if it.err == nil {
		return nil
	}
	return &DecodeError{Offset: it.pos, Err: it.err}
}

// DecodeError says where in a batch a record failed to decode.
type DecodeError struct {
	Offset int // bytes from the start of the batch
	Err    error
}

func (e *DecodeError) Error() string { return e.Err.Error() + " at byte " + itoa(uint32(e.Offset)) }
func (e *DecodeError) Unwrap() error { return e.Err }

func str(b []byte, p int) ([]byte, int, bool) {
	if p >= len(b) {
		return nil, p, false
	}
	n := int(b[p])
	p++
	if p+n > len(b) {
		return nil, p, false
	}
	return b[p : p+n], p + n, true
}

// Count validates a batch and returns the number of records in it, or the first decoding error.
func Count(batch []byte) (int, error) {
	it := Iter{Buf: batch}
	n := 0
	for it.Next() {
		n++
	}
	return n, it.Err()
}
