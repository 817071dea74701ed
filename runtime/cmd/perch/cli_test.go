package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/perchtest"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// shared is a folder that lives as long as the test binary: the perch binary built once for the
// tests that run it as a process, and the compilation cache every pipeline of this package
// shares (wazero's file cache writes by rename, so processes may share it).
var shared string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "perch-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	shared = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var built struct {
	once sync.Once
	path string
	err  error
}

// perchBinary builds this package into the shared folder, once per test binary, and returns
// the binary's path. It skips the test if there is no go command.
func perchBinary(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build perch:", err)
	}
	built.once.Do(func() {
		path := filepath.Join(shared, "perch")
		out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		built.path = path
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// pipeline is a test pipeline like runtime/testdata/pipeline.yaml: a simulated BME280 at a
// constant 22 °C plus a 12 °C spike, the bme280 driver, a window filter and a threshold rule
// ("too hot" above 30 °C).
type pipeline struct {
	poll    string // the driver's poll interval
	window  string // the window filter's length
	spikeAt string // when the spike starts, from the start of the run; it lasts a minute
	holdOff string // the rule's hold-off
}

// write writes the pipeline's config into dir, with absolute module paths, the recorder at
// dir/perch.db and the shared compilation cache, and returns the config's path.
func (p pipeline) write(t *testing.T, dir string) string {
	t.Helper()
	cfg := fmt.Sprintf(`site: test
device: sim-01
store:
  path: %q
engine:
  cache_dir: %q
devices:
  - name: env0
    backend: sim
    type: bme280
    bus: 1
    address: 0x76
    signals:
      temperature:
        sum:
          - {shape: constant, value: 22}
          - {shape: spike, value: 0, amplitude: 12, at: %s, width: 60s}
      pressure: {shape: constant, value: 1013.25}
      humidity: {shape: constant, value: 45}
modules:
  - name: env
    wasm: %q
    poll: %s
    grants:
      i2c: [{bus: 1, address: 0x76}]
    config: {bus: 1, address: 0x76}
  - name: env-window
    wasm: %q
    inputs: [env]
    config: {window: %s}
  - name: env-hot
    wasm: %q
    inputs: [env]
    config:
      series: environment
      field: temperature_c
      above: 30
      hysteresis: 1
      hold_off: %s
      severity: warning
      message: too hot
`, filepath.Join(dir, "perch.db"), filepath.Join(shared, "cache"), p.spikeAt,
		perchtest.Built(t, "bme280"), p.poll, perchtest.Built(t, "window"), p.window,
		perchtest.Built(t, "threshold"), p.holdOff)
	path := filepath.Join(dir, "perch.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fastPipeline polls every 10 ms; its spike comes too late to matter.
var fastPipeline = pipeline{poll: "10ms", window: "1s", spikeAt: "1h", holdOff: "200ms"}

// call runs the CLI in this process and returns its error, stdout and stderr.
func call(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCommands(t *testing.T) {
	ctx := t.Context()
	missing := filepath.Join(t.TempDir(), "nothing-here.yaml")
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string   // a part of the error; "" for success
		stdout  []string // parts of stdout
		stderr  []string // parts of stderr
	}{
		{name: "version", args: []string{"version"}, stdout: []string{"perch " + Version + "\n"}},
		{name: "help", args: []string{"help"}, stdout: []string{"Usage:", "perch run --config FILE",
			"perch validate FILE", "perch db --db FILE", "perch module new NAME", "perch version"}},
		{name: "-h", args: []string{"-h"}, stdout: []string{"Usage:"}},
		{name: "no command", args: nil, wantErr: "perch: no command", stderr: []string{"Usage:"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: `perch: unknown command "frobnicate"`,
			stderr: []string{"Usage:"}},
		{name: "run without config", args: []string{"run", "--config", missing, "--quiet"},
			wantErr: missing + ": no such file or directory"},
		{name: "run with a bad flag", args: []string{"run", "--frob"}, wantErr: "flag provided but not defined: -frob",
			stderr: []string{"-config file"}},
		{name: "run with a bad log level", args: []string{"run", "--log-level", "loud"}, wantErr: "perch run: --log-level"},
		{name: "validate without file", args: []string{"validate"}, wantErr: "perch validate: want one config file, got 0 arguments"},
		{name: "validate missing file", args: []string{"validate", missing}, wantErr: missing + ": no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := call(ctx, tc.args...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("no error, want one with %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
	// A missing config is the file system's error, wrapped.
	if _, _, err := call(ctx, "run", "--config", missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("run with a missing config: %v, want an error wrapping fs.ErrNotExist", err)
	}
}

// TestValidateBad checks the errors of `perch validate` on bad configs against golden files:
// each problem names the file, the line and the field. Paths under testdata/ print as
// "testdata/...", so that the golden files do not depend on the checkout's place.
//
// validate_bad.yaml has an unknown key and an unknown input, but config.Load stops at the
// first decoding error, so only the unknown key is reported today; validate_bad_input.yaml has
// the unknown input alone. If config learns to report both at once, rerun with -update.
func TestValidateBad(t *testing.T) {
	perchtest.Built(t, "bme280") // the configs name the built modules, whose manifests Load reads
	abs, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want []string // parts of the error: file:line: field
	}{
		{"validate_bad", []string{"testdata/validate_bad.yaml:25: modules[1].pol: field pol not found"}},
		{"validate_bad_input", []string{`testdata/validate_bad_input.yaml:24: modules[1].inputs[0]: unknown module "envv"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, _, err := call(t.Context(), "validate", filepath.Join("testdata", tc.name+".yaml"))
			if err == nil {
				t.Fatalf("no error; stdout:\n%s", stdout)
			}
			if stdout != "" {
				t.Errorf("stdout of a failed validate: %q", stdout)
			}
			got := strings.ReplaceAll(err.Error(), abs+string(filepath.Separator), "testdata/") + "\n"
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("error lacks %q:\n%s", w, got)
				}
			}
			golden(t, filepath.Join("testdata", tc.name+".golden"), got)
		})
	}
}

// golden compares got with the golden file, or rewrites it under -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (rerun with -update if the change is right)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestIntegrationValidate validates the demo's config, which compiles its three modules.
//
// It does not run in parallel, and so runs before the parallel tests resume: wazero v1.12.0
// races on the lazy lookup of its own version when two runtimes are made at once in one process
// (wazero/wazero#2532, fixed upstream after v1.12.0), and this is the first test to make one.
func TestIntegrationValidate(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: compiles the Wasm modules")
	}
	perchtest.Built(t, "bme280")
	path, err := filepath.Abs(filepath.Join("..", "..", "..", "examples", "demo", "perch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := call(t.Context(), "validate", path)
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, stderr)
	}
	if want := path + ": ok (1 devices, 3 modules)\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
}

// syncBuffer is a buffer safe for concurrent use. If want is set, it closes done once it holds
// each of the strings of want.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want []string
	done chan struct{}
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.want != nil {
		for _, s := range w.want {
			if !strings.Contains(w.buf.String(), s) {
				return len(p), nil
			}
		}
		w.want = nil
		close(w.done)
	}
	return len(p), nil
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestIntegrationRunAndDB runs a pipeline in this process with `perch run` until it has printed
// a summary and an alert, then prints the recorder it left with `perch db`.
func TestIntegrationRunAndDB(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs Wasm modules")
	}
	t.Parallel()
	dir := t.TempDir()
	cfg := pipeline{poll: "20ms", window: "200ms", spikeAt: "100ms", holdOff: "100ms"}.write(t, dir)
	db := filepath.Join(dir, "perch.db")

	stdout := &syncBuffer{want: []string{" summary env-window: env/environment temperature_c_mean=",
		" ALERT raised  env-hot: env/environment [warning] too hot value=3"}, done: make(chan struct{})}
	var stderr bytes.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		select {
		case <-stdout.done:
		case <-time.After(time.Minute): // a bound on correctness, not a speed test
		}
		cancel()
	}()
	if err := run(ctx, []string{"run", "--config", cfg}, stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	select {
	case <-stdout.done:
	default:
		t.Fatalf("no summary and alert printed in a minute:\n%s", out)
	}
	for _, want := range []string{
		"perch " + Version + ": running " + cfg + " (3 modules), recording to " + db + "\n",
		"perch: stopped; the recorder is at " + db + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if stderr.Len() > 0 {
		// Warnings, such as a module fault on a loaded machine, which the supervisor recovers
		// from; the summary and alert above show that it did.
		t.Logf("stderr at the default log level (warn):\n%s", stderr.String())
	}

	out, _, err := call(t.Context(), "db", "--db", db)
	if err != nil {
		t.Fatalf("db: %v", err)
	}
	for _, want := range []string{
		"== recent_alerts: alerts of the last 24 hours, newest first ==\n",
		"== module_health: module lifecycle from the events table ==\n",
		"too hot", "\nenv ", "\nenv-hot ", "\nenv-window ", "(3 rows)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("perch db output lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "== recent_alerts") > strings.Index(out, "== module_health") {
		t.Errorf("perch db prints module_health before recent_alerts:\n%s", out)
	}
	// One view by name.
	out, _, err = call(t.Context(), "db", "--db", db, "module_health")
	if err != nil {
		t.Fatalf("db module_health: %v", err)
	}
	if strings.Contains(out, "recent_alerts") || !strings.Contains(out, "== module_health") {
		t.Errorf("perch db module_health printed:\n%s", out)
	}
}

func TestDBErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	_, _, err := call(t.Context(), "db", "--db", missing)
	if err == nil || !strings.Contains(err.Error(), "perch db: ") || !strings.Contains(err.Error(), missing) ||
		!errors.Is(err, fs.ErrNotExist) {
		t.Errorf("db on a missing file: %v, want a perch db error naming %s and wrapping fs.ErrNotExist", err, missing)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("perch db created the missing recorder: %v", err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := call(t.Context(), "db", "--db", empty); err == nil || !strings.Contains(err.Error(), "not a Perch flight recorder") {
		t.Errorf("db on an empty file: %v, want \"not a Perch flight recorder\"", err)
	}
}

// proc is a perch process started by a test.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{} // closed when it has exited; then err is set
	started        time.Time
	err            error
}

// start starts the perch binary with args. The process is killed when the test ends.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables (NAME=value).
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(perchBinary(t), args...), done: make(chan struct{})}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.started = time.Now()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits up to d for the process to exit and returns its exit error.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("perch did not exit in %v\nstdout:\n%s\nstderr:\n%s", d, &p.stdout, &p.stderr)
		return nil
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tables are the recorder's tables of rows with an id, which tests compare across runs.
var tables = []string{"readings", "summaries", "alerts", "events"}

// snapshot is the recorder's rows, by table and id, each row formatted as one string.
type snapshot map[string]map[int64]string

// watcher reads a recorder read-only while a perch process writes it, as an operator's sqlite3
// would: what it reads was committed, so it must survive kill -9.
type watcher struct {
	db   *sql.DB
	seen snapshot // every row read, by table and id
	last map[string]int64
}

// openRecorder waits (up to a generous bound, or until the process exits) until the recorder at
// path exists with a schema, and opens it read-only.
func openRecorder(t *testing.T, path string, p *proc) *sql.DB {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		db, err := store.OpenReadOnly(path)
		if err == nil {
			return db
		}
		if p != nil && p.exited() {
			t.Fatalf("perch exited (%v) before its recorder was there: %v\n%s", p.err, err, &p.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recorder at %s: %v", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// read reads the rows added since the last read into seen, and returns how many readings it
// has seen in all.
func (w *watcher) read(t *testing.T) int {
	t.Helper()
	for _, table := range tables {
		rows, err := w.db.Query(`SELECT * FROM "`+table+`" WHERE id > ? ORDER BY id`, w.last[table])
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		for id, row := range scanRows(t, rows) {
			w.seen[table][id] = row
			w.last[table] = max(w.last[table], id)
		}
	}
	return len(w.seen["readings"])
}

// scanRows reads rows whose first column is the id.
func scanRows(t *testing.T, rows *sql.Rows) map[int64]string {
	t.Helper()
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			if bs, ok := v.([]byte); ok {
				v = string(bs)
			}
			fmt.Fprintf(&b, "%s=%v;", cols[i], v)
		}
		out[vals[0].(int64)] = b.String()
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// readAll reads every row of the recorder.
func readAll(t *testing.T, db *sql.DB) snapshot {
	t.Helper()
	s := snapshot{}
	for _, table := range tables {
		rows, err := db.Query(`SELECT * FROM "` + table + `" ORDER BY id`)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		s[table] = scanRows(t, rows)
	}
	return s
}

// missing reports rows of want that s lacks or holds with other values, at most a few.
func (s snapshot) missing(want snapshot) []string {
	var out []string
	for table, rows := range want {
		for id, row := range rows {
			if got, ok := s[table][id]; !ok {
				out = append(out, fmt.Sprintf("%s id %d is gone (was %s)", table, id, row))
			} else if got != row {
				out = append(out, fmt.Sprintf("%s id %d changed: %s, was %s", table, id, got, row))
			}
			if len(out) == 5 {
				return out
			}
		}
	}
	return out
}

func (s snapshot) add(more snapshot) {
	for table, rows := range more {
		if s[table] == nil {
			s[table] = map[int64]string{}
		}
		for id, row := range rows {
			s[table][id] = row
		}
	}
}

func queryInt(t *testing.T, db *sql.DB, query string) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

// checkRecorder opens the recorder read-only after a run and checks what must hold whatever
// the run's end: the file is sound, no row of known (every row seen in earlier checks or read
// while a process ran) is missing or changed, every table's ids run without a gap from 1, and
// the readings are in time order. It adds the recorder's rows to known and returns the
// schema version.
func checkRecorder(t *testing.T, path string, known snapshot, when string) (version int64) {
	t.Helper()
	db, err := store.OpenReadOnly(path)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	defer db.Close()
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("%s: integrity_check: %q %v", when, ok, err)
	}
	now := readAll(t, db)
	for _, m := range now.missing(known) {
		t.Errorf("%s: committed row lost: %s", when, m)
	}
	for _, table := range tables {
		n, lo, hi := queryInt(t, db, `SELECT count(*) FROM "`+table+`"`), queryInt(t, db, `SELECT min(id) FROM "`+table+`"`),
			queryInt(t, db, `SELECT max(id) FROM "`+table+`"`)
		if n > 0 && (lo != 1 || hi != n) {
			t.Errorf("%s: %s: %d rows with ids %d to %d: a gap", when, table, n, lo, hi)
		}
	}
	if n := queryInt(t, db, `SELECT count(*) FROM readings AS a JOIN readings AS b ON b.id = a.id + 1
		WHERE b.time_ns < a.time_ns`); n != 0 {
		t.Errorf("%s: %d readings older than the reading before them", when, n)
	}
	known.add(now)
	return queryInt(t, db, "PRAGMA user_version")
}

// lastEvent returns the kind of the recorder's last event.
func lastEvent(t *testing.T, path string) string {
	t.Helper()
	db, err := store.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var kind string
	if err := db.QueryRow(`SELECT kind FROM events ORDER BY id DESC LIMIT 1`).Scan(&kind); err != nil {
		t.Fatal(err)
	}
	return kind
}

// TestIntegrationKill9 kills `perch run` with SIGKILL at a random moment while a reader watches
// the recorder, then checks that every row the reader saw committed is still there, whole, in a
// sound database; then it runs perch again on the same recorder for a moment, stopping on its
// own, and checks that the rows only grew. Several rounds share one recorder.
func TestIntegrationKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs and kills perch processes")
	}
	t.Parallel()
	const rounds = 5
	dir := t.TempDir()
	cfg := fastPipeline.write(t, dir)
	path := filepath.Join(dir, "perch.db")
	known := snapshot{}
	var version int64
	starts, stops := 0, 0
	for round := range rounds {
		// Run until killed, watching the recorder.
		p := start(t, "run", "--config", cfg, "--quiet")
		starts++
		w := &watcher{db: openRecorder(t, path, p), seen: snapshot{}, last: map[string]int64{}}
		for _, table := range tables {
			w.seen[table] = map[int64]string{}
			w.last[table] = 0
		}
		for w.read(t) <= len(known["readings"]) { // until this run's first reading is committed
			if p.exited() {
				t.Fatalf("round %d: perch exited (%v) before recording a reading\n%s", round, p.err, &p.stderr)
			}
			time.Sleep(5 * time.Millisecond)
		}
		firstReading := time.Since(p.started)
		runFor := time.Duration(300+rand.IntN(1200)) * time.Millisecond
		for end := time.Now().Add(runFor); time.Now().Before(end); {
			w.read(t)
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := p.wait(t, 10*time.Second)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: perch ended with %v, not by SIGKILL\n%s", round, err, &p.stderr)
		}
		w.read(t) // once more: what was committed just before the kill
		w.db.Close()
		before := len(known["readings"])
		known.add(w.seen)
		v := checkRecorder(t, path, known, fmt.Sprintf("round %d, after kill -9", round))
		if round == 0 {
			version = v
		} else if v != version {
			t.Errorf("round %d: schema version %d after kill -9, was %d", round, v, version)
		}
		t.Logf("round %d: first reading after %v, killed %v later; %d readings watched committed, %d in the recorder (%d new)",
			round, firstReading.Round(time.Millisecond), runFor, len(w.seen["readings"]), len(known["readings"]), len(known["readings"])-before)
		if stderr := p.stderr.String(); stderr != "" {
			t.Logf("round %d: perch's stderr before the kill:\n%s", round, stderr)
		}

		// Run again on the same recorder for a moment; it stops on its own.
		before = len(known["readings"])
		p = start(t, "run", "--config", cfg, "--quiet", "--for", "300ms")
		starts++
		stops++
		if err := p.wait(t, time.Minute); err != nil {
			t.Fatalf("round %d: restart: %v\n%s", round, err, &p.stderr)
		}
		when := fmt.Sprintf("round %d, after the restart", round)
		if v := checkRecorder(t, path, known, when); v != version {
			t.Errorf("%s: schema version %d, was %d", when, v, version)
		}
		if len(known["readings"]) <= before {
			t.Errorf("%s: %d readings, %d before: the restarted runtime recorded none", when, len(known["readings"]), before)
		}
		if kind := lastEvent(t, path); kind != "runtime.stopped" {
			t.Errorf("%s: last event %q, want runtime.stopped", when, kind)
		}
	}
	// Every start's runtime.started was committed before its first reading, and every graceful
	// stop recorded runtime.stopped.
	db, err := store.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind = 'runtime.started'`); n != int64(starts) {
		t.Errorf("runtime.started events: %d, want %d", n, starts)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind = 'runtime.stopped'`); n != int64(stops) {
		t.Errorf("runtime.stopped events: %d, want %d", n, stops)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM events WHERE kind = 'module.fault'`); n != 0 {
		// Not this test's business, and possible on a loaded machine (an instantiation that
		// overruns its deadline); the supervisor restarts the module.
		t.Logf("module.fault events: %d", n)
	}
}

// TestIntegrationSIGTERM stops `perch run` with SIGTERM once it records: it must drain, flush,
// record runtime.stopped as its last event and exit with status 0.
func TestIntegrationSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a perch process")
	}
	t.Parallel()
	dir := t.TempDir()
	cfg := fastPipeline.write(t, dir)
	path := filepath.Join(dir, "perch.db")
	p := start(t, "run", "--config", cfg, "--quiet")
	db := openRecorder(t, path, p)
	for deadline := time.Now().Add(time.Minute); queryInt(t, db, `SELECT count(*) FROM readings`) == 0; {
		if p.exited() {
			t.Fatalf("perch exited (%v) before recording a reading\n%s", p.err, &p.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no readings recorded in a minute\n%s", &p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	db.Close()
	t.Logf("first reading recorded %v after the start", time.Since(p.started).Round(time.Millisecond))
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("perch after SIGTERM: %v, want exit status 0\n%s", err, &p.stderr)
	}
	t.Logf("exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if !strings.Contains(p.stdout.String(), "perch: stopped; the recorder is at "+path) {
		t.Errorf("stdout lacks the stop line:\n%s", &p.stdout)
	}
	if p.stderr.String() != "" {
		t.Logf("stderr:\n%s", &p.stderr)
	}
	checkRecorder(t, path, snapshot{}, "after SIGTERM")
	if kind := lastEvent(t, path); kind != "runtime.stopped" {
		t.Errorf("last event %q, want runtime.stopped", kind)
	}
}
