package runtime_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/replay"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
)

// datasets returns the shared datasets folder (../shared/datasets next to the repository), or
// skips the test when it is absent. The files are read where they are: SKAB is GPL-3.0 and is
// never copied into the repository.
func datasets(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "shared", "datasets"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no datasets at %s (../shared/datasets next to the repository): %v", dir, err)
	}
	return dir
}

// recording is a CSV file read independently of hal/replay: its column names and, per row,
// the time and the values as strconv.ParseFloat reads them.
type recording struct {
	cols  []string
	times []int64
	rows  [][]float64
}

func readRecording(t *testing.T, path string, sep string) *recording {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	rec := &recording{cols: strings.Split(sc.Text(), sep)[1:]}
	for line := 2; sc.Scan(); line++ {
		cells := strings.Split(sc.Text(), sep)
		if len(cells) != len(rec.cols)+1 {
			t.Fatalf("%s:%d: %d cells", path, line, len(cells))
		}
		ts, err := time.Parse("2006-01-02 15:04:05", cells[0])
		if err != nil {
			t.Fatalf("%s:%d: %v", path, line, err)
		}
		vals := make([]float64, len(rec.cols))
		for i, c := range cells[1:] {
			if vals[i], err = strconv.ParseFloat(c, 64); err != nil {
				t.Fatalf("%s:%d: %v", path, line, err)
			}
		}
		rec.times = append(rec.times, ts.UnixNano())
		rec.rows = append(rec.rows, vals)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rec
}

// replayCase is one recording played by one replay device and one driver module.
type replayCase struct {
	name   string // device, module and series
	file   string
	format string
	sep    string
}

// replayConfig is a config that plays the recordings at speed 0 through the replay driver, one
// device and driver per recording, polled every 20 ms for up to pollMax rows, into a recorder
// in dir.
func replayConfig(t *testing.T, dir string, cases []replayCase, pollMax int) *config.Config {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "build", "modules", "replay.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("%v: run `make modules` first", err)
	}
	var b strings.Builder
	// Recorded times are years old: keep them from retention by age.
	fmt.Fprintf(&b, "site: test\ndevice: test\nstore: {path: %q, max_age: 300000h}\nengine: {cache_dir: %q}\ndevices:\n",
		filepath.Join(dir, "perch.db"), filepath.Join(dir, "cache"))
	for i, c := range cases {
		fmt.Fprintf(&b, "  - {name: %s, backend: replay, port: replay%d, file: %q, format: %s, labels: true, speed: 0}\n", c.name, i, c.file, c.format)
	}
	// A generous deadline: on a loaded 2-core box a poll that overruns 100 ms would restart the
	// driver (which would then resume at the row after the last it handed on).
	b.WriteString("modules:\n")
	for i, c := range cases {
		fmt.Fprintf(&b, "  - name: %s\n    wasm: %q\n    poll: 20ms\n    poll_max_records: %d\n    deadline: 2s\n    grants: {uart: [{port: replay%d}], state: true}\n    config: {port: replay%d, series: %s}\n",
			c.name, root, pollMax, i, i, c.name)
	}
	cfg, err := config.Parse(filepath.Join(dir, "perch.yaml"), []byte(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	return cfg
}

// startReplay starts rt; stop cancels it and returns what Run returned.
func startReplay(rt *runtime.Runtime) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

// waitEOF waits until every driver has reported the end of its recording; between checks it
// calls each (if not nil).
func waitEOF(t *testing.T, rt *runtime.Runtime, n int, each func()) {
	t.Helper()
	db := rt.Store().DB()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if err := rt.Store().Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if count(t, db, `SELECT count(*) FROM events WHERE kind = 'replay.eof'`) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replays did not end in 2 minutes")
		}
		if each != nil {
			each()
		}
	}
}

// runReplay plays the recordings at speed 0 through the replay driver into the recorder, until
// every driver has reported the end of its recording, and checks the recorder's readings against
// each file row for row: the same count, order, times, field names and float64 values.
func runReplay(t *testing.T, cases []replayCase) {
	t.Helper()
	dir := t.TempDir()
	rt, err := runtime.New(context.Background(), replayConfig(t, dir, cases, 100), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	db := rt.Store().DB()
	stop := startReplay(rt)
	waitEOF(t, rt, len(cases), nil)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind IN ('module.fault', 'module.restart')`); n != 0 {
		t.Errorf("%d module faults or restarts", n)
		rows, err := db.Query(`SELECT module, kind, message FROM events WHERE kind IN ('module.fault', 'module.restart') LIMIT 8`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var module, kind, message string
			if err := rows.Scan(&module, &kind, &message); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s: %s", module, kind, message)
		}
		rows.Close()
	}
	for _, c := range cases {
		checkReplayed(t, db, dir, c)
	}
}

// checkReplayed checks the recorder's readings of c against its file row for row (the same
// count, order, times, field names and float64 values), the end event's row count, and that the
// recorder's own export reads back to the same rows.
func checkReplayed(t *testing.T, db *sql.DB, dir string, c replayCase) {
	t.Helper()
	want := readRecording(t, c.file, c.sep)
	if len(want.rows) < 100 {
		t.Fatalf("%s: only %d rows", c.file, len(want.rows))
	}
	rows, err := db.Query(`SELECT time_ns, series, fields FROM readings WHERE source = ? ORDER BY id`, c.name)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for ; rows.Next(); i++ {
		var ts int64
		var series, fields string
		if err := rows.Scan(&ts, &series, &fields); err != nil {
			t.Fatal(err)
		}
		if i >= len(want.rows) {
			continue
		}
		got := decodeFields(t, fields)
		at := fmt.Sprintf("%s row %d (line %d)", c.file, i, i+2)
		if ts != want.times[i] || series != c.name || len(got) != len(want.cols) {
			t.Fatalf("%s: time %d series %q fields %s; want time %d, series %q, %d fields", at, ts, series, fields, want.times[i], c.name, len(want.cols))
		}
		for j, col := range want.cols {
			if v, ok := got[col]; !ok || v != want.rows[i][j] {
				t.Fatalf("%s: %s = %v (%v), want %v", at, col, v, ok, want.rows[i][j])
			}
		}
	}
	rows.Close()
	if i != len(want.rows) {
		t.Errorf("%s: %d readings, want %d rows", c.file, i, len(want.rows))
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE kind = 'replay.eof' AND module = ?`, c.name); n != 1 {
		t.Errorf("%s: %d end events, want 1", c.name, n)
	}
	var eofRows float64
	if err := db.QueryRow(`SELECT json_extract(fields, '$.rows') FROM events WHERE kind = 'replay.eof' AND module = ?`, c.name).Scan(&eofRows); err != nil || int(eofRows) != len(want.rows) {
		t.Errorf("%s: the end event says %v rows (%v), want %d", c.name, eofRows, err, len(want.rows))
	}
	t.Logf("%s: %d rows of %d columns, row for row", c.file, i, len(want.cols))

	// The recorder's own export (what sqlite3 -csv -header gives for SELECT time_ns,
	// fields) reads back, in format perch, to the same rows.
	export := exportReadings(t, db, c.name, filepath.Join(dir, c.name+".csv"))
	tab, err := replay.ReadFile(export, replay.FormatPerch, replay.ReadOptions{Columns: want.cols})
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Rows) != len(want.rows) {
		t.Fatalf("%s: %d rows, want %d", export, len(tab.Rows), len(want.rows))
	}
	for i, r := range tab.Rows {
		if r.TimeNS != want.times[i] || !slices.Equal(r.Values, want.rows[i]) {
			t.Fatalf("%s row %d: %v, want %d %v", export, i, r, want.times[i], want.rows[i])
		}
	}
}

// exportReadings writes the readings of a source as `sqlite3 -csv -header` writes
// `SELECT time_ns, fields FROM readings WHERE source = ? ORDER BY id`, and returns the path.
func exportReadings(t *testing.T, db *sql.DB, source, path string) string {
	t.Helper()
	rows, err := db.Query(`SELECT time_ns, fields FROM readings WHERE source = ? ORDER BY id`, source)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := csv.NewWriter(f)
	w.UseCRLF = true // as sqlite3 does
	w.Write([]string{"time_ns", "fields"})
	for rows.Next() {
		var ts, fields string
		if err := rows.Scan(&ts, &fields); err != nil {
			t.Fatal(err)
		}
		w.Write([]string{ts, fields})
	}
	w.Flush()
	if err := errors.Join(rows.Err(), w.Error(), f.Close()); err != nil {
		t.Fatal(err)
	}
	return path
}

// decodeFields reads a readings.fields JSON object with exact float64s.
func decodeFields(t *testing.T, s string) map[string]float64 {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]json.Number
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("fields %s: %v", s, err)
	}
	out := map[string]float64{}
	for k, n := range m {
		v, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			t.Fatalf("fields %s: %v", s, err)
		}
		out[k] = v
	}
	return out
}

// TestIntegrationReplaySKAB replays every SKAB file there is (the experiments with their labels,
// and the anomaly-free run) at speed 0, each on its own port and driver, through the replay driver: the recorder holds each file's values row for row.
func TestIntegrationReplaySKAB(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	files, err := filepath.Glob(filepath.Join(datasets(t), "skab", "data", "*", "*.csv"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no SKAB files (%v)", err)
	}
	var cases []replayCase
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(filepath.Dir(f))+"-"+filepath.Base(f), ".csv")
		cases = append(cases, replayCase{name, f, "skab", ";"})
	}
	runReplay(t, cases)
}

// TestIntegrationReplayNAB replays NAB series at speed 0 through the replay driver: the
// recorder holds each file's values row for row.
func TestIntegrationReplayNAB(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	nab := filepath.Join(datasets(t), "nab", "data")
	runReplay(t, []replayCase{
		{"ambient-temperature", filepath.Join(nab, "realKnownCause", "ambient_temperature_system_failure.csv"), "nab", ","},
		{"speed-6005", filepath.Join(nab, "realTraffic", "speed_6005.csv"), "nab", ","},
	})
}

// writeNAB writes a NAB-layout recording of n rows a second apart whose values need all 17
// digits, so that 10 rows are far less than the 4 KiB the driver reads at a time.
func writeNAB(t *testing.T, path string, n int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("timestamp,value\n")
	t0 := time.Date(2014, 4, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		v := float64(i) + 1.0/float64(i+3)
		fmt.Fprintf(&b, "%s,%s\n", t0.Add(time.Duration(i)*time.Second).Format("2006-01-02 15:04:05"), strconv.FormatFloat(v, 'g', -1, 64))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationReplayRestart restarts the replay driver again and again in the middle of a
// replay, with hot swaps of its binary (each a new instance, as a restart after a fault is):
// the driver reads 4 KiB at a time and hands on at most 10 rows per poll, so each instance
// dies with rows read and not handled, and yet the recorder holds every row exactly once, in
// order, because each new instance resumes at its saved position.
func TestIntegrationReplayRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dir := t.TempDir()
	c := replayCase{"restarted", filepath.Join(dir, "series.csv"), "nab", ","}
	writeNAB(t, c.file, 3000)
	bin, man := moduleFiles(t, "replay")
	rt, err := runtime.New(context.Background(), replayConfig(t, dir, []replayCase{c}, 10), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	db := rt.Store().DB()
	stop := startReplay(rt)
	swaps, midway := 0, 0
	waitEOF(t, rt, 1, func() {
		n := count(t, db, `SELECT count(*) FROM readings WHERE source = ?`, c.name)
		rep, err := rt.Swap(context.Background(), c.name, bin, man)
		if err != nil || !rep.Started {
			t.Fatalf("swap: %+v, %v", rep, err)
		}
		swaps++
		if n > 0 && n < 3000 {
			midway++
		}
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if midway < 3 {
		t.Fatalf("only %d of %d restarts in the middle of the replay", midway, swaps)
	}
	t.Logf("%d restarts, %d in the middle of the replay", swaps, midway)
	checkReplayed(t, db, dir, c)
}

// TestIntegrationReplayResume stops the runtime in the middle of a replay and starts a new one
// on the same recorder: the driver's position is in the recorder's module_state table, so the
// new runtime's driver resumes where the old one stopped instead of starting over, and the
// recorder holds every row exactly once, in order.
func TestIntegrationReplayResume(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dir := t.TempDir()
	c := replayCase{"resumed", filepath.Join(dir, "series.csv"), "nab", ","}
	writeNAB(t, c.file, 3000)
	cfg := replayConfig(t, dir, []replayCase{c}, 10)
	first, err := runtime.New(context.Background(), cfg, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := startReplay(first)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if err := first.Store().Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if count(t, first.Store().DB(), `SELECT count(*) FROM readings WHERE source = ?`, c.name) >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no 300 rows in a minute")
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	before := count(t, first.Store().DB(), `SELECT count(*) FROM readings WHERE source = ?`, c.name)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if before >= 3000 {
		t.Fatalf("the first runtime read all %d rows", before)
	}

	second, err := runtime.New(context.Background(), cfg, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	stop = startReplay(second)
	waitEOF(t, second, 1, nil)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("the first runtime recorded %d rows, the second the rest", before)
	checkReplayed(t, second.Store().DB(), dir, c)
}
