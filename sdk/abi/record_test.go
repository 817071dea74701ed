package abi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
)

// rec is one record in the form Append takes.
type rec struct {
	kind           abi.Kind
	timeNS         int64
	source, series string
	fields         []abi.Field
	tags           []abi.Tag
}

func (r *rec) append(dst []byte) []byte {
	return abi.Append(dst, r.kind, r.timeNS, r.source, r.series, r.fields, r.tags)
}

func (r *rec) build(b *abi.Builder) {
	b.Begin(r.kind, r.timeNS, r.source, r.series)
	for _, f := range r.fields {
		b.Field(f.Name, f.Value)
	}
	for _, t := range r.tags {
		b.Tag(t.Key, t.Value)
	}
	b.End()
}

// decode turns a decoded record back into the form Append takes.
func decode(r *abi.Record) rec {
	out := rec{kind: r.Kind, timeNS: r.TimeNS, source: string(r.Source), series: string(r.Series)}
	r.Fields(func(name []byte, v float64) { out.fields = append(out.fields, abi.Field{Name: string(name), Value: v}) })
	r.Tags(func(k, v []byte) { out.tags = append(out.tags, abi.Tag{Key: string(k), Value: string(v)}) })
	return out
}

var long = strings.Repeat("x", 300)

var records = []rec{
	{kind: abi.KindReading, timeNS: 1_700_000_000_123_456_789, source: "env", series: "environment",
		fields: []abi.Field{{"temperature_c", 21.5}, {"pressure_hpa", 1013.25}, {"humidity_pct", 45}}},
	{kind: abi.KindSummary, series: "environment",
		fields: []abi.Field{{"temperature_c_mean", -3.25}, {"temperature_c_count", 20}},
		tags:   []abi.Tag{{"window", "10s"}, {"source", "env"}}},
	{kind: abi.KindScore, timeNS: -1, source: "s", series: "", fields: []abi.Field{{"score", math.Inf(1)}, {"threshold", math.SmallestNonzeroFloat64}}},
	{kind: abi.KindAlert, timeNS: math.MaxInt64, source: "hot", series: "environment",
		fields: []abi.Field{{"value", 31}, {"threshold", 30}},
		tags:   []abi.Tag{{"state", "raised"}, {"severity", "warning"}, {"message", "température > 30 °C"}, {"", ""}}},
	{kind: abi.KindEvent, tags: []abi.Tag{{"kind", "start"}}},
	{kind: abi.KindEvent}, // the smallest record: a header and two empty strings
}

func TestAppendBuilderIter(t *testing.T) {
	var batch []byte
	var b abi.Builder
	for i := range records {
		batch = records[i].append(batch)
		records[i].build(&b)
	}
	if !bytes.Equal(batch, b.Buf) {
		t.Fatalf("Append and Builder differ:\n%x\n%x", batch, b.Buf)
	}
	if n, err := abi.Count(batch); n != len(records) || err != nil {
		t.Fatalf("Count = %d, %v, want %d, nil", n, err, len(records))
	}
	it := abi.Iter{Buf: batch}
	off := 0
	for i := 0; it.Next(); i++ {
		r := &it.Rec
		if got := decode(r); !equal(got, records[i]) {
			t.Errorf("record %d: decoded %+v, want %+v", i, got, records[i])
		}
		if it.Off != off {
			t.Errorf("record %d: Off = %d, want %d", i, it.Off, off)
		}
		size := int(binary.LittleEndian.Uint32(batch[off:]))
		if len(it.Buf) != len(batch)-off-size {
			t.Errorf("record %d: %d bytes left, want %d", i, len(it.Buf), len(batch)-off-size)
		}
		off += size
		if r.NumFields() != len(records[i].fields) || r.NumTags() != len(records[i].tags) {
			t.Errorf("record %d: NumFields, NumTags = %d, %d", i, r.NumFields(), r.NumTags())
		}
		for j, f := range records[i].fields {
			name, v := r.FieldAt(j)
			if string(name) != f.Name || v != f.Value {
				t.Errorf("record %d: FieldAt(%d) = %q, %v, want %q, %v", i, j, name, v, f.Name, f.Value)
			}
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if off != len(batch) {
		t.Errorf("walked %d bytes of %d", off, len(batch))
	}
	// The smallest record is the header and two empty strings.
	if got := abi.Append(nil, abi.KindEvent, 0, "", "", nil, nil); len(got) != abi.HeaderSize+2 {
		t.Errorf("smallest record: %d bytes, want %d", len(got), abi.HeaderSize+2)
	}
}

func TestLayout(t *testing.T) {
	got := abi.Append([]byte{0xee}, abi.KindAlert, 0x0102030405060708, "ab", "c",
		[]abi.Field{{"v", 1}}, []abi.Tag{{"k", "vv"}})
	want := []byte{0xee, // what was in dst
		36, 0, 0, 0, // size
		4, 1, 1, 0, // kind, nfields, ntags, reserved
		8, 7, 6, 5, 4, 3, 2, 1, // time
		2, 'a', 'b', 1, 'c', // source, series
		1, 'v', 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // field v = 1.0
		1, 'k', 2, 'v', 'v', // tag
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Append =\n%v\nwant\n%v", got, want)
	}
}

func equal(a, b rec) bool {
	if a.kind != b.kind || a.timeNS != b.timeNS || a.source != b.source || a.series != b.series ||
		len(a.fields) != len(b.fields) || len(a.tags) != len(b.tags) {
		return false
	}
	for i := range a.fields {
		if a.fields[i] != b.fields[i] {
			return false
		}
	}
	for i := range a.tags {
		if a.tags[i] != b.tags[i] {
			return false
		}
	}
	return true
}

func TestTruncation(t *testing.T) {
	long256 := strings.Repeat("y", 256)
	r := rec{kind: abi.KindReading, source: long, series: long256,
		fields: []abi.Field{{long, 1}}, tags: []abi.Tag{{long, long}}}
	batch := r.append(nil)
	var b abi.Builder
	r.build(&b)
	if !bytes.Equal(batch, b.Buf) {
		t.Fatal("Append and Builder differ")
	}
	it := abi.Iter{Buf: batch}
	if !it.Next() {
		t.Fatal(it.Err())
	}
	got := decode(&it.Rec)
	cut := long[:abi.MaxString]
	want := rec{kind: abi.KindReading, source: cut, series: long256[:abi.MaxString],
		fields: []abi.Field{{cut, 1}}, tags: []abi.Tag{{cut, cut}}}
	if !equal(got, want) {
		t.Errorf("decoded %+v", got)
	}
	// A string of exactly MaxString bytes is kept whole.
	whole := strings.Repeat("z", abi.MaxString)
	it = abi.Iter{Buf: abi.Append(nil, abi.KindEvent, 0, whole, "", nil, nil)}
	if !it.Next() || string(it.Rec.Source) != whole {
		t.Errorf("a %d-byte source was cut", abi.MaxString)
	}
}

func TestMaxFieldsAndTags(t *testing.T) {
	r := rec{kind: abi.KindReading}
	for i := range abi.MaxFields + 10 {
		r.fields = append(r.fields, abi.Field{Name: "f" + strconv.Itoa(i), Value: float64(i)})
	}
	for i := range abi.MaxTags + 3 {
		r.tags = append(r.tags, abi.Tag{Key: "t" + strconv.Itoa(i), Value: "v"})
	}
	batch := r.append(nil)
	var b abi.Builder
	r.build(&b)
	if !bytes.Equal(batch, b.Buf) {
		t.Fatal("Append and Builder differ")
	}
	it := abi.Iter{Buf: batch}
	if !it.Next() {
		t.Fatal(it.Err())
	}
	if it.Rec.NumFields() != abi.MaxFields || it.Rec.NumTags() != abi.MaxTags {
		t.Errorf("NumFields, NumTags = %d, %d, want %d, %d", it.Rec.NumFields(), it.Rec.NumTags(), abi.MaxFields, abi.MaxTags)
	}
	got := decode(&it.Rec)
	r.fields, r.tags = r.fields[:abi.MaxFields], r.tags[:abi.MaxTags]
	if !equal(got, r) {
		t.Error("the first MaxFields fields and MaxTags tags were not kept")
	}
	if name, v := it.Rec.FieldAt(abi.MaxFields - 1); string(name) != "f254" || v != 254 {
		t.Errorf("FieldAt(last) = %q, %v", name, v)
	}
	if it.Next() || it.Err() != nil {
		t.Errorf("Next after the last record: %v", it.Err())
	}
}

func TestBuilderFieldAfterTag(t *testing.T) {
	var b abi.Builder
	b.Begin(abi.KindReading, 5, "src", "ser")
	b.Field("a", 1)
	b.Tag("k", "v")
	b.Field("b", 2) // dropped: fields come before tags
	b.End()
	want := abi.Append(nil, abi.KindReading, 5, "src", "ser", []abi.Field{{"a", 1}}, []abi.Tag{{"k", "v"}})
	if !bytes.Equal(b.Buf, want) {
		t.Errorf("Builder = %x, want %x", b.Buf, want)
	}
	// Reset and reuse.
	b.Buf = b.Buf[:0]
	b.Begin(abi.KindEvent, 0, "", "")
	b.End()
	if n, err := abi.Count(b.Buf); n != 1 || err != nil || len(b.Buf) != abi.HeaderSize+2 {
		t.Errorf("after reset: Count = %d, %v; %d bytes", n, err, len(b.Buf))
	}
}

func TestRecordLookups(t *testing.T) {
	batch := abi.Append(nil, abi.KindAlert, 1, "hot", "environment",
		[]abi.Field{{"value", 31}, {"threshold", 30}, {"value", 99}},
		[]abi.Tag{{"state", "raised"}, {"severity", "warning"}, {"state", "cleared"}, {"empty", ""}})
	it := abi.Iter{Buf: batch}
	if !it.Next() {
		t.Fatal(it.Err())
	}
	r := &it.Rec
	for _, tc := range []struct {
		name string
		v    float64
		ok   bool
	}{{"value", 31, true}, {"threshold", 30, true}, {"missing", 0, false}, {"", 0, false}, {"valu", 0, false}} {
		if v, ok := r.Field(tc.name); v != tc.v || ok != tc.ok {
			t.Errorf("Field(%q) = %v, %v, want %v, %v", tc.name, v, ok, tc.v, tc.ok)
		}
	}
	for _, tc := range []struct {
		key, v string
		ok     bool
	}{{"state", "raised", true}, {"severity", "warning", true}, {"empty", "", true}, {"value", "", false}, {"", "", false}} {
		if v, ok := r.Tag(tc.key); string(v) != tc.v || ok != tc.ok {
			t.Errorf("Tag(%q) = %q, %v, want %q, %v", tc.key, v, ok, tc.v, tc.ok)
		}
	}
	if name, v := r.FieldAt(2); string(name) != "value" || v != 99 {
		t.Errorf("FieldAt(2) = %q, %v", name, v)
	}
	// A record without fields still finds its tags.
	it = abi.Iter{Buf: abi.Append(nil, abi.KindEvent, 0, "", "", nil, []abi.Tag{{"kind", "x"}})}
	if !it.Next() {
		t.Fatal(it.Err())
	}
	if v, ok := it.Rec.Tag("kind"); !ok || string(v) != "x" {
		t.Errorf("Tag(kind) = %q, %v", v, ok)
	}
	if _, ok := it.Rec.Field("kind"); ok {
		t.Error("Field found in a record without fields")
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct {
		e    abi.Errno
		want string
	}{
		{abi.OK, "OK"}, {abi.EPERM, "EPERM"}, {abi.EINVAL, "EINVAL"}, {abi.EFAULT, "EFAULT"},
		{abi.ENOSPC, "ENOSPC"}, {abi.EIO, "EIO"}, {abi.ETIMEDOUT, "ETIMEDOUT"}, {abi.ENODEV, "ENODEV"},
		{abi.EQUOTA, "EQUOTA"}, {abi.ENOENT, "ENOENT"}, {abi.ENOSYS, "ENOSYS"}, {abi.ENACK, "ENACK"},
		{12, "errno(12)"}, {4294967295, "errno(4294967295)"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("Errno(%d).String() = %q, want %q", uint32(tc.e), got, tc.want)
		}
		if got := tc.e.Error(); got != "perch: "+tc.want {
			t.Errorf("Errno(%d).Error() = %q", uint32(tc.e), got)
		}
	}
	var err error = abi.ENACK
	if !errors.Is(err, abi.ENACK) || errors.Is(err, abi.EIO) {
		t.Error("errors.Is on an Errno")
	}

	for _, tc := range []struct {
		k     abi.Kind
		want  string
		valid bool
	}{
		{0, "kind(0)", false}, {abi.KindReading, "reading", true}, {abi.KindSummary, "summary", true},
		{abi.KindScore, "score", true}, {abi.KindAlert, "alert", true}, {abi.KindEvent, "event", true},
		{6, "kind(6)", false}, {255, "kind(255)", false},
	} {
		if got := tc.k.String(); got != tc.want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(tc.k), got, tc.want)
		}
		if got := tc.k.Valid(); got != tc.valid {
			t.Errorf("Kind(%d).Valid() = %v", uint8(tc.k), got)
		}
	}
}

func TestMalformed(t *testing.T) {
	good := abi.Append(nil, abi.KindReading, 7, "env", "environment", []abi.Field{{"t", 1}}, []abi.Tag{{"k", "v"}})
	n := len(good)
	// with returns a copy of good changed by fn.
	with := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	setSize := func(size int) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b, uint32(size)); return b }
	}
	for _, tc := range []struct {
		name  string
		batch []byte
		want  error
		off   int // of the bad record
		count int // records before it
	}{
		{"shorter than a header", good[:10], abi.ErrShort, 0, 0},
		{"one byte short of the smallest record", good[:abi.HeaderSize+1], abi.ErrShort, 0, 0},
		{"size smaller than the header", with(setSize(abi.HeaderSize - 1)), abi.ErrShort, 0, 0},
		{"size zero", with(setSize(0)), abi.ErrShort, 0, 0},
		{"size past the end", with(setSize(n + 1)), abi.ErrShort, 0, 0},
		{"size 4 GiB", with(setSize(math.MaxUint32)), abi.ErrShort, 0, 0},
		{"cut short", good[:n-1], abi.ErrShort, 0, 0},
		{"kind 0", with(func(b []byte) []byte { b[4] = 0; return b }), abi.ErrBadKind, 0, 0},
		{"kind 6", with(func(b []byte) []byte { b[4] = 6; return b }), abi.ErrBadKind, 0, 0},
		{"source past the record", with(func(b []byte) []byte { b[16] = 200; return b }), abi.ErrBadSize, 0, 0},
		{"series past the record", with(func(b []byte) []byte { b[20] = 200; return b }), abi.ErrBadSize, 0, 0},
		{"field past the record", with(func(b []byte) []byte { b[5] = 2; return b }), abi.ErrBadSize, 0, 0},
		{"tag past the record", with(func(b []byte) []byte { b[6] = 2; return b }), abi.ErrBadSize, 0, 0},
		{"field value cut", with(setSize(n - 9))[:n-9], abi.ErrBadSize, 0, 0},
		{"trailing garbage inside the size", append(with(setSize(n+3)), 1, 2, 3), abi.ErrBadSize, 0, 0},
		{"content past the declared tags", with(func(b []byte) []byte { b[6] = 0; return b }), abi.ErrBadSize, 0, 0},
		{"bad second record", append(append([]byte(nil), good...), with(func(b []byte) []byte { b[4] = 9; return b })...), abi.ErrBadKind, n, 1},
		{"garbage after a record", append(append([]byte(nil), good...), 1, 2, 3), abi.ErrShort, n, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := abi.Iter{Buf: tc.batch}
			count := 0
			for it.Next() {
				count++
			}
			err := it.Err()
			if !errors.Is(err, tc.want) {
				t.Fatalf("Err() = %v, want %v", err, tc.want)
			}
			var de *abi.DecodeError
			if !errors.As(err, &de) || de.Offset != tc.off {
				t.Errorf("Err() = %#v, want a DecodeError at offset %d", err, tc.off)
			}
			if want := tc.want.Error() + " at byte " + strconv.Itoa(tc.off); err.Error() != want {
				t.Errorf("Err() = %q, want %q", err, want)
			}
			if count != tc.count {
				t.Errorf("%d records before the error, want %d", count, tc.count)
			}
			if it.Next() {
				t.Error("Next after an error")
			}
			if c, cerr := abi.Count(tc.batch); c != tc.count || !errors.Is(cerr, tc.want) {
				t.Errorf("Count = %d, %v", c, cerr)
			}
		})
	}
	for _, b := range [][]byte{nil, {}} {
		it := abi.Iter{Buf: b}
		if it.Next() || it.Err() != nil {
			t.Errorf("empty batch %#v: Next or Err %v", b, it.Err())
		}
		if c, err := abi.Count(b); c != 0 || err != nil {
			t.Errorf("Count(%#v) = %d, %v", b, c, err)
		}
	}
}

func TestAllocs(t *testing.T) {
	var batch []byte
	for range 50 {
		for i := range records {
			batch = records[i].append(batch)
		}
	}
	var sum float64
	if a := testing.AllocsPerRun(100, func() {
		it := abi.Iter{Buf: batch}
		for it.Next() {
			r := &it.Rec
			if v, ok := r.Field("temperature_c"); ok {
				sum += v
			}
			if _, ok := r.Tag("state"); ok {
				sum++
			}
			r.Fields(func(_ []byte, v float64) { sum += v })
			if r.NumFields() > 0 {
				_, v := r.FieldAt(r.NumFields() - 1)
				sum += v
			}
		}
		if it.Err() != nil {
			panic(it.Err())
		}
	}); a != 0 {
		t.Errorf("Iter: %v allocations per batch, want 0", a)
	}

	b := abi.Builder{Buf: make([]byte, 0, 64<<10)}
	if a := testing.AllocsPerRun(100, func() {
		b.Buf = b.Buf[:0]
		for range 100 {
			b.Begin(abi.KindReading, 1, "env", "environment")
			b.Field("temperature_c", 21.5)
			b.Field("pressure_hpa", 1013.25)
			b.Tag("unit", "si")
			b.End()
		}
	}); a != 0 {
		t.Errorf("Builder: %v allocations per 100 records, want 0", a)
	}
	buf := make([]byte, 0, 64<<10)
	fields := []abi.Field{{"temperature_c", 21.5}, {"pressure_hpa", 1013.25}}
	tags := []abi.Tag{{"unit", "si"}}
	if a := testing.AllocsPerRun(100, func() {
		buf = buf[:0]
		for range 100 {
			buf = abi.Append(buf, abi.KindReading, 1, "env", "environment", fields, tags)
		}
	}); a != 0 {
		t.Errorf("Append: %v allocations per 100 records, want 0", a)
	}
}

// FuzzIter checks that no batch makes Iter panic and that every record Iter accepts is in the
// one encoding Append makes of its decoded parts.
func FuzzIter(f *testing.F) {
	var batch []byte
	for i := range records {
		r := records[i].append(nil)
		f.Add(r)
		batch = append(batch, r...)
	}
	f.Add(batch)
	f.Add([]byte{})
	f.Add(batch[:len(batch)-1])
	f.Fuzz(func(t *testing.T, batch []byte) {
		it := abi.Iter{Buf: batch}
		n := 0
		for it.Next() {
			n++
			r := &it.Rec
			raw := batch[it.Off : len(batch)-len(it.Buf)]
			d := decode(r)
			again := d.append(nil)
			if !bytes.Equal(again, raw) {
				t.Fatalf("record at %d re-encodes differently:\n got %x\nwant %x", it.Off, again, raw)
			}
			for i, f := range d.fields {
				name, v := r.FieldAt(i)
				if string(name) != f.Name || math.Float64bits(v) != math.Float64bits(f.Value) {
					t.Fatalf("FieldAt(%d) = %q, %v; Fields gave %q, %v", i, name, v, f.Name, f.Value)
				}
				if got, ok := r.Field(f.Name); !ok || i == firstField(r, name) && math.Float64bits(got) != math.Float64bits(v) {
					t.Fatalf("Field(%q) = %v, %v; FieldAt(%d) = %v", name, got, ok, i, v)
				}
			}
			for _, tg := range d.tags {
				if _, ok := r.Tag(tg.Key); !ok {
					t.Fatalf("Tag(%q) not found", tg.Key)
				}
			}
		}
		c, err := abi.Count(batch)
		if c != n || (err == nil) != (it.Err() == nil) {
			t.Fatalf("Count = %d, %v; Iter: %d, %v", c, err, n, it.Err())
		}
		if err := it.Err(); err != nil {
			var de *abi.DecodeError
			if !errors.As(err, &de) || de.Offset != len(batch)-len(it.Buf) ||
				!(errors.Is(err, abi.ErrShort) || errors.Is(err, abi.ErrBadSize) || errors.Is(err, abi.ErrBadKind)) {
				t.Fatalf("Err() = %v", err)
			}
		}
	})
}

// firstField returns the index of the first field named name.
func firstField(r *abi.Record, name []byte) int {
	for i := range r.NumFields() {
		if n, _ := r.FieldAt(i); bytes.Equal(n, name) {
			return i
		}
	}
	return -1
}

func TestReservedByte(t *testing.T) {
	b := abi.Append(nil, abi.KindReading, 1, "s", "x", nil, nil)
	b[7] = 1
	if _, err := abi.Count(b); !errors.Is(err, abi.ErrReserved) {
		t.Fatalf("got %v, want ErrReserved", err)
	}
	r := abi.Append(nil, abi.KindReading, 1, "s", "x", []abi.Field{{Name: "a", Value: 1}}, nil)
	it := abi.Iter{Buf: r}
	it.Next()
	if name, v := it.Rec.FieldAt(1); name != nil || v != 0 {
		t.Fatalf("FieldAt out of range: %q %v", name, v)
	}
}
