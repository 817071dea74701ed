package update_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/registry/artifact"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/update/boot/faultfs"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The crash test's defaults: random rounds per scenario after the sweep of every operation
// (PERCH_CRASH_ROUNDS overrides), and the download chunk, small so that a module's download
// makes many writes (many cut points).
const (
	crashRandomRounds = 10
	crashChunk        = 8 << 10
)

// TestCrashModuleInstall cuts the power at every write, fsync, rename, removal and folder
// sync of a module update (the deployment's download, the module's resumable download, the
// collect of the superseded binary after the commit), and between the last of them and the
// recorder's commit (at the swap, and in the health window after it), then at random
// operations with random outcomes of what was not synced. After each cut the box reboots
// (faultfs.Reboot), ApplyInstalled picks the binary to run, and the test checks that it is
// byte for byte the old release or the new one, never a mix, never missing, and that the
// installed row and the journal say the same; then a fresh agent's poll completes the update.
//
// The files are on faultfs, the recorder is real SQLite (synchronous=FULL; a cut closes it,
// so nothing reaches it after the cut), the registry and its TUF metadata are real on
// loopback. The target of the swap is a fake: the swap is in memory and tested under load in
// runtime/swap_test.go.
//
// PERCH_CRASH_SEED replays a run (every failure names its seed and round); PERCH_CRASH_ROUNDS
// sets the random rounds per scenario.
func TestCrashModuleInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: a registry, SQLite, many rounds")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PERCH_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("PERCH_CRASH_SEED=%q: %v", s, err)
		}
	}
	rounds := crashRandomRounds
	if s := os.Getenv("PERCH_CRASH_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 0 {
			t.Fatalf("PERCH_CRASH_ROUNDS=%q: want a count of rounds", s)
		}
	}
	t.Logf("seed %d (PERCH_CRASH_SEED replays it), %d random rounds per scenario", seed, rounds)

	perchtest.Built(t, "scale")
	perchtest.Built(t, "bme280")
	perchtest.Built(t, "window")
	window, err := os.ReadFile(filepath.Join("..", "..", "build", "modules", "window.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	// Two releases of one real filter module, told apart by a custom section (still valid Wasm).
	rel1, rel2 := withCustomSection(window, "perch.test.release", "1"), withCustomSection(window, "perch.test.release", "2")
	reg := newRegistry(t)
	reg.pushDeployment("deployments/pumps", 1, "name: pumps-1\ngroup: pumps\nstage: 100\nmodules:\n  - {module: f, target: modules/f}\n")
	man2 := windowManifest(t, "0.3.0")
	reg.push("modules/f", artifact.Module, "0.3.0", 2, map[string]string{update.ModuleManifestAnnotation: man2}, writeTemp(t, "f.wasm", rel2))

	for _, sc := range []crashScenario{
		// The box runs the config's binary (scale.wasm) and takes its first update.
		{name: "first-update", reg: reg, newBin: rel2},
		// The box runs release 1, installed and committed earlier; the update to release 2
		// collects release 1's file after the commit.
		{name: "second-update", reg: reg, installed: rel1, installedMan: windowManifest(t, "0.2.0"), newBin: rel2},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.seed, sc.dir = seed, t.TempDir()
			sc.sweep(t, rounds)
		})
	}
}

// crashScenario is one starting state of the box, updated again and again with cuts.
type crashScenario struct {
	name         string
	reg          *registryFixture
	installed    []byte // the committed release 1, or nil: the box runs its config's binary
	installedMan string
	newBin       []byte // release 2: what the deployment moves the box to
	seed         uint64
	dir          string
}

// cutPoint says where a round cuts the power.
type cutPoint struct {
	op   int    // at this file-system operation (1-based); 0: none
	at   string // or at this moment: "swap" (before the swap), "health" (in the health window)
	desc string
}

func (sc *crashScenario) sweep(t *testing.T, rounds int) {
	// A clean round counts the file-system operations of a whole update.
	total, runs := sc.round(t, 0, cutPoint{desc: "no cut, power off after the poll"})
	if runs != "new" {
		t.Fatalf("%s, seed %d: after a clean update and a power cut the box runs the %s release", sc.name, sc.seed, runs)
	}
	if total < 20 {
		t.Fatalf("a clean update made only %d file-system operations", total)
	}
	t.Logf("a clean update makes %d file-system operations", total)
	round := 1
	var points []cutPoint
	for k := 1; k <= total; k++ {
		points = append(points, cutPoint{op: k, desc: fmt.Sprintf("cut at op %d of %d", k, total)})
	}
	points = append(points, cutPoint{at: "swap", desc: "cut at the swap, after the last file operation before the commit"},
		cutPoint{at: "health", desc: "cut in the health window, before the commit"},
		cutPoint{op: total + 1, desc: "cut at the first operation after the update (right after the commit and the collect)"})
	rng := rand.New(rand.NewPCG(sc.seed, fnv64(sc.name)))
	for range rounds {
		k := 1 + rng.IntN(total+1)
		points = append(points, cutPoint{op: k, desc: fmt.Sprintf("random cut at op %d of %d", k, total)})
	}
	outcomes := map[string]int{}
	for _, p := range points {
		_, runs := sc.round(t, round, p)
		round++
		outcomes[runs]++
	}
	t.Logf("%d rounds with a cut: the box ran the old release after %d, the new one after %d", len(points), outcomes["old"], outcomes["new"])
	if outcomes["old"] == 0 || outcomes["new"] == 0 {
		t.Errorf("seed %d: the cuts never left the box on one of the releases: %v", sc.seed, outcomes)
	}
}

// round runs one update with the power cut at p, reboots, checks the box and completes the
// update with a fresh agent. It returns the file-system operations the update made before the
// cut (all of them, without one) and which release ran after the cut ("old" or "new").
func (sc *crashScenario) round(t *testing.T, round int, p cutPoint) (int, string) {
	t.Helper()
	ctx := context.Background()
	where := fmt.Sprintf("%s, seed %d, round %d (%s)", sc.name, sc.seed, round, p.desc)
	rng := rand.New(rand.NewPCG(sc.seed, fnv64(fmt.Sprint(sc.name, round))))
	dir := filepath.Join(sc.dir, strconv.Itoa(round))
	box := newCrashBox(t, where, dir, sc)

	// The update, with the power cut at p.
	st := box.openStore(t)
	fsys := &powerFS{FS: box.fs, onCut: func() { st.Close() }}
	cutNow := func() { fsys.cut() }
	tgt := &fakeTarget{}
	switch p.at {
	case "swap":
		tgt.onSwap = cutNow
	case "health":
		tgt.onHealth = cutNow
	}
	cfg := box.config(t)
	if err := update.ApplyInstalledFS(cfg, box.fs, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("%s: ApplyInstalled before the update: %v", where, err)
	}
	a := box.agent(t, cfg, fsys, tgt, st)
	start := box.fs.Ops()
	if p.op > 0 {
		box.fs.CutAfter(p.op)
	}
	err := a.Once(ctx)
	ops := box.fs.Ops() - start
	cut := fsys.wasCut()
	if !cut && err != nil {
		t.Fatalf("%s: the update failed without a cut: %v", where, err)
	}
	if p.op > 0 && !cut && p.op <= ops {
		t.Fatalf("%s: the cut at op %d did not happen (%d ops)", where, p.op, ops)
	}
	st.Close() // the power is off: nothing more reaches the recorder

	// Power on: what the disk kept, what ApplyInstalled makes of it.
	box.fs.Reboot(rng)
	cfg = box.config(t)
	if err := update.ApplyInstalledFS(cfg, box.fs, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("%s: ApplyInstalled after the reboot: %v", where, err)
	}
	runs := box.check(t, where, cfg)

	// A fresh agent's poll completes the update.
	st = box.openStore(t)
	defer st.Close()
	tgt = &fakeTarget{}
	a = box.agent(t, cfg, box.fs, tgt, st)
	if err := a.Once(ctx); err != nil {
		t.Fatalf("%s: after the reboot (running the %s release) the next poll failed: %v", where, runs, err)
	}
	if runs == "old" && !bytes.Equal(tgt.swapped("f"), sc.newBin) {
		t.Fatalf("%s: the next poll did not swap in the new release", where)
	}
	cfg = box.config(t)
	if err := update.ApplyInstalledFS(cfg, box.fs, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if runs := box.check(t, where+", after the next poll", cfg); runs != "new" {
		t.Fatalf("%s: after the next poll the box runs the %s release", where, runs)
	}
	// Nothing is left behind: only the installed binary is in the module's folder.
	names, err := box.fs.ReadDir(box.moduleDir())
	if want := hexSHA(sc.newBin); err != nil || len(names) != 1 || names[0] != want {
		t.Fatalf("%s: after the next poll the module folder holds %v (%v), want only %s", where, names, err, want)
	}
	return ops, runs
}

// crashBox is one simulated device: a faultfs disk with its config's binaries and the agent's
// folder, a recorder on the real disk, a TUF cache on the real disk.
type crashBox struct {
	sc   *crashScenario
	fs   *faultfs.FS
	dir  string // real: the recorder and the TUF cache
	root string // the agent's folder (Config.Dir): real for the TUF cache, faultfs for the rest
	old  []byte // what the box runs before the update
}

func newCrashBox(t *testing.T, where, dir string, sc *crashScenario) *crashBox {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &crashBox{sc: sc, fs: faultfs.New(), dir: dir, root: filepath.Join(dir, "updates")}
	// Provisioning: the config's binaries and the agent's folder, durable.
	cfg := b.config(t)
	for _, m := range cfg.Modules {
		bin, err := os.ReadFile(m.Wasm)
		if err != nil {
			t.Fatal(err)
		}
		writeDurable(t, b.fs, m.Wasm, bin)
		if m.Name == "f" {
			b.old = bin
		}
	}
	must(t, boot.MkdirAll(b.fs, b.root, 0o755))
	if sc.installed != nil {
		// An earlier update committed release 1: its file, durable, and its installed row.
		b.old = sc.installed
		name := b.moduleDir() + "/" + hexSHA(sc.installed)
		must(t, boot.MkdirAll(b.fs, b.moduleDir(), 0o755))
		writeDurable(t, b.fs, name, sc.installed)
		st := b.openStore(t)
		defer st.Close()
		must(t, st.Install(context.Background(), store.Installed{Target: "modules/f", Kind: string(artifact.Module), Name: "f",
			Version: "0.2.0", Release: 1, Digest: "sha256:" + hexSHA(sc.installed), Path: name, SHA256: hexSHA(sc.installed),
			Manifest: sc.installedMan}, "provisioned by the test"))
	}
	if bytes.Equal(b.old, sc.newBin) {
		t.Fatalf("%s: the old and the new release are the same bytes", where)
	}
	return b
}

func (b *crashBox) moduleDir() string { return filepath.ToSlash(filepath.Join(b.root, "modules", "f")) }

func (b *crashBox) storePath() string { return filepath.Join(b.dir, "perch.db") }

func (b *crashBox) openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{Path: b.storePath()})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// config parses the box's config as perch does at every start.
func (b *crashBox) config(t *testing.T) *config.Config {
	t.Helper()
	abs, err := filepath.Abs("box.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(abs, []byte(pipeline))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = b.storePath()
	return cfg
}

func (b *crashBox) agent(t *testing.T, cfg *config.Config, fsys boot.FS, tgt update.Target, st *store.Store) *update.Agent {
	t.Helper()
	a, err := update.New(update.Config{Device: "box-7", Group: "pumps", Hardware: "amd64", Registry: b.sc.reg.url,
		Dir: b.root, Root: b.sc.reg.root, HealthWindow: time.Nanosecond, FS: fsys,
		Fetcher: update.Fetcher{Chunk: crashChunk, Backoff: time.Millisecond}}, cfg, tgt, st)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// check is the invariant after a power cut: the binary module f's config now names is byte
// for byte the old release or the new one, and the recorder agrees (an installed row for the
// new release exactly when the new release runs, pointing at the file that runs; a committed
// journal step for it exactly then). It returns "old" or "new".
func (b *crashBox) check(t *testing.T, where string, cfg *config.Config) string {
	t.Helper()
	var f *config.Module
	for i := range cfg.Modules {
		if cfg.Modules[i].Name == "f" {
			f = &cfg.Modules[i]
		}
	}
	got, err := readAll(b.fs, f.Wasm)
	if err != nil {
		t.Fatalf("%s: module f has no binary: %s: %v", where, f.Wasm, err)
	}
	runs := ""
	switch {
	case bytes.Equal(got, b.sc.newBin):
		runs = "new"
	case bytes.Equal(got, b.old):
		runs = "old"
	default:
		t.Fatalf("%s: module f runs neither the old nor the new release: %s, %d bytes, sha256 %s", where, f.Wasm, len(got), hexSHA(got))
	}
	st := b.openStore(t)
	defer st.Close()
	ctx := context.Background()
	all, err := st.InstalledAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var row *store.Installed
	for i := range all {
		if all[i].Target == "modules/f" {
			row = &all[i]
		}
	}
	var committed int
	if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM update_journal WHERE target = 'modules/f' AND release = 2 AND step = 'committed'`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	switch {
	case runs == "new":
		if row == nil || row.Release != 2 || row.Path != f.Wasm || row.SHA256 != hexSHA(got) || committed != 1 {
			t.Fatalf("%s: the box runs the new release from %s, but the installed row is %s and the journal has %d commits of it", where, f.Wasm, rowString(row), committed)
		}
		if f.Manifest.Version != "0.3.0" {
			t.Fatalf("%s: the new binary runs with manifest version %q", where, f.Manifest.Version)
		}
	case b.sc.installed == nil:
		if row != nil || committed != 0 {
			t.Fatalf("%s: the box runs its config's binary, but the installed row is %s and the journal has %d commits of release 2", where, rowString(row), committed)
		}
	default:
		if row == nil || row.Release != 1 || row.Path != f.Wasm || committed != 0 {
			t.Fatalf("%s: the box runs release 1 from %s, but the installed row is %s and the journal has %d commits of release 2", where, f.Wasm, rowString(row), committed)
		}
	}
	return runs
}

// powerFS is the box's disk as the agent sees it: a faultfs whose power cut also stops the
// process, here the recorder (closed at the cut, so that nothing the agent does after it
// reaches SQLite, as nothing would after a real one).
type powerFS struct {
	*faultfs.FS
	onCut func()
	mu    sync.Mutex
	done  bool
}

// cut stops the process now: the recorder is closed and every later file operation fails.
// The disk loses what was not synced at the next Reboot.
func (p *powerFS) cut() {
	p.FS.CutAfter(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.done {
		p.done = true
		p.onCut()
	}
}

func (p *powerFS) wasCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

func (p *powerFS) check(err error) error {
	if errors.Is(err, faultfs.ErrPowerCut) {
		p.cut()
	}
	return err
}

func (p *powerFS) Create(name string, perm os.FileMode) (boot.File, error) {
	f, err := p.FS.Create(name, perm)
	if err != nil {
		return nil, p.check(err)
	}
	return powerFile{f, p}, nil
}

func (p *powerFS) Append(name string, perm os.FileMode) (boot.File, error) {
	f, err := p.FS.Append(name, perm)
	if err != nil {
		return nil, p.check(err)
	}
	return powerFile{f, p}, nil
}

func (p *powerFS) Rename(oldname, newname string) error {
	return p.check(p.FS.Rename(oldname, newname))
}
func (p *powerFS) Remove(name string) error { return p.check(p.FS.Remove(name)) }
func (p *powerFS) Mkdir(name string, perm os.FileMode) error {
	return p.check(p.FS.Mkdir(name, perm))
}
func (p *powerFS) SyncDir(dir string) error { return p.check(p.FS.SyncDir(dir)) }

type powerFile struct {
	boot.File
	p *powerFS
}

func (f powerFile) Write(b []byte) (int, error) {
	n, err := f.File.Write(b)
	return n, f.p.check(err)
}

func (f powerFile) Sync() error { return f.p.check(f.File.Sync()) }

// fakeTarget swaps module binaries in memory and reports every module healthy. onSwap and
// onHealth, if set, run first (a test cuts the power there). The Target it embeds is nil: the
// module path calls none of its other methods (a call would panic).
type fakeTarget struct {
	update.Target
	mu               sync.Mutex
	onSwap, onHealth func()
	bins             map[string][]byte
}

func (f *fakeTarget) Swap(_ context.Context, module string, bin []byte, man *config.Manifest) (runtime.SwapReport, error) {
	if f.onSwap != nil {
		f.onSwap()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bins == nil {
		f.bins = map[string][]byte{}
	}
	f.bins[module] = bytes.Clone(bin)
	return runtime.SwapReport{Module: module, NewVersion: man.Version, Started: true}, nil
}

func (f *fakeTarget) Health(string) (runtime.Health, error) {
	if f.onHealth != nil {
		f.onHealth()
	}
	return runtime.Health{Up: true}, nil
}

func (f *fakeTarget) swapped(module string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bins[module]
}

// withCustomSection returns wasm with a custom section (id 0) appended: a valid module that
// differs from wasm only there.
func withCustomSection(wasm []byte, name, payload string) []byte {
	var body []byte
	body = appendULEB(body, uint64(len(name)))
	body = append(body, name...)
	body = append(body, payload...)
	out := append(bytes.Clone(wasm), 0)
	out = appendULEB(out, uint64(len(body)))
	return append(out, body...)
}

func appendULEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// windowManifest is the window module's manifest with its version set to version.
func windowManifest(t *testing.T, version string) string {
	t.Helper()
	man, err := os.ReadFile(filepath.Join("..", "..", "build", "modules", "window.manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(man), "\n") {
		if strings.HasPrefix(l, "version:") {
			l = "version: " + version
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeDurable writes name on fsys with its folders, all synced.
func writeDurable(t *testing.T, fsys boot.FS, name string, b []byte) {
	t.Helper()
	name = filepath.ToSlash(name)
	must(t, boot.MkdirAll(fsys, path.Dir(name), 0o755))
	f, err := fsys.Create(name, 0o644)
	must(t, err)
	_, err = f.Write(b)
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())
	must(t, fsys.SyncDir(path.Dir(name)))
}

func readAll(fsys boot.FS, name string) ([]byte, error) {
	r, err := fsys.Open(filepath.ToSlash(name))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// rowString shows an installed row without its manifest.
func rowString(in *store.Installed) string {
	if in == nil {
		return "missing"
	}
	return fmt.Sprintf("{release %d, version %s, path %s, sha256 %s}", in.Release, in.Version, in.Path, in.SHA256)
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func fnv64(s string) uint64 { h := fnv.New64a(); h.Write([]byte(s)); return h.Sum64() }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ boot.FS = (*powerFS)(nil)
