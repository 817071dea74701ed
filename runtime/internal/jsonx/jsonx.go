// Package jsonx appends JSON strings and numbers to byte slices without reflection or
// allocation, for the recorder's field columns and the uplink's payloads, which both encode
// records on hot paths. It is safe for concurrent use (it has no state).
package jsonx

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendFinite appends a finite v as a JSON number, in plain notation unless its magnitude
// is below 1e-6 or at least 1e21. NaN and infinities are the caller's to handle: JSON has none.
func AppendFinite(dst []byte, v float64) []byte {
	format := byte('f')
	if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, v, format, -1, 64)
}

// AppendString appends s as a JSON string. Bytes that are not UTF-8 become U+FFFD, as
// encoding/json does; control characters and U+2028/U+2029 (line breaks to JavaScript) are
// escaped.
func AppendString[S string | []byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		var tmp [utf8.UTFMax]byte
		r, size := utf8.DecodeRune(tmp[:copy(tmp[:], s[i:])])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, `\u202`...)
			dst = append(dst, hex[r&0xf])
		default:
			dst = append(dst, tmp[:size]...)
		}
		i += size
	}
	return append(dst, '"')
}
