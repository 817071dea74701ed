package scoring

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TimeLayout is the timestamp layout of SKAB and NAB data files ("YYYY-MM-DD HH:MM:SS"), read as UTC.
const TimeLayout = "2006-01-02 15:04:05"

// windowTimeLayout is the layout of NAB window bounds ("YYYY-MM-DD HH:MM:SS.ffffff").
const windowTimeLayout = "2006-01-02 15:04:05.000000"

// DatasetsEnv names the environment variable that overrides the datasets folder.
const DatasetsEnv = "PERCH_DATASETS"

// DatasetsDir returns the folder holding the skab/ and nab/ datasets: $PERCH_DATASETS if set, else
// def (callers pass the path relative to their package, e.g. "../../../shared/datasets").
func DatasetsDir(def string) string {
	if d := os.Getenv(DatasetsEnv); d != "" {
		return d
	}
	return def
}

// Table is one parsed time-series file. Rows are in file order; times are UTC and never decrease,
// but may repeat (some NAB files repeat a timestamp where daylight saving time began).
//
// Values is row-major: Values[i][c] is column Columns[c] at row i. For SKAB files Anomaly and
// Changepoint hold the per-row labels (true = 1.0); for NAB files they are nil.
type Table struct {
	Path        string
	Times       []time.Time
	Columns     []string
	Values      [][]float64
	Anomaly     []bool
	Changepoint []bool
}

// Len returns the number of rows.
func (t *Table) Len() int { return len(t.Times) }

// Column returns a copy of the named value column, or an error naming the file if it is absent.
func (t *Table) Column(name string) ([]float64, error) {
	for c, n := range t.Columns {
		if n == name {
			out := make([]float64, len(t.Values))
			for i, row := range t.Values {
				out[i] = row[c]
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("scoring: %s: no column %q", t.Path, name)
}

// ReadSKAB reads a SKAB experiment file: ';'-separated, header starting with "datetime", then the
// sensor columns, then (for labelled files) "anomaly" and "changepoint" written 0.0/1.0. The
// anomaly-free file has no label columns; its Anomaly and Changepoint are then nil.
func ReadSKAB(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	defer f.Close()
	return parseTable(f, path, ';', true)
}

// ReadNAB reads a NAB data file: header "timestamp,value", comma-separated.
func ReadNAB(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	defer f.Close()
	t, err := parseTable(f, path, ',', false)
	if err != nil {
		return nil, err
	}
	if len(t.Columns) != 1 || t.Columns[0] != "value" {
		return nil, fmt.Errorf("scoring: %s: header must be \"timestamp,value\", got columns %q", path, t.Columns)
	}
	return t, nil
}

// parseTable reads a delimited file whose first column is a timestamp. With labels, trailing
// "anomaly"/"changepoint" columns become the label slices.
func parseTable(r io.Reader, path string, sep byte, labels bool) (*Table, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("scoring: %s: %w", path, err)
		}
		return nil, fmt.Errorf("scoring: %s: empty file", path)
	}
	header := strings.Split(strings.TrimSuffix(sc.Text(), "\r"), string(sep))
	if len(header) < 2 {
		return nil, fmt.Errorf("scoring: %s:1: header has %d columns, want a time column and at least one value", path, len(header))
	}
	t := &Table{Path: path}
	anomCol, cpCol := -1, -1
	var valueCols []int
	for c, h := range header[1:] {
		switch {
		case labels && h == "anomaly":
			anomCol = c + 1
		case labels && h == "changepoint":
			cpCol = c + 1
		default:
			t.Columns = append(t.Columns, h)
			valueCols = append(valueCols, c+1)
		}
	}
	if (anomCol < 0) != (cpCol < 0) {
		return nil, fmt.Errorf("scoring: %s:1: need both \"anomaly\" and \"changepoint\" columns or neither", path)
	}
	line := 1
	for sc.Scan() {
		line++
		text := strings.TrimSuffix(sc.Text(), "\r")
		if text == "" {
			continue
		}
		cells := strings.Split(text, string(sep))
		if len(cells) != len(header) {
			return nil, fmt.Errorf("scoring: %s:%d: %d fields, header has %d", path, line, len(cells), len(header))
		}
		ts, err := time.Parse(TimeLayout, cells[0])
		if err != nil {
			return nil, fmt.Errorf("scoring: %s:%d: %s: %w", path, line, header[0], err)
		}
		row := make([]float64, len(valueCols))
		for k, c := range valueCols {
			v, err := strconv.ParseFloat(cells[c], 64)
			if err != nil {
				return nil, fmt.Errorf("scoring: %s:%d: column %q: %w", path, line, header[c], err)
			}
			row[k] = v
		}
		if anomCol >= 0 {
			a, err := parseLabel(cells[anomCol])
			if err != nil {
				return nil, fmt.Errorf("scoring: %s:%d: column \"anomaly\": %w", path, line, err)
			}
			cp, err := parseLabel(cells[cpCol])
			if err != nil {
				return nil, fmt.Errorf("scoring: %s:%d: column \"changepoint\": %w", path, line, err)
			}
			t.Anomaly = append(t.Anomaly, a)
			t.Changepoint = append(t.Changepoint, cp)
		}
		if n := len(t.Times); n > 0 && ts.Before(t.Times[n-1]) {
			return nil, fmt.Errorf("scoring: %s:%d: timestamp %s is before the previous row's", path, line, cells[0])
		}
		t.Times = append(t.Times, ts)
		t.Values = append(t.Values, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scoring: %s: %w", path, err)
	}
	return t, nil
}

// parseLabel reads a 0/1 label written as an integer or a float ("0", "1.0").
func parseLabel(s string) (bool, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return false, err
	}
	switch v {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, fmt.Errorf("label %q is neither 0 nor 1", s)
}

// Window is a NAB anomaly window: both ends are timestamps of rows of the data file, inclusive.
type Window struct {
	Start, End time.Time
}

// ReadNABWindows reads a NAB windows file (labels/combined_windows.json): a map from the data file's
// path relative to data/ ("realKnownCause/nyc_taxi.csv") to its windows, in time order.
func ReadNABWindows(path string) (map[string][]Window, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	var raw map[string][][]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("scoring: %s: %w", path, err)
	}
	out := make(map[string][]Window, len(raw))
	for file, pairs := range raw {
		ws := make([]Window, 0, len(pairs))
		for k, p := range pairs {
			if len(p) != 2 {
				return nil, fmt.Errorf("scoring: %s: %s window %d has %d bounds, want 2", path, file, k, len(p))
			}
			var w Window
			for j, s := range p {
				ts, err := parseWindowTime(s)
				if err != nil {
					return nil, fmt.Errorf("scoring: %s: %s window %d: %w", path, file, k, err)
				}
				if j == 0 {
					w.Start = ts
				} else {
					w.End = ts
				}
			}
			if w.End.Before(w.Start) {
				return nil, fmt.Errorf("scoring: %s: %s window %d ends before it starts", path, file, k)
			}
			if k > 0 && !w.Start.After(ws[k-1].End) {
				return nil, fmt.Errorf("scoring: %s: %s window %d overlaps or precedes window %d", path, file, k, k-1)
			}
			ws = append(ws, w)
		}
		out[file] = ws
	}
	return out, nil
}

func parseWindowTime(s string) (time.Time, error) {
	if ts, err := time.Parse(windowTimeLayout, s); err == nil {
		return ts, nil
	}
	return time.Parse(TimeLayout, s)
}

// ReadNABProfiles reads NAB's config/profiles.json into profiles keyed by name ("standard",
// "reward_low_FP_rate", "reward_low_FN_rate").
func ReadNABProfiles(path string) (map[string]Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	var raw map[string]struct {
		CostMatrix *struct {
			TP *float64 `json:"tpWeight"`
			FP *float64 `json:"fpWeight"`
			FN *float64 `json:"fnWeight"`
			TN *float64 `json:"tnWeight"`
		} `json:"CostMatrix"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("scoring: %s: %w", path, err)
	}
	out := make(map[string]Profile, len(raw))
	var errs []error
	for name, p := range raw {
		cm := p.CostMatrix
		if cm == nil || cm.TP == nil || cm.FP == nil || cm.FN == nil {
			errs = append(errs, fmt.Errorf("scoring: %s: profile %q needs CostMatrix tpWeight, fpWeight and fnWeight", path, name))
			continue
		}
		out[name] = Profile{Name: name, TP: *cm.TP, FP: *cm.FP, FN: *cm.FN}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// NABDataPath returns the data-file key used in the windows file ("category/file.csv") for a path
// under root/data/.
func NABDataPath(root, path string) (string, error) {
	rel, err := filepath.Rel(filepath.Join(root, "data"), path)
	if err != nil {
		return "", fmt.Errorf("scoring: %w", err)
	}
	return filepath.ToSlash(rel), nil
}
