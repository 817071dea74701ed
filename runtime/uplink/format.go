package uplink

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/perch-edge/perch/runtime/store"
)

// The payloads of the summaries and events topics.
//
// A message on perch/<site>/<device>/summaries or .../events has one of three forms; the far
// side tells them apart by the first bytes of the payload:
//
//	'{'        one message, JSON: {"id":N,"time":"RFC 3339 ns","kind":...,"source":...,
//	           "series":...,"fields":{name:number or null},"tags":{key:string}}
//	           (uplink.summaries.batch 0; alerts, status and raw readings always look like this)
//	'['        a batch as a JSON array of such objects, in order of id (batch on, compress off)
//	0x1f 0x8b  a batch, gzip-compressed (RFC 1952; batch and compress on, the default). The
//	           gunzipped bytes start with 0xB1 (the columnar batch below) or, from older
//	           versions or for rows the columnar form cannot hold, with '[' (the JSON array)
//
// [DecodeMessages] reads all of them. Every message keeps its own id, so the far side drops
// duplicates per message however messages were grouped: a batch sent again after a reconnect may
// hold more or fewer messages than the first time, and its id (the id of its first message) is
// not a message's identity.
//
// # The columnar batch
//
// Messages are grouped by (kind, source, series, tags, field names in order): each group writes
// those once, then its rows' ids, times and values column by column. In the grammar below, str
// is a uvarint byte length then that many bytes (UTF-8), uvarint is unsigned LEB128 and varint
// is zigzag LEB128 (Go's encoding/binary AppendUvarint and AppendVarint):
//
//	body    = 0xB1 first:uvarint ngroups:uvarint group{ngroups}
//	group   = kind:str source:str series:str
//	          ntags:uvarint (key:str value:str){ntags}
//	          nfields:uvarint (shared:uvarint suffix:str){nfields}
//	          nrows:uvarint (1 or more)
//	          id{nrows}:uvarint     the first: id - first; then id - the previous id (1 or more)
//	          unit:uvarint          ns per unit of time: 1, 1000, 1000000 or 1000000000
//	          time{nrows}:varint    the first: time / unit (time in ns since the Unix epoch);
//	                                then the difference from the previous one
//	          column{nfields}       the values of each field, in the order of the names
//	column  = 0x00 exp:varint m{nrows}:varint
//	                                decimal: value = m × 10^exp, the first m as is, then each
//	                                the difference from the previous m
//	        | 0x01 text:str{nrows}  a JSON number each, as the message has it; "" is null
//	                                (NaN or an infinity)
//
// A field name is the first shared bytes of the previous name of its group (none for the first)
// followed by suffix: "temperature_c_mean" after "temperature_c_count" is shared 14, "mean".
// first, the batch id, is the lowest id of the batch; the sniffer reads it from the head of the
// stream. The decimal form holds exactly the digits the message has (summaries keep
// uplink.summaries.digits significant digits), so a value decodes to the same float64 as the
// JSON message would; what it cannot hold (null, more than 18 digits, a column whose scales are
// too far apart) goes as text. A row whose JSON does not have the shape above (no valid time, a
// value not a number) makes the whole batch a JSON array.

// columnarMagic starts a columnar batch, after gunzip.
const columnarMagic = 0xB1

// gzipMagic starts a gzip stream (RFC 1952).
const gzipMagic = "\x1f\x8b"

// maxDecoded bounds the gunzipped size of a payload [DecodeMessages] accepts.
const maxDecoded = 16 << 20

// Column encodings.
const (
	colDecimal = 0
	colText    = 1
)

// Message is one alert, summary, event or raw reading as it went upstream.
type Message struct {
	ID     int64     // the message id: the same id twice is the same message
	Time   time.Time // UTC
	Kind   string    // "alert", "summary", "event" or "reading"
	Source string
	Series string
	Fields []Field // in the order the record has them
	Tags   []Tag
}

// Field is a numeric field of a [Message]; null in JSON (NaN or an infinity) is NaN.
type Field struct {
	Name  string
	Value float64
}

// Tag is a tag of a [Message].
type Tag struct{ Key, Value string }

// Field returns the value of the field name, and whether there is one.
func (m *Message) Field(name string) (float64, bool) {
	for _, f := range m.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return 0, false
}

// Tag returns the value of the tag key, and whether there is one.
func (m *Message) Tag(key string) (string, bool) {
	for _, t := range m.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}

// DecodeMessages returns the messages of an outbox topic's payload (alerts, summaries, events,
// readings), whichever of its forms (see format.go), in order of id. It refuses a payload that
// gunzips to more than 16 MiB. The messages of one columnar group share their Tags slice: copy
// it before changing it. It is safe for concurrent use.
func DecodeMessages(payload []byte) ([]Message, error) {
	if bytes.HasPrefix(payload, []byte(gzipMagic)) {
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("uplink: payload: gzip: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(zr, maxDecoded+1))
		if err != nil {
			return nil, fmt.Errorf("uplink: payload: gzip: %w", err)
		}
		if len(body) > maxDecoded {
			return nil, fmt.Errorf("uplink: payload: gunzips to more than %d bytes", maxDecoded)
		}
		if len(body) > 0 && body[0] == columnarMagic {
			return decodeColumnar(body)
		}
		if len(body) == 0 || body[0] != '[' {
			return nil, errors.New("uplink: payload: gzip stream holds neither a columnar batch (0xB1) nor a JSON array")
		}
		payload = body
	}
	var raws []json.RawMessage
	switch {
	case len(payload) > 0 && payload[0] == '{':
		raws = []json.RawMessage{payload}
	case len(payload) > 0 && payload[0] == '[':
		if err := json.Unmarshal(payload, &raws); err != nil {
			return nil, fmt.Errorf("uplink: payload: JSON array: %w", err)
		}
	default:
		return nil, errors.New("uplink: payload: want '{', '[' or gzip (0x1f 0x8b) at the start")
	}
	out := make([]Message, 0, len(raws))
	for i, r := range raws {
		p, err := parseMessage(r)
		if err != nil {
			return nil, fmt.Errorf("uplink: payload: message %d: %w", i, err)
		}
		if !p.hasID {
			return nil, fmt.Errorf("uplink: payload: message %d: no \"id\"", i)
		}
		m := Message{ID: p.id, Time: time.Unix(0, p.timeNS).UTC(), Kind: p.kind, Source: p.source,
			Series: p.series, Tags: p.tags}
		for _, f := range p.fields {
			m.Fields = append(m.Fields, Field{Name: f.name, Value: numberValue(f.num)})
		}
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b Message) int { return cmpInt(a.ID, b.ID) })
	return out, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// numberValue is the float64 of a JSON number's text; "" (null) is NaN.
func numberValue(num string) float64 {
	if num == "" {
		return math.NaN()
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) { // out of range: ±Inf or 0, as JSON would
		return math.NaN()
	}
	return v
}

// parsed is a message's JSON, its members in order.
type parsed struct {
	hasID                bool
	id                   int64
	timeNS               int64
	kind, source, series string
	fields               []numField
	tags                 []Tag
}

type numField struct {
	name string
	num  string // the JSON number's text; "" for null
}

// parseMessage parses one message, {"id":N,"time":...,...} or a row's payload without "id".
func parseMessage(js []byte) (parsed, error) {
	var p parsed
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	if err := delim(d, '{'); err != nil {
		return p, err
	}
	hasTime := false
	for d.More() {
		key, err := str(d)
		if err != nil {
			return p, err
		}
		switch key {
		case "id":
			var n json.Number
			if err := d.Decode(&n); err != nil {
				return p, fmt.Errorf("\"id\": %w", err)
			}
			if p.id, err = n.Int64(); err != nil || p.id < 0 {
				return p, fmt.Errorf("\"id\": want an integer ≥ 0, got %s", n)
			}
			p.hasID = true
		case "time":
			s, err := str(d)
			if err != nil {
				return p, fmt.Errorf("\"time\": %w", err)
			}
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return p, fmt.Errorf("\"time\": %w", err)
			}
			if p.timeNS = t.UnixNano(); !time.Unix(0, p.timeNS).Equal(t) {
				return p, fmt.Errorf("\"time\": %q out of range", s)
			}
			hasTime = true
		case "kind":
			p.kind, err = str(d)
		case "source":
			p.source, err = str(d)
		case "series":
			p.series, err = str(d)
		case "fields":
			p.fields, err = fieldsObject(d)
		case "tags":
			p.tags, err = tagsObject(d)
		default:
			var skip json.RawMessage
			err = d.Decode(&skip)
		}
		if err != nil {
			return p, fmt.Errorf("%q: %w", key, err)
		}
	}
	if err := delim(d, '}'); err != nil {
		return p, err
	}
	if _, err := d.Token(); err != io.EOF {
		return p, errors.New("data after the object")
	}
	if !hasTime {
		return p, errors.New("no \"time\"")
	}
	return p, nil
}

func delim(d *json.Decoder, want json.Delim) error {
	t, err := d.Token()
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("want %q, got %v", want, t)
	}
	return nil
}

func str(d *json.Decoder) (string, error) {
	t, err := d.Token()
	if err != nil {
		return "", err
	}
	s, ok := t.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %v", t)
	}
	return s, nil
}

func fieldsObject(d *json.Decoder) ([]numField, error) {
	if err := delim(d, '{'); err != nil {
		return nil, err
	}
	var out []numField
	for d.More() {
		name, err := str(d)
		if err != nil {
			return nil, err
		}
		t, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch v := t.(type) {
		case json.Number:
			out = append(out, numField{name, string(v)})
		case nil:
			out = append(out, numField{name, ""})
		default:
			return nil, fmt.Errorf("field %q: want a number or null, got %v", name, t)
		}
	}
	return out, delim(d, '}')
}

func tagsObject(d *json.Decoder) ([]Tag, error) {
	if err := delim(d, '{'); err != nil {
		return nil, err
	}
	var out []Tag
	for d.More() {
		k, err := str(d)
		if err != nil {
			return nil, err
		}
		v, err := str(d)
		if err != nil {
			return nil, fmt.Errorf("tag %q: %w", k, err)
		}
		out = append(out, Tag{k, v})
	}
	return out, delim(d, '}')
}

// decimal splits a JSON number's text into m × 10^exp with m's trailing zeros removed; ok is
// false if m would need more than 18 digits.
func decimal(num string) (m int64, exp int, ok bool) {
	if num == "" {
		return 0, 0, false
	}
	s := num
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	mant := s
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || e > 1000 || e < -1000 {
			return 0, 0, false
		}
		exp, mant = e, s[:i]
	}
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		exp -= len(mant) - i - 1
		mant = mant[:i] + mant[i+1:]
	}
	mant = strings.TrimLeft(mant, "0")
	for strings.HasSuffix(mant, "0") {
		mant = mant[:len(mant)-1]
		exp++
	}
	if mant == "" {
		return 0, 0, !neg // -0 keeps its sign only as text
	}
	if len(mant) > 18 {
		return 0, 0, false
	}
	for _, c := range mant {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		m = m*10 + int64(c-'0')
	}
	if neg {
		m = -m
	}
	return m, exp, true
}

// pow10 are the powers of ten that keep a mantissa of up to 18 digits within int64 when scaled.
var pow10 = [...]int64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
	1e14, 1e15, 1e16, 1e17, 1e18}

// mantLimit bounds a scaled mantissa, so that the difference of two fits in an int64.
const mantLimit = 1 << 62

// appendColumn appends the column of the values nums (JSON number texts, "" for null).
func appendColumn(b []byte, nums []string) []byte {
	ms := make([]int64, len(nums))
	exps := make([]int, len(nums))
	decimalOK := true
	minExp := math.MaxInt
	for i, n := range nums {
		var ok bool
		if ms[i], exps[i], ok = decimal(n); !ok {
			decimalOK = false
			break
		}
		if ms[i] != 0 {
			minExp = min(minExp, exps[i])
		}
	}
	if decimalOK {
		if minExp == math.MaxInt { // all zero
			minExp = 0
		}
		for i := range ms {
			if ms[i] == 0 {
				continue
			}
			sh := exps[i] - minExp
			if sh >= len(pow10) || ms[i] > mantLimit/pow10[sh] || ms[i] < -mantLimit/pow10[sh] {
				decimalOK = false
				break
			}
			ms[i] *= pow10[sh]
		}
	}
	if !decimalOK {
		b = append(b, colText)
		for _, n := range nums {
			b = appendStr(b, n)
		}
		return b
	}
	b = append(b, colDecimal)
	b = binary.AppendVarint(b, int64(minExp))
	var prev int64
	for _, m := range ms {
		b = binary.AppendVarint(b, m-prev)
		prev = m
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// groupKey identifies the group of a row: kind, source, series, tags and field names.
func groupKey(p *parsed) string {
	var b []byte
	b = appendStr(b, p.kind)
	b = appendStr(b, p.source)
	b = appendStr(b, p.series)
	b = binary.AppendUvarint(b, uint64(len(p.tags)))
	for _, t := range p.tags {
		b = appendStr(appendStr(b, t.Key), t.Value)
	}
	b = binary.AppendUvarint(b, uint64(len(p.fields)))
	for _, f := range p.fields {
		b = appendStr(b, f.name)
	}
	return string(b)
}

// encodeColumnar returns the columnar batch of rows (in order of id), not compressed, or false
// if a row's payload does not parse as a message.
func encodeColumnar(rows []store.OutboxRow) ([]byte, bool) {
	type group struct {
		p     *parsed // the first row's
		ids   []int64
		times []int64
		cols  [][]string
	}
	var groups []*group
	byKey := map[string]*group{}
	ps := make([]parsed, len(rows))
	for i := range rows {
		p := &ps[i]
		var err error
		if *p, err = parseMessage(rows[i].Payload); err != nil || p.hasID {
			return nil, false
		}
		k := groupKey(p)
		g := byKey[k]
		if g == nil {
			g = &group{p: p, cols: make([][]string, len(p.fields))}
			byKey[k] = g
			groups = append(groups, g)
		}
		if i > 0 && rows[i].ID <= rows[i-1].ID {
			return nil, false // not in order of id
		}
		g.ids = append(g.ids, rows[i].ID)
		g.times = append(g.times, p.timeNS)
		for j, f := range p.fields {
			g.cols[j] = append(g.cols[j], f.num)
		}
	}
	first := rows[0].ID
	b := []byte{columnarMagic}
	b = binary.AppendUvarint(b, uint64(first))
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		p := g.p
		b = appendStr(b, p.kind)
		b = appendStr(b, p.source)
		b = appendStr(b, p.series)
		b = binary.AppendUvarint(b, uint64(len(p.tags)))
		for _, t := range p.tags {
			b = appendStr(appendStr(b, t.Key), t.Value)
		}
		b = binary.AppendUvarint(b, uint64(len(p.fields)))
		prev := ""
		for _, f := range p.fields {
			n := 0
			for n < len(prev) && n < len(f.name) && prev[n] == f.name[n] {
				n++
			}
			b = binary.AppendUvarint(b, uint64(n))
			b = appendStr(b, f.name[n:])
			prev = f.name
		}
		b = binary.AppendUvarint(b, uint64(len(g.ids)))
		last := first
		for _, id := range g.ids {
			b = binary.AppendUvarint(b, uint64(id-last))
			last = id
		}
		unit := int64(1e9)
		for _, t := range g.times {
			for t%unit != 0 {
				unit /= 1000
			}
		}
		b = binary.AppendUvarint(b, uint64(unit))
		var pt int64
		for _, t := range g.times {
			b = binary.AppendVarint(b, t/unit-pt)
			pt = t / unit
		}
		for _, c := range g.cols {
			b = appendColumn(b, c)
		}
	}
	return b, true
}

// colReader reads a columnar batch; its first error sticks.
type colReader struct {
	b     []byte
	total int // the body's length, for offsets in errors
	err   error
}

func (r *colReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("uplink: columnar batch, byte %d: %s", r.total-len(r.b), fmt.Sprintf(format, args...))
	}
}

func (r *colReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("%s: bad uvarint", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *colReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("%s: bad varint", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a count of items that take at least min bytes each.
func (r *colReader) count(what string, each int) int {
	n := r.uvarint(what)
	if r.err == nil && n > uint64(len(r.b)/each) {
		r.fail("%s: %d, more than the %d bytes left can hold", what, n, len(r.b))
		return 0
	}
	return int(n)
}

func (r *colReader) str(what string) string {
	n := r.uvarint(what)
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail("%s: length %d past the end", what, n)
		return ""
	}
	s := string(r.b[:n])
	if !utf8.ValidString(s) {
		r.fail("%s: not UTF-8", what)
		return ""
	}
	r.b = r.b[n:]
	return s
}

func (r *colReader) byte(what string) byte {
	if r.err == nil && len(r.b) == 0 {
		r.fail("%s: past the end", what)
	}
	if r.err != nil {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// decodeColumnar decodes a gunzipped columnar batch.
func decodeColumnar(body []byte) ([]Message, error) {
	r := &colReader{b: body[1:], total: len(body)}
	first := r.uvarint("first id")
	if first > math.MaxInt64 {
		r.fail("first id %d out of range", first)
	}
	ngroups := r.count("groups", 4)
	var out []Message
	for gi := 0; gi < ngroups && r.err == nil; gi++ {
		kind, source, series := r.str("kind"), r.str("source"), r.str("series")
		var tags []Tag
		for range r.count("tags", 2) {
			tags = append(tags, Tag{r.str("tag key"), r.str("tag value")})
		}
		nf := r.count("fields", 2)
		names := make([]string, 0, nf)
		prev := ""
		for range nf {
			shared := r.uvarint("shared prefix")
			if shared > uint64(len(prev)) {
				r.fail("field name shares %d bytes of %q", shared, prev)
				break
			}
			prev = prev[:shared] + r.str("field name")
			names = append(names, prev)
		}
		nrows := r.count("rows", 2)
		if r.err == nil && nrows == 0 {
			r.fail("group %d has no rows", gi)
		}
		if r.err != nil {
			break
		}
		base := len(out)
		id := first
		for i := range nrows {
			d := r.uvarint("id")
			if i > 0 && d == 0 {
				r.fail("ids not increasing")
			}
			if id += d; id > math.MaxInt64 || id < d {
				r.fail("id out of range")
			}
			out = append(out, Message{ID: int64(id), Kind: kind, Source: source, Series: series, Tags: tags})
		}
		unit := r.uvarint("time unit")
		if r.err == nil && unit != 1 && unit != 1e3 && unit != 1e6 && unit != 1e9 {
			r.fail("time unit %d, want 1, 1000, 1000000 or 1000000000", unit)
		}
		var t int64
		for i := range nrows {
			d := r.varint("time")
			if r.err != nil {
				break
			}
			nt := t + d
			if (d > 0 && nt < t) || (d < 0 && nt > t) || nt > math.MaxInt64/int64(unit) || nt < math.MinInt64/int64(unit) {
				r.fail("time out of range")
				break
			}
			t = nt
			out[base+i].Time = time.Unix(0, t*int64(unit)).UTC()
		}
		for _, name := range names {
			if r.err == nil && len(r.b) < nrows {
				r.fail("column %q: %d rows do not fit the %d bytes left", name, nrows, len(r.b))
			}
			switch r.byte("column type") {
			case colDecimal:
				exp := r.varint("exponent")
				if r.err == nil && (exp < -1100 || exp > 1100) {
					r.fail("column %q: exponent %d out of range", name, exp)
				}
				var m int64
				for i := range nrows {
					d := r.varint("value")
					if r.err != nil {
						break
					}
					nm := m + d
					if (d > 0 && nm < m) || (d < 0 && nm > m) {
						r.fail("column %q: value out of range", name)
						break
					}
					m = nm
					v, _ := strconv.ParseFloat(strconv.FormatInt(m, 10)+"e"+strconv.FormatInt(exp, 10), 64)
					out[base+i].Fields = append(out[base+i].Fields, Field{name, v})
				}
			case colText:
				for i := range nrows {
					s := r.str("value")
					if r.err != nil {
						break
					}
					v := numberValue(s)
					if s != "" && !validNumber(s) {
						r.fail("column %q: %q is not a JSON number", name, s)
						break
					}
					out[base+i].Fields = append(out[base+i].Fields, Field{name, v})
				}
			default:
				if r.err == nil {
					r.fail("column %q: unknown column type", name)
				}
			}
		}
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d bytes after the last group", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	slices.SortStableFunc(out, func(a, b Message) int { return cmpInt(a.ID, b.ID) })
	for i := 1; i < len(out); i++ {
		if out[i].ID == out[i-1].ID {
			return nil, fmt.Errorf("uplink: columnar batch: id %d twice", out[i].ID)
		}
	}
	return out, nil
}

// validNumber reports whether s is a JSON number.
func validNumber(s string) bool {
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil && string(n) == s
}
