package scoring

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadSKAB(t *testing.T) {
	p := writeTemp(t, "x.csv", "datetime;A;B;anomaly;changepoint\n"+
		"2020-03-09 10:14:33;0.5;-1e-3;0.0;0.0\r\n"+
		"2020-03-09 10:14:34;1;2;1.0;1.0\n")
	tab, err := ReadSKAB(p)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 2 || strings.Join(tab.Columns, ",") != "A,B" {
		t.Fatalf("table %+v", tab)
	}
	if want := time.Date(2020, 3, 9, 10, 14, 34, 0, time.UTC); !tab.Times[1].Equal(want) {
		t.Errorf("time %v, want %v", tab.Times[1], want)
	}
	if tab.Values[0][1] != -1e-3 || tab.Values[1][0] != 1 {
		t.Errorf("values %v", tab.Values)
	}
	if tab.Anomaly[0] || !tab.Anomaly[1] || tab.Changepoint[0] || !tab.Changepoint[1] {
		t.Errorf("labels %v %v", tab.Anomaly, tab.Changepoint)
	}
	b, err := tab.Column("B")
	if err != nil || b[1] != 2 {
		t.Errorf("Column(B) = %v, %v", b, err)
	}
	if _, err := tab.Column("C"); err == nil {
		t.Error("Column(C) of a table without C succeeded")
	}

	// Without label columns (the anomaly-free file) the labels are nil.
	p = writeTemp(t, "free.csv", "datetime;A\n2020-03-09 10:14:33;0.5\n")
	tab, err = ReadSKAB(p)
	if err != nil || tab.Anomaly != nil || tab.Len() != 1 {
		t.Errorf("anomaly-free: %+v, %v", tab, err)
	}
}

func TestReadErrors(t *testing.T) {
	cases := []struct {
		name, content, want string
		nab                 bool
	}{
		{"empty", "", "empty file", false},
		{"fields", "datetime;A;anomaly;changepoint\n2020-03-09 10:14:33;1;0\n", "bad.csv:2: 3 fields", false},
		{"time", "datetime;A\n2020-03-09T10:14:33;1\n", "bad.csv:2: datetime", false},
		{"value", "datetime;A\n2020-03-09 10:14:33;x\n", "bad.csv:2: column \"A\"", false},
		{"label", "datetime;A;anomaly;changepoint\n2020-03-09 10:14:33;1;2.0;0\n", "bad.csv:2: column \"anomaly\"", false},
		{"one label", "datetime;A;anomaly\n2020-03-09 10:14:33;1;0\n", "both", false},
		{"backwards", "datetime;A\n2020-03-09 10:14:33;1\n2020-03-09 10:14:32;1\n", "bad.csv:3: timestamp", false},
		{"nab header", "timestamp,v\n2020-03-09 10:14:33,1\n", "timestamp,value", true},
		{"nab value", "timestamp,value\n2020-03-09 10:14:33,\n", "bad.csv:2: column \"value\"", true},
	}
	for _, c := range cases {
		p := writeTemp(t, "bad.csv", c.content)
		var err error
		if c.nab {
			_, err = ReadNAB(p)
		} else {
			_, err = ReadSKAB(p)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if _, err := ReadSKAB(filepath.Join(t.TempDir(), "missing.csv")); err == nil {
		t.Error("missing file read")
	}
}

func TestReadNABWindowsAndProfiles(t *testing.T) {
	p := writeTemp(t, "w.json", `{"a/x.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]], "a/y.csv": []}`)
	ws, err := ReadNABWindows(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws["a/x.csv"]) != 1 || len(ws["a/y.csv"]) != 0 {
		t.Fatalf("windows %v", ws)
	}
	if want := time.Date(2014, 4, 11, 16, 45, 0, 0, time.UTC); !ws["a/x.csv"][0].End.Equal(want) {
		t.Errorf("end %v, want %v", ws["a/x.csv"][0].End, want)
	}
	for _, bad := range []string{
		`{"a.csv": [["2014-04-10 07:15:00.000000"]]}`,
		`{"a.csv": [["2014-04-10 07:15:00.000000", "2014-04-09 07:15:00.000000"]]}`,
		`{"a.csv": [["2014-04-10 07:15:00", "2014-04-11 07:15:00"], ["2014-04-11 07:15:00", "2014-04-12 07:15:00"]]}`,
		`{"a.csv": [["yesterday", "2014-04-11 07:15:00"]]}`,
	} {
		if _, err := ReadNABWindows(writeTemp(t, "w.json", bad)); err == nil || !strings.Contains(err.Error(), "a.csv") {
			t.Errorf("%s: err = %v, want one naming a.csv", bad, err)
		}
	}
	pp := writeTemp(t, "p.json", `{"x": {"CostMatrix": {"tpWeight": 1, "fpWeight": 0.5, "fnWeight": 2, "tnWeight": 1}}}`)
	profs, err := ReadNABProfiles(pp)
	if err != nil || profs["x"] != (Profile{Name: "x", TP: 1, FP: 0.5, FN: 2}) {
		t.Errorf("profiles %v, %v", profs, err)
	}
	if _, err := ReadNABProfiles(writeTemp(t, "p.json", `{"x": {"CostMatrix": {"tpWeight": 1}}}`)); err == nil {
		t.Error("profile without fpWeight accepted")
	}
}

func TestDatasetsDir(t *testing.T) {
	t.Setenv(DatasetsEnv, "")
	if got := DatasetsDir("def"); got != "def" {
		t.Errorf("DatasetsDir = %q, want def", got)
	}
	t.Setenv(DatasetsEnv, "/x")
	if got := DatasetsDir("def"); got != "/x" {
		t.Errorf("DatasetsDir = %q, want /x", got)
	}
}

// TestReadDatasets reads every SKAB and NAB data file in the datasets folder.
func TestReadDatasets(t *testing.T) {
	skab := datasets(t, "skab")
	nab := datasets(t, "nab")
	paths, _ := filepath.Glob(filepath.Join(skab, "data", "*", "*.csv"))
	rows, cps, anomalous := 0, 0, 0
	for _, p := range paths {
		tab, err := ReadSKAB(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(tab.Columns) != 8 {
			t.Errorf("%s: %d sensor columns, want 8", p, len(tab.Columns))
		}
		if strings.Contains(p, "anomaly-free") {
			continue
		}
		rows += tab.Len()
		for i := range tab.Anomaly {
			if tab.Anomaly[i] {
				anomalous++
			}
			if tab.Changepoint[i] {
				cps++
			}
		}
	}
	// The dev split's sizes as its README states them.
	if rows != 25078 || anomalous != 8817 || cps != 86 {
		t.Errorf("SKAB dev: %d rows, %d anomalous, %d changepoints; README says 25078, 8817, 86", rows, anomalous, cps)
	}
	windows, err := ReadNABWindows(filepath.Join(nab, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	paths, _ = filepath.Glob(filepath.Join(nab, "data", "*", "*.csv"))
	if len(paths) != 55 || len(windows) != 55 {
		t.Errorf("%d NAB data files, %d in the windows file; want 55", len(paths), len(windows))
	}
	for _, p := range paths {
		tab, err := ReadNAB(p)
		if err != nil {
			t.Fatal(err)
		}
		key, err := NABDataPath(nab, p)
		if err != nil {
			t.Fatal(err)
		}
		ws, ok := windows[key]
		if !ok {
			t.Errorf("%s: no windows entry", key)
		}
		// Every window must be scorable on the data file.
		if _, err := NAB([]NABFile{{Name: key, Times: tab.Times, Scores: make([]float64, tab.Len()), Windows: ws}}, NABStandard, 0.5); err != nil {
			t.Error(err)
		}
	}
}

func FuzzReadSKAB(f *testing.F) {
	f.Add("datetime;A;anomaly;changepoint\n2020-03-09 10:14:33;1;0.0;1.0\n")
	f.Add("datetime;A\n2020-03-09 10:14:33;1\n2020-03-09 10:14:33;2\n")
	f.Fuzz(func(t *testing.T, s string) {
		tab, err := parseTable(strings.NewReader(s), "fuzz", ';', true)
		if err != nil {
			return
		}
		if len(tab.Values) != len(tab.Times) || (tab.Anomaly != nil && len(tab.Anomaly) != len(tab.Times)) {
			t.Fatalf("inconsistent table %+v", tab)
		}
		for i := 1; i < len(tab.Times); i++ {
			if tab.Times[i].Before(tab.Times[i-1]) {
				t.Fatalf("times decrease at %d", i)
			}
		}
	})
}
