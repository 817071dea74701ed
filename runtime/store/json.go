package store

import (
	"bytes"
	"math"

	"github.com/perch-edge/perch/runtime/internal/jsonx"

	"github.com/perch-edge/perch/sdk/abi"
)

// jsonEncoder turns a record's fields and tags into JSON objects, reusing its buffers between
// records. The zero value is ready to use; it is not safe for concurrent use.
type jsonEncoder struct {
	buf  []byte
	seen [][]byte // names already written to the current object
}

// fields returns the record's numeric fields as a JSON object, such as {"temperature_c":21.5}.
// A repeated name keeps its first value, as [abi.Record.Field] does. The bytes are the encoder's
// buffer: valid until its next call.
func (e *jsonEncoder) fields(r *abi.Record) []byte {
	if r.NumFields() == 0 {
		return emptyObject
	}
	e.begin()
	r.Fields(func(name []byte, v float64) {
		if e.member(name) {
			e.buf = appendJSONNumber(e.buf, v)
		}
	})
	return e.end()
}

// tags returns the record's string tags as a JSON object, such as {"room":"lab"}. A repeated
// key keeps its first value, as [abi.Record.Tag] does. The bytes are the encoder's buffer: valid
// until its next call.
func (e *jsonEncoder) tags(r *abi.Record) []byte {
	if r.NumTags() == 0 {
		return emptyObject
	}
	e.begin()
	r.Tags(func(key, value []byte) {
		if e.member(key) {
			e.buf = jsonx.AppendString(e.buf, value)
		}
	})
	return e.end()
}

func (e *jsonEncoder) begin() {
	e.buf = append(e.buf[:0], '{')
	e.seen = e.seen[:0]
}

// member writes `"name":` and reports true, or reports false if name is already in the object.
func (e *jsonEncoder) member(name []byte) bool {
	for _, s := range e.seen {
		if bytes.Equal(s, name) {
			return false
		}
	}
	e.seen = append(e.seen, name)
	if len(e.seen) > 1 {
		e.buf = append(e.buf, ',')
	}
	e.buf = jsonx.AppendString(e.buf, name)
	e.buf = append(e.buf, ':')
	return true
}

func (e *jsonEncoder) end() []byte {
	e.buf = append(e.buf, '}')
	clear(e.seen) // the names point into a batch: do not keep it alive
	return e.buf
}

// emptyObject is the JSON of no fields or no tags; callers must not modify it.
var emptyObject = []byte("{}")

// appendJSONNumber appends v as a JSON number. JSON has no NaN nor infinities: NaN becomes
// null, and ±Inf becomes ±9e999, which SQLite's JSON functions (and SQLite itself, when it
// writes an infinity) read as an infinity.
func appendJSONNumber(dst []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(dst, "null"...)
	case math.IsInf(v, 1):
		return append(dst, "9e999"...)
	case math.IsInf(v, -1):
		return append(dst, "-9e999"...)
	}
	return jsonx.AppendFinite(dst, v)
}
