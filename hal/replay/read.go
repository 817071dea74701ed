// Package replay is the recorded-data backend of [hal]: a CSV file played back as a device on a
// UART port, which driver modules read like any other serial device (grants, errnos and the
// plugin backend apply unchanged).
//
// # Overview
//
// [ReadFile] (or [Read]) reads a recording into a [Table]: a time and named numeric values per
// row. Three layouts are understood ([Format]):
//
//   - [FormatSKAB]: `;`-separated, first column `datetime` (`2020-03-09 10:14:33`), then named
//     numeric columns; the columns `anomaly` and `changepoint` are labels, left out unless
//     [ReadOptions.Labels] is set. This is the layout of the SKAB benchmark.
//   - [FormatNAB]: `,`-separated, first column `timestamp` (`2013-07-04 00:00:00`), then named
//     numeric columns (`value` in the NAB data files).
//   - [FormatPerch]: `,`-separated, first column `time_ns` (an integer: nanoseconds since the
//     Unix epoch), then named numeric columns, such as
//     `sqlite3 -csv -header perch.db "SELECT time_ns, json_extract(fields,'$.t') AS t FROM readings"`
//     gives. A file of exactly the two columns `time_ns,fields` is the recorder's own export,
//     `sqlite3 -csv -header perch.db "SELECT time_ns, fields FROM readings WHERE ... ORDER BY id"`:
//     each fields cell is a JSON object of numbers; the columns are the names of all the objects,
//     in the order they first appear; a name missing from a row, or null (the recorder's NaN),
//     is NaN, and 9e999 (its infinity) is +Inf.
//
// Date-times carry no zone and are read as UTC; a fraction of a second is allowed. In every
// layout an empty cell is NaN, cells may be quoted (RFC 4180) and surrounded by spaces, and a
// UTF-8 byte order mark and CRLF line ends are accepted. Errors name the line and column
// ([*ParseError]).
//
// A [Device] plays a Table on a UART as lines of text (see [Device] for the protocol), at the
// recorded pace scaled by a speed, or as fast as it is read.
package replay

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Format is the layout of a recording.
type Format string

// The layouts [Read] understands.
const (
	FormatSKAB  Format = "skab"
	FormatNAB   Format = "nab"
	FormatPerch Format = "perch"
)

// Formats lists the layouts, for messages.
var Formats = []Format{FormatSKAB, FormatNAB, FormatPerch}

// SKABLabels are the label columns of the SKAB layout.
var SKABLabels = []string{"anomaly", "changepoint"}

// ErrFormat is wrapped by every error about a recording's content.
var ErrFormat = errors.New("replay: bad recording")

// ParseError is a problem at a place in a recording. It matches [ErrFormat].
type ParseError struct {
	File   string // the file's name, if known
	Line   int    // 1-based; 0 if the problem is not at a line
	Column string // the column's name, if the problem is in one cell
	Msg    string
}

func (e *ParseError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Column != "" {
		fmt.Fprintf(&b, "column %q: ", e.Column)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns [ErrFormat].
func (e *ParseError) Unwrap() error { return ErrFormat }

// Row is one row of a recording: its time and its values, in the order of [Table.Columns]. A
// missing value is NaN.
type Row struct {
	TimeNS int64 // ns since the Unix epoch
	Values []float64
}

// Table is a recording read into memory.
type Table struct {
	Columns []string
	Rows    []Row
}

// ReadOptions select what [Read] keeps.
type ReadOptions struct {
	// Columns keeps only these value columns, in this order; empty keeps them all in the file's
	// order.
	Columns []string
	// Labels keeps the SKAB label columns (anomaly, changepoint). Without it they are left out,
	// and naming them in Columns is an error.
	Labels bool
}

// MaxColumns is the most value columns a Table may have: a record holds at most 255 fields.
const MaxColumns = 255

// layout returns the separator and the name of the time column of f.
func (f Format) layout() (sep rune, timeCol string, ok bool) {
	switch f {
	case FormatSKAB:
		return ';', "datetime", true
	case FormatNAB:
		return ',', "timestamp", true
	case FormatPerch:
		return ',', "time_ns", true
	}
	return 0, "", false
}

// ReadFile reads the recording at path in the format f. Its errors name the file.
//
// The file must be a regular file (not a device or a pipe, which could be endless).
func ReadFile(path string, f Format, o ReadOptions) (*Table, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("replay: %s: not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	t, err := Read(bytes.NewReader(data), f, o)
	var pe *ParseError
	if errors.As(err, &pe) {
		pe.File = path
	}
	return t, err
}

// Read reads a recording in the format f from r.
func Read(r io.Reader, f Format, o ReadOptions) (*Table, error) {
	sep, timeCol, ok := f.layout()
	if !ok {
		return nil, &ParseError{Msg: fmt.Sprintf("unknown format %q (known: skab, nab, perch)", f)}
	}
	cr := csv.NewReader(r)
	cr.Comma = sep
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{Line: 1, Msg: "empty file: want a header line"}
		}
		return nil, csvErr(err)
	}
	header = slices.Clone(header)
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\uFEFF")
	}
	for i := range header {
		header[i] = strings.TrimSpace(header[i])
	}
	if header[0] != timeCol {
		return nil, &ParseError{Line: 1, Msg: fmt.Sprintf("the first column of a %s file is %q, got %q", f, timeCol, header[0])}
	}
	if f == FormatPerch && len(header) == 2 && header[1] == "fields" {
		return readFields(cr, o)
	}
	// Which file column feeds each table column.
	index := map[string]int{}
	var all []string
	for i, name := range header[1:] {
		switch {
		case name == "":
			return nil, &ParseError{Line: 1, Msg: fmt.Sprintf("column %d has no name", i+2)}
		case strings.ContainsAny(name, ",\r\n") || len(name) > 255:
			return nil, &ParseError{Line: 1, Column: name, Msg: "a column name must have 1 to 255 bytes and no comma nor line break"}
		case name == timeCol:
			return nil, &ParseError{Line: 1, Column: name, Msg: "the time column appears twice"}
		}
		if _, dup := index[name]; dup {
			return nil, &ParseError{Line: 1, Column: name, Msg: "duplicate column"}
		}
		index[name] = i + 1
		if f != FormatSKAB || o.Labels || !slices.Contains(SKABLabels, name) {
			all = append(all, name)
		}
	}
	cols := all
	if len(o.Columns) > 0 {
		cols = nil
		for _, name := range o.Columns {
			switch {
			case index[name] == 0:
				return nil, &ParseError{Line: 1, Column: name, Msg: fmt.Sprintf("no such column (the file has: %s)", strings.Join(header[1:], ", "))}
			case !slices.Contains(all, name):
				return nil, &ParseError{Line: 1, Column: name, Msg: "a label column: set labels to replay it"}
			case slices.Contains(cols, name):
				return nil, &ParseError{Line: 1, Column: name, Msg: "selected twice"}
			}
			cols = append(cols, name)
		}
	}
	if len(cols) == 0 {
		return nil, &ParseError{Line: 1, Msg: "no value columns"}
	}
	if len(cols) > MaxColumns {
		return nil, &ParseError{Line: 1, Msg: fmt.Sprintf("%d value columns, at most %d", len(cols), MaxColumns)}
	}
	from := make([]int, len(cols))
	for i, name := range cols {
		from[i] = index[name]
	}
	t := &Table{Columns: cols}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvErr(err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // a blank line (csv skips empty ones; this one had spaces)
		}
		if len(rec) != len(header) {
			return nil, &ParseError{Line: line, Msg: fmt.Sprintf("%d cells, want %d as in the header", len(rec), len(header))}
		}
		ts, err := parseTime(f, strings.TrimSpace(rec[0]))
		if err != nil {
			return nil, &ParseError{Line: line, Column: timeCol, Msg: err.Error()}
		}
		row := Row{TimeNS: ts, Values: make([]float64, len(cols))}
		for i, c := range from {
			cell := strings.TrimSpace(rec[c])
			if cell == "" {
				row.Values[i] = math.NaN()
				continue
			}
			v, err := strconv.ParseFloat(cell, 64)
			if err != nil && !isRange(err) {
				return nil, &ParseError{Line: line, Column: cols[i], Msg: fmt.Sprintf("want a number, got %q", cell)}
			}
			row.Values[i] = v // out of range: ±Inf, as the recorder would have written it
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

func isRange(err error) bool {
	var ne *strconv.NumError
	return errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange)
}

// dateTime is the layout of SKAB's and NAB's times; time.Parse also accepts a fraction of a
// second after the seconds.
const dateTime = "2006-01-02 15:04:05"

func parseTime(f Format, s string) (int64, error) {
	if f == FormatPerch {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("want an integer time in ns since the Unix epoch, got %q", s)
		}
		return ns, nil
	}
	t, err := time.Parse(dateTime, s)
	if err != nil {
		return 0, fmt.Errorf("want a time such as \"2020-03-09 10:14:33\", got %q", s)
	}
	if t.Year() < 1678 || t.Year() > 2261 {
		return 0, fmt.Errorf("%q is out of the range of ns since 1970 in an int64", s)
	}
	return t.UnixNano(), nil
}

func csvErr(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ParseError{Line: pe.Line, Msg: pe.Err.Error()}
	}
	return &ParseError{Msg: err.Error()}
}
