package replay_test

import (
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/replay"
)

func ns(s string) int64 {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t.UnixNano()
}

var nan = math.NaN()

// same reports whether two tables are equal, NaN equal to NaN.
func same(a, b *replay.Table) bool {
	if !reflect.DeepEqual(a.Columns, b.Columns) || len(a.Rows) != len(b.Rows) {
		return false
	}
	for i := range a.Rows {
		x, y := a.Rows[i], b.Rows[i]
		if x.TimeNS != y.TimeNS || len(x.Values) != len(y.Values) {
			return false
		}
		for j := range x.Values {
			if math.Float64bits(x.Values[j]) != math.Float64bits(y.Values[j]) && !(math.IsNaN(x.Values[j]) && math.IsNaN(y.Values[j])) {
				return false
			}
		}
	}
	return true
}

func TestReadFile(t *testing.T) {
	skabRows := func(labels bool) []replay.Row {
		rows := []replay.Row{
			{TimeNS: ns("2021-01-02 03:04:05"), Values: []float64{0.0265878, 1.3302, 0, 0}},
			{TimeNS: ns("2021-01-02 03:04:06"), Values: []float64{-1.5e-07, nan, 1, 1}},
			{TimeNS: ns("2021-01-02 03:04:08") + 5e8, Values: []float64{12, 7, 1, 0}},
		}
		if !labels {
			for i := range rows {
				rows[i].Values = rows[i].Values[:2]
			}
		}
		return rows
	}
	tests := []struct {
		name   string
		file   string
		format replay.Format
		opts   replay.ReadOptions
		want   *replay.Table
	}{
		{"skab without labels", "skab.csv", replay.FormatSKAB, replay.ReadOptions{},
			&replay.Table{Columns: []string{"Pump RMS", "Current"}, Rows: skabRows(false)}},
		{"skab with labels", "skab.csv", replay.FormatSKAB, replay.ReadOptions{Labels: true},
			&replay.Table{Columns: []string{"Pump RMS", "Current", "anomaly", "changepoint"}, Rows: skabRows(true)}},
		{"skab columns reordered", "skab.csv", replay.FormatSKAB, replay.ReadOptions{Columns: []string{"anomaly", "Pump RMS"}, Labels: true},
			&replay.Table{Columns: []string{"anomaly", "Pump RMS"}, Rows: []replay.Row{
				{TimeNS: ns("2021-01-02 03:04:05"), Values: []float64{0, 0.0265878}},
				{TimeNS: ns("2021-01-02 03:04:06"), Values: []float64{1, -1.5e-07}},
				{TimeNS: ns("2021-01-02 03:04:08") + 5e8, Values: []float64{1, 12}},
			}}},
		{"nab crlf", "nab.csv", replay.FormatNAB, replay.ReadOptions{},
			&replay.Table{Columns: []string{"value"}, Rows: []replay.Row{
				{TimeNS: ns("2014-04-01 00:00:00"), Values: []float64{18.324918539}},
				{TimeNS: ns("2014-04-01 00:05:00"), Values: []float64{21.970327}},
			}}},
		{"perch", "perch.csv", replay.FormatPerch, replay.ReadOptions{Columns: []string{"humidity_pct", "temperature_c"}},
			&replay.Table{Columns: []string{"humidity_pct", "temperature_c"}, Rows: []replay.Row{
				{TimeNS: 1700000000000000000, Values: []float64{40, 21.5}},
				{TimeNS: 1700000000500000000, Values: []float64{math.Inf(1), nan}},
				{TimeNS: 1700000001000000000, Values: []float64{1e308, 0.1}},
			}}},
		{"recorder export", "export.csv", replay.FormatPerch, replay.ReadOptions{},
			&replay.Table{Columns: []string{"temperature_c", "humidity_pct", "pressure_hpa"}, Rows: []replay.Row{
				{TimeNS: 1700000000000000000, Values: []float64{21.5, 40, nan}},
				{TimeNS: 1700000001000000000, Values: []float64{math.Inf(1), nan, 1013.25}},
				{TimeNS: 1700000002000000000, Values: []float64{nan, nan, nan}},
			}}},
		{"recorder export, columns", "export.csv", replay.FormatPerch, replay.ReadOptions{Columns: []string{"pressure_hpa"}},
			&replay.Table{Columns: []string{"pressure_hpa"}, Rows: []replay.Row{
				{TimeNS: 1700000000000000000, Values: []float64{nan}},
				{TimeNS: 1700000001000000000, Values: []float64{1013.25}},
				{TimeNS: 1700000002000000000, Values: []float64{nan}},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := replay.ReadFile(filepath.Join("testdata", tt.file), tt.format, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !same(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name   string
		format replay.Format
		in     string
		opts   replay.ReadOptions
		want   string
	}{
		{"unknown format", "csv", "a\n", replay.ReadOptions{}, `unknown format "csv"`},
		{"empty", replay.FormatNAB, "", replay.ReadOptions{}, `1: empty file`},
		{"wrong time column", replay.FormatSKAB, "timestamp;a\n", replay.ReadOptions{}, `1: the first column of a skab file is "datetime", got "timestamp"`},
		{"nab with semicolons", replay.FormatNAB, "timestamp;value\n", replay.ReadOptions{}, `got "timestamp;value"`},
		{"no value columns", replay.FormatNAB, "timestamp\n", replay.ReadOptions{}, `1: no value columns`},
		{"unnamed column", replay.FormatNAB, "timestamp,,b\n", replay.ReadOptions{}, `1: column 2 has no name`},
		{"duplicate column", replay.FormatNAB, "timestamp,a,a\n", replay.ReadOptions{}, `1: column "a": duplicate column`},
		{"comma in a name", replay.FormatSKAB, "datetime;a,b\n", replay.ReadOptions{}, `1: column "a,b": a column name must have`},
		{"unknown column", replay.FormatNAB, "timestamp,a,b\n", replay.ReadOptions{Columns: []string{"c"}}, `1: column "c": no such column (the file has: a, b)`},
		{"column twice", replay.FormatNAB, "timestamp,a,b\n", replay.ReadOptions{Columns: []string{"a", "a"}}, `1: column "a": selected twice`},
		{"label without labels", replay.FormatSKAB, "datetime;a;anomaly\n", replay.ReadOptions{Columns: []string{"anomaly"}}, `column "anomaly": a label column: set labels`},
		{"only labels", replay.FormatSKAB, "datetime;anomaly\n", replay.ReadOptions{}, `1: no value columns`},
		{"short row", replay.FormatNAB, "timestamp,a,b\n2020-01-01 00:00:00,1\n", replay.ReadOptions{}, `2: 2 cells, want 3 as in the header`},
		{"bad number", replay.FormatNAB, "timestamp,a\n2020-01-01 00:00:00,1\n2020-01-01 00:00:01,x1\n", replay.ReadOptions{}, `3: column "a": want a number, got "x1"`},
		{"bad time", replay.FormatSKAB, "datetime;a\n2020-01-01T00:00:00;1\n", replay.ReadOptions{}, `2: column "datetime": want a time such as`},
		{"time out of range", replay.FormatNAB, "timestamp,a\n2300-01-01 00:00:00,1\n", replay.ReadOptions{}, `out of the range`},
		{"bad ns", replay.FormatPerch, "time_ns,a\n1.5,1\n", replay.ReadOptions{}, `2: column "time_ns": want an integer time`},
		{"export: not an object", replay.FormatPerch, "time_ns,fields\n1,[1]\n", replay.ReadOptions{}, `2: column "fields": want a JSON object of numbers, got "[1]"`},
		{"export: a string", replay.FormatPerch, "time_ns,fields\n1,\"{\"\"a\"\":\"\"x\"\"}\"\n", replay.ReadOptions{}, `2: column "fields": want a JSON object of numbers, field "a" is x`},
		{"export: nested", replay.FormatPerch, "time_ns,fields\n1,\"{\"\"a\"\":{}}\"\n", replay.ReadOptions{}, `field "a" is an object`},
		{"export: trailing", replay.FormatPerch, "time_ns,fields\n1,{}x\n", replay.ReadOptions{}, `data after the object`},
		{"export: no fields", replay.FormatPerch, "time_ns,fields\n1,{}\n", replay.ReadOptions{}, `no value columns: no row has a field`},
		{"export: unknown column", replay.FormatPerch, "time_ns,fields\n1,\"{\"\"a\"\":1}\"\n", replay.ReadOptions{Columns: []string{"b"}}, `column "b": no such field in the file (it has: a)`},
		{"export: comma in a name", replay.FormatPerch, "time_ns,fields\n1,\"{\"\"a,b\"\":1}\"\n", replay.ReadOptions{}, `field "a,b": a column name must have`},
		{"bad quote", replay.FormatPerch, "time_ns,a\n1,\"1\n", replay.ReadOptions{}, `extraneous or missing " in quoted-field`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := replay.Read(strings.NewReader(tt.in), tt.format, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, replay.ErrFormat) {
				t.Errorf("%v does not match ErrFormat", err)
			}
		})
	}
}

func TestReadFileNamesFile(t *testing.T) {
	_, err := replay.ReadFile(filepath.Join("testdata", "bad_name.csv"), replay.FormatPerch, replay.ReadOptions{})
	want := `testdata/bad_name.csv:1: column "humidity, %RH": a column name must have 1 to 255 bytes and no comma nor line break`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if _, err := replay.ReadFile(filepath.Join("testdata", "missing.csv"), replay.FormatPerch, replay.ReadOptions{}); err == nil {
		t.Error("a missing file read")
	}
	if _, err := replay.ReadFile("/dev/zero", replay.FormatPerch, replay.ReadOptions{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("/dev/zero: %v", err)
	}
}
