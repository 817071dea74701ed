package replay

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// readFields reads the rest of a recorder export (time_ns,fields; see the package doc).
func readFields(cr *csv.Reader, o ReadOptions) (*Table, error) {
	type row struct {
		line   int
		timeNS int64
		names  []string
		values []float64
	}
	var rows []row
	index := map[string]int{} // name -> column in the file's order
	var names []string
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
			continue
		}
		if len(rec) != 2 {
			return nil, &ParseError{Line: line, Msg: fmt.Sprintf("%d cells, want 2 as in the header", len(rec))}
		}
		ts, err := parseTime(FormatPerch, strings.TrimSpace(rec[0]))
		if err != nil {
			return nil, &ParseError{Line: line, Column: "time_ns", Msg: err.Error()}
		}
		r := row{line: line, timeNS: ts}
		if r.names, r.values, err = decodeObject(rec[1]); err != nil {
			return nil, &ParseError{Line: line, Column: "fields", Msg: err.Error()}
		}
		for _, n := range r.names {
			if _, ok := index[n]; !ok {
				if strings.ContainsAny(n, ",\r\n") || n == "" || len(n) > 255 {
					return nil, &ParseError{Line: line, Column: "fields", Msg: fmt.Sprintf("field %q: a column name must have 1 to 255 bytes and no comma nor line break", n)}
				}
				index[n] = len(names)
				names = append(names, n)
			}
		}
		rows = append(rows, r)
	}
	cols := names
	if len(o.Columns) > 0 {
		cols = nil
		for _, n := range o.Columns {
			if _, ok := index[n]; !ok {
				return nil, &ParseError{Line: 1, Column: n, Msg: fmt.Sprintf("no such field in the file (it has: %s)", strings.Join(names, ", "))}
			}
			if slices.Contains(cols, n) {
				return nil, &ParseError{Line: 1, Column: n, Msg: "selected twice"}
			}
			cols = append(cols, n)
		}
	}
	switch {
	case len(cols) == 0:
		return nil, &ParseError{Line: 1, Msg: "no value columns: no row has a field"}
	case len(cols) > MaxColumns:
		return nil, &ParseError{Line: 1, Msg: fmt.Sprintf("%d value columns, at most %d", len(cols), MaxColumns)}
	}
	at := map[string]int{}
	for i, n := range cols {
		at[n] = i
	}
	t := &Table{Columns: cols, Rows: make([]Row, len(rows))}
	for i, r := range rows {
		vals := make([]float64, len(cols))
		for j := range vals {
			vals[j] = math.NaN()
		}
		for k, n := range r.names {
			if j, ok := at[n]; ok {
				vals[j] = r.values[k]
			}
		}
		t.Rows[i] = Row{TimeNS: r.timeNS, Values: vals}
	}
	return t, nil
}

// decodeObject decodes a JSON object of numbers (or nulls, NaN), keeping the names' order. A
// repeated name keeps its first value, as the recorder does.
func decodeObject(s string) (names []string, values []float64, err error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	bad := func(what string) error { return fmt.Errorf("want a JSON object of numbers, %s", what) }
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, nil, bad(fmt.Sprintf("got %q", cut(s)))
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, bad(err.Error())
		}
		name := tok.(string) // json.Decoder only gives strings as keys
		tok, err = dec.Token()
		if err != nil {
			return nil, nil, bad(err.Error())
		}
		var v float64
		switch x := tok.(type) {
		case nil:
			v = math.NaN()
		case json.Number:
			if v, err = strconv.ParseFloat(string(x), 64); err != nil && !isRange(err) {
				return nil, nil, bad(fmt.Sprintf("field %q: %v", name, err))
			}
		default:
			if d, ok := x.(json.Delim); ok {
				return nil, nil, bad(fmt.Sprintf("field %q is an %s", name, map[json.Delim]string{'{': "object", '[': "array"}[d]))
			}
			return nil, nil, bad(fmt.Sprintf("field %q is %v", name, x))
		}
		if !slices.Contains(names, name) {
			names, values = append(names, name), append(values, v)
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, nil, bad("unterminated")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, bad("data after the object")
	}
	return names, values, nil
}

func cut(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
