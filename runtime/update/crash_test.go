package update_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/registry/artifact"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/update/boot/faultfs"
	"github.com/perch-edge/perch/runtime/update/slots"
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
	seed, rounds := crashKnobs(t)
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
	at   string // or at this moment: "swap" (before the swap; A/B slots: at the restart), "health" (in the health window)
	desc string
}

func (sc *crashScenario) sweep(t *testing.T, rounds int) {
	sweepCuts(t, sc.name, sc.seed, rounds, sc.round)
}

// sweepCuts runs round once without a cut, to count the file-system operations of a whole
// update, then with a cut at each of them, at the moments of cutPoint.at, right after the
// update, and at rounds random operations drawn from seed. Each round returns the operations
// it made and which release ran after the cut ("old" or "new"); both must occur.
func sweepCuts(t *testing.T, name string, seed uint64, rounds int, round func(*testing.T, int, cutPoint) (int, string)) {
	t.Helper()
	total, runs := round(t, 0, cutPoint{desc: "no cut, power off after the poll"})
	if runs != "new" {
		t.Fatalf("%s, seed %d: after a clean update and a power cut the box runs the %s release", name, seed, runs)
	}
	if total < 20 {
		t.Fatalf("a clean update made only %d file-system operations", total)
	}
	t.Logf("a clean update makes %d file-system operations", total)
	n := 1
	var points []cutPoint
	for k := 1; k <= total; k++ {
		points = append(points, cutPoint{op: k, desc: fmt.Sprintf("cut at op %d of %d", k, total)})
	}
	points = append(points, cutPoint{at: "swap", desc: "cut at the swap (A/B slots: at the restart), after the last file operation before it"},
		cutPoint{at: "health", desc: "cut in the health window, before the commit"},
		cutPoint{op: total + 1, desc: "cut at the first operation after the update (right after the commit and the collect)"})
	rng := rand.New(rand.NewPCG(seed, fnv64(name)))
	for range rounds {
		k := 1 + rng.IntN(total+1)
		points = append(points, cutPoint{op: k, desc: fmt.Sprintf("random cut at op %d of %d", k, total)})
	}
	outcomes := map[string]int{}
	for _, p := range points {
		_, runs := round(t, n, p)
		n++
		outcomes[runs]++
	}
	t.Logf("%d rounds with a cut: the box ran the old release after %d, the new one after %d", len(points), outcomes["old"], outcomes["new"])
	if outcomes["old"] == 0 || outcomes["new"] == 0 {
		t.Errorf("seed %d: the cuts never left the box on one of the releases: %v", seed, outcomes)
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
	ops := pollWithCut(ctx, t, where, box.agent(t, cfg, fsys, tgt, st), fsys, p)
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
	a := box.agent(t, cfg, box.fs, tgt, st)
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
// pollWithCut runs one poll of a with the power cut at operation p.op of fsys (from now; none
// when 0: then only the swap or health hooks the caller set may cut it). It returns how many
// operations the poll made; a poll that fails without a cut, or a cut that was due and did not
// happen, fails the test.
func pollWithCut(ctx context.Context, t *testing.T, where string, a *update.Agent, fsys *powerFS, p cutPoint) int {
	t.Helper()
	start := fsys.FS.Ops()
	if p.op > 0 {
		fsys.FS.CutAfter(p.op)
	}
	err := a.Once(ctx)
	ops := fsys.FS.Ops() - start
	cut := fsys.wasCut()
	if !cut && err != nil {
		t.Fatalf("%s: the update failed without a cut: %v", where, err)
	}
	if p.op > 0 && !cut && p.op <= ops {
		t.Fatalf("%s: the cut at op %d did not happen (%d ops)", where, p.op, ops)
	}
	return ops
}

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

// fakeTarget swaps module binaries and model cards in memory and reports every module and
// model healthy. onSwap and onHealth, if set, run first (a test cuts the power there).
type fakeTarget struct {
	mu               sync.Mutex
	onSwap, onHealth func()
	bins             map[string][]byte
	cards            map[string]string
	// disk, if set, is where SwapModel reads the card and its model, as the runtime's does
	// from the operating system's files: a swap to a card that is not whole is refused.
	disk boot.FS
}

func (f *fakeTarget) SwapModel(_ context.Context, model, cardPath string) (runtime.ModelSwapReport, error) {
	if f.onSwap != nil {
		f.onSwap()
	}
	var rep runtime.ModelSwapReport
	if f.disk != nil {
		c, _, err := loadCardOn(f.disk, cardPath)
		if err != nil {
			return rep, err
		}
		rep.NewVersion = c.Version
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cards == nil {
		f.cards = map[string]string{}
	}
	f.cards[model] = cardPath
	return rep, nil
}

func (f *fakeTarget) swappedCard(model string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cards[model]
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

var (
	_ boot.FS       = (*powerFS)(nil)
	_ update.Target = (*fakeTarget)(nil)
)

// TestCrashModelInstall is TestCrashModuleInstall for a model node: the power is cut at every
// file-system operation of a model update (the deployment's download, the two layers' resumable
// downloads, the staging of NAME.onnx and NAME.card.yaml, the collect of the superseded
// model's blobs and staged folder after the commit), at the swap, in the health window, and at
// random operations. After each cut the box reboots, ApplyInstalled points the model at a card,
// and the test checks that the card and its .onnx file are byte for byte release 1's (or the
// config's card, on a first update) or release 2's, that the card loads (digest checked), that
// the installed row and the journal say the same, and that a fresh agent's poll completes the
// update and leaves only release 2's files.
//
// The models are trained with models/anomaly (small PCA detectors); the swap is the test's
// fake, which loads the card from the faultfs disk (the runtime's SwapModel is tested with
// ONNX Runtime in agent_model_test.go and runtime/model_swap_test.go). The random rounds are
// fewer than the module test's (PERCH_CRASH_ROUNDS/4, at least 2) to keep the whole crash test
// short; PERCH_CRASH_SEED and PERCH_CRASH_ROUNDS work as there.
func TestCrashModelInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: a registry, SQLite, many rounds")
	}
	seed, rounds := crashKnobs(t)
	rounds = max(rounds/4, 2)
	t.Logf("seed %d (PERCH_CRASH_SEED replays it), %d random rounds per scenario", seed, rounds)
	perchtest.Built(t, "bme280")

	var rel [3]modelRelease
	for i := range rel {
		c, raw := trainEnvModel(t, uint64(10+i), strconv.Itoa(i), 10+float64(i))
		onnxPath, cardPath := writeModel(t, c, raw)
		data, err := os.ReadFile(cardPath)
		must(t, err)
		rel[i] = modelRelease{version: c.Version, card: data, onnx: raw, onnxPath: onnxPath, cardPath: cardPath}
	}
	reg := newRegistry(t)
	reg.pushDeployment("deployments/pumps", 1, "name: pumps-1\ngroup: pumps\nstage: 100\nmodels:\n  - {model: env-ae, target: models/env}\n")
	reg.push("models/env", artifact.Model, "2", 2, nil, rel[2].onnxPath, rel[2].cardPath)

	for _, sc := range []*modelCrash{
		// The box runs its config's card (release 0) and takes its first model update.
		{name: "first-update", reg: reg, config: rel[0], newRel: rel[2]},
		// The box runs release 1, installed and committed earlier; the update to release 2
		// collects release 1's blobs and staged folder after the commit.
		{name: "second-update", reg: reg, config: rel[0], installed: &rel[1], newRel: rel[2]},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.seed, sc.dir = seed, t.TempDir()
			sweepCuts(t, sc.name, seed, rounds, sc.round)
		})
	}
}

// crashKnobs reads PERCH_CRASH_SEED (default: the clock) and PERCH_CRASH_ROUNDS (default
// crashRandomRounds).
func crashKnobs(t *testing.T) (uint64, int) {
	t.Helper()
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
	return seed, rounds
}

// modelRelease is one trained model: its card's bytes and its ONNX model, and the files they
// were written to (on the real disk).
type modelRelease struct {
	version            string
	card, onnx         []byte
	onnxPath, cardPath string
}

// modelCrash is one starting state of a model node, updated again and again with cuts.
type modelCrash struct {
	name      string
	reg       *registryFixture
	config    modelRelease  // the config's own card (on the real disk, as provisioned)
	installed *modelRelease // release 1, committed earlier, or nil: the box runs config
	newRel    modelRelease  // release 2: what the deployment moves the box to
	seed      uint64
	dir       string
}

// modelDir is the agent's download folder of the model node under root.
func modelDir(root string) string { return filepath.ToSlash(filepath.Join(root, "models", "env-ae")) }

// stage writes r on fsys as the agent stores a committed model: its two blobs, named by their
// SHA-256, and the staged folder beside them; it returns the staged card's path.
func (r modelRelease) stage(t *testing.T, fsys boot.FS, dir string) string {
	t.Helper()
	c, err := card.Parse(r.card)
	must(t, err)
	writeDurable(t, fsys, dir+"/"+hexSHA(r.onnx), r.onnx)
	writeDurable(t, fsys, dir+"/"+hexSHA(r.card), r.card)
	staged := dir + "/" + hexSHA(r.card) + ".staged"
	writeDurable(t, fsys, staged+"/"+c.Model, r.onnx)
	writeDurable(t, fsys, staged+"/"+c.Name+card.Suffix, r.card)
	return filepath.FromSlash(staged + "/" + c.Name + card.Suffix)
}

func (sc *modelCrash) round(t *testing.T, round int, p cutPoint) (int, string) {
	t.Helper()
	ctx := context.Background()
	where := fmt.Sprintf("model %s, seed %d, round %d (%s)", sc.name, sc.seed, round, p.desc)
	rng := rand.New(rand.NewPCG(sc.seed, fnv64(fmt.Sprint("model", sc.name, round))))
	dir := filepath.Join(sc.dir, strconv.Itoa(round))
	must(t, os.MkdirAll(dir, 0o755))
	b := &crashBox{fs: faultfs.New(), dir: dir, root: filepath.Join(dir, "updates"), sc: &crashScenario{reg: sc.reg}}
	config := func() *config.Config { return modelBoxConfigOn(t, b, sc.config.cardPath) }
	// Provisioning: the config's binaries and the agent's folder, durable; release 1 if the
	// box runs it.
	for _, m := range config().Modules {
		bin, err := os.ReadFile(m.Wasm)
		must(t, err)
		writeDurable(t, b.fs, m.Wasm, bin)
	}
	must(t, boot.MkdirAll(b.fs, b.root, 0o755))
	if sc.installed != nil {
		path := sc.installed.stage(t, b.fs, modelDir(b.root))
		st := b.openStore(t)
		must(t, st.Install(ctx, store.Installed{Target: "models/env", Kind: string(artifact.Model), Name: "env-ae", Version: sc.installed.version,
			Release: 1, Digest: "sha256:" + hexSHA(sc.installed.card), Path: path, SHA256: hexSHA(sc.installed.card), Manifest: string(sc.installed.card)},
			"provisioned by the test"))
		st.Close()
	}

	// The update, with the power cut at p.
	st := b.openStore(t)
	fsys := &powerFS{FS: b.fs, onCut: func() { st.Close() }}
	tgt := &fakeTarget{disk: b.fs}
	switch p.at {
	case "swap":
		tgt.onSwap = fsys.cut
	case "health":
		tgt.onHealth = fsys.cut
	}
	cfg := config()
	must(t, update.ApplyInstalledFS(cfg, b.fs, slog.New(slog.DiscardHandler)))
	if sc.check(t, where+", before the update", b, cfg) != "old" {
		t.Fatalf("%s: before the update the box does not run the old release", where)
	}
	ops := pollWithCut(ctx, t, where, b.agent(t, cfg, fsys, tgt, st), fsys, p)
	st.Close()

	// Power on.
	b.fs.Reboot(rng)
	cfg = config()
	must(t, update.ApplyInstalledFS(cfg, b.fs, slog.New(slog.DiscardHandler)))
	runs := sc.check(t, where, b, cfg)

	// A fresh agent's poll completes the update.
	st = b.openStore(t)
	defer st.Close()
	tgt = &fakeTarget{disk: b.fs}
	a := b.agent(t, cfg, b.fs, tgt, st)
	if err := a.Once(ctx); err != nil {
		t.Fatalf("%s: after the reboot (running the %s release) the next poll failed: %v", where, runs, err)
	}
	if runs == "old" && tgt.swappedCard("env-ae") == "" {
		t.Fatalf("%s: the next poll did not swap in the new release", where)
	}
	cfg = config()
	must(t, update.ApplyInstalledFS(cfg, b.fs, slog.New(slog.DiscardHandler)))
	if runs := sc.check(t, where+", after the next poll", b, cfg); runs != "new" {
		t.Fatalf("%s: after the next poll the box runs the %s release", where, runs)
	}
	// Nothing is left behind: release 2's two blobs and its staged folder, with its two files.
	mdir := modelDir(b.root)
	names, err := b.fs.ReadDir(mdir)
	want := []string{hexSHA(sc.newRel.onnx), hexSHA(sc.newRel.card), hexSHA(sc.newRel.card) + ".staged"}
	slices.Sort(want)
	if err != nil || !slices.Equal(names, want) {
		t.Fatalf("%s: after the next poll the model folder holds %v (%v), want %v", where, names, err, want)
	}
	staged, err := b.fs.ReadDir(mdir + "/" + want[slices.Index(want, hexSHA(sc.newRel.card)+".staged")])
	if err != nil || len(staged) != 2 {
		t.Fatalf("%s: after the next poll the staged folder holds %v (%v)", where, staged, err)
	}
	return ops, runs
}

// modelBoxConfigOn parses modelPipeline, its model's card at cardPath, with its recorder in
// b's folder (ApplyInstalledFS is the caller's).
func modelBoxConfigOn(t *testing.T, b *crashBox, cardPath string) *config.Config {
	t.Helper()
	abs, err := filepath.Abs("box.yaml")
	must(t, err)
	cfg, err := config.Parse(abs, []byte(strings.Replace(modelPipeline, "CARD", cardPath, 1)))
	must(t, err)
	cfg.Store.Path = b.storePath()
	return cfg
}

// check is the invariant after a power cut: the card the model node's config now names, and
// the .onnx file beside it, are byte for byte the old release's (release 1, or the config's
// card on a first update) or the new one's, the card loads with its digest checked, and the
// recorder agrees (an installed row for release 2 exactly when it runs, naming its card; a
// committed journal step for it exactly then). It returns "old" or "new".
func (sc *modelCrash) check(t *testing.T, where string, b *crashBox, cfg *config.Config) string {
	t.Helper()
	m := cfg.Model("env-ae")
	old := sc.config
	if sc.installed != nil {
		old = *sc.installed
	}
	var disk boot.FS = b.fs
	if m.Card == sc.config.cardPath {
		disk = boot.OSFS{} // the config's own card, provisioned on the real disk
	}
	c, onnx, err := loadCardOn(disk, m.Card)
	if err != nil {
		t.Fatalf("%s: the model's card %s does not load: %v", where, m.Card, err)
	}
	cardBytes, err := readAll(disk, m.Card)
	must(t, err)
	runs := ""
	switch {
	case bytes.Equal(cardBytes, sc.newRel.card) && bytes.Equal(onnx, sc.newRel.onnx):
		runs = "new"
	case bytes.Equal(cardBytes, old.card) && bytes.Equal(onnx, old.onnx):
		runs = "old"
	default:
		t.Fatalf("%s: the model runs neither the old nor the new release: card %s (version %s, sha256 %s), model sha256 %s",
			where, m.Card, c.Version, hexSHA(cardBytes), hexSHA(onnx))
	}
	if m.Loaded == nil || m.Loaded.Version != c.Version {
		t.Fatalf("%s: the config's loaded card is not the card it names", where)
	}
	st := b.openStore(t)
	defer st.Close()
	ctx := context.Background()
	all, err := st.InstalledAll(ctx)
	must(t, err)
	var row *store.Installed
	for i := range all {
		if all[i].Target == "models/env" {
			row = &all[i]
		}
	}
	var committed int
	must(t, st.DB().QueryRowContext(ctx, `SELECT count(*) FROM update_journal WHERE target = 'models/env' AND release = 2 AND step = 'committed'`).Scan(&committed))
	switch {
	case runs == "new":
		if row == nil || row.Release != 2 || row.Path != m.Card || row.SHA256 != hexSHA(cardBytes) || committed != 1 {
			t.Fatalf("%s: the box runs the new model from %s, but the installed row is %s and the journal has %d commits of it", where, m.Card, rowString(row), committed)
		}
	case sc.installed == nil:
		if row != nil || committed != 0 || m.Card != sc.config.cardPath {
			t.Fatalf("%s: the box runs its config's card, but the installed row is %s and the journal has %d commits of release 2", where, rowString(row), committed)
		}
	default:
		if row == nil || row.Release != 1 || row.Path != m.Card || committed != 0 {
			t.Fatalf("%s: the box runs release 1 from %s, but the installed row is %s and the journal has %d commits of release 2", where, m.Card, rowString(row), committed)
		}
	}
	return runs
}

// loadCardOn reads the card at cardPath and the model beside it from fsys, checks the model
// against the card's digest, and returns both.
func loadCardOn(fsys boot.FS, cardPath string) (*card.Card, []byte, error) {
	data, err := readAll(fsys, cardPath)
	if err != nil {
		return nil, nil, err
	}
	c, err := card.Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cardPath, err)
	}
	model, err := readAll(fsys, c.ModelPath(cardPath))
	if err != nil {
		return nil, nil, err
	}
	if got := card.Digest(model); got != c.SHA256 {
		return nil, nil, fmt.Errorf("%s: model sha256 %s, the card says %s", cardPath, got, c.SHA256)
	}
	return c, model, nil
}

// TestCrashRuntimeSlots cuts the power at every file-system operation of the runtime's
// self-update through A/B slots, as the agent does it: the deployment's download, the
// image's resumable download, the slot installer's write, verify and rename into the idle
// slot, the loader's TryNext, the removal of the download; then perch-boot's Boot of the
// trial, the agent's judgement of it (MarkGood) and its commit, at the restart, in the health
// window, and at random operations. The downloads, the slots and the file loader's environment
// are on one faultfs disk. After each cut the box reboots, perch-boot's loader chooses a slot,
// and the test checks that the slot's image is byte for byte the old binary or the new one,
// and that the loader and the recorder agree (a trial is a release the journal staged or
// downloaded; a committed new slot is installed, or the journal shows its commit under way);
// then fresh starts of the agent (with perch-boot's boots between them) complete the update:
// the new slot committed, installed, and no download left.
//
// The random rounds are PERCH_CRASH_ROUNDS/4 (at least 2), as in TestCrashModelInstall.
func TestCrashRuntimeSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: a registry, SQLite, many rounds")
	}
	seed, rounds := crashKnobs(t)
	rounds = max(rounds/4, 2)
	t.Logf("seed %d (PERCH_CRASH_SEED replays it), %d random rounds", seed, rounds)
	perchtest.Built(t, "scale")
	perchtest.Built(t, "bme280")
	rng := rand.New(rand.NewPCG(seed, 7))
	sc := &slotCrash{name: "runtime-slots", seed: seed, dir: t.TempDir(),
		old: []byte("perch 0.1.0\n"), newBin: make([]byte, 5*crashChunk+123)} // several download chunks
	for i := range sc.newBin {
		sc.newBin[i] = byte(rng.Uint32())
	}
	sc.reg = newRegistry(t)
	sc.reg.pushSlotImage("runtime/perch", artifact.Runtime, "0.2.0", 2, []string{"amd64"}, sc.newBin)
	sc.reg.pushDeployment("deployments/pumps", 1, "name: pumps-1\ngroup: pumps\nstage: 100\nruntime: runtime/perch\n")
	sweepCuts(t, sc.name, seed, rounds, sc.round)
}

// slotCrash is the runtime self-update scenario: slot A holds old, committed and booted; the
// deployment's runtime target is newBin.
type slotCrash struct {
	name        string
	reg         *registryFixture
	old, newBin []byte
	seed        uint64
	dir         string
}

const crashSlotDir = "/perch-boot"

// slotAgent is one start of perch on the box: an agent whose runtime slots are on fsys, started
// from slot running; a restart it asks for is recorded in restarts (and runs onRestart first).
func (sc *slotCrash) slotAgent(t *testing.T, b *crashBox, fsys boot.FS, st *store.Store, tgt update.Target, running boot.Slot, restarts *[]string, onRestart func()) *update.Agent {
	t.Helper()
	cfg := b.config(t)
	a, err := update.New(update.Config{Device: "box-7", Group: "pumps", Hardware: "amd64", Registry: sc.reg.url,
		Dir: b.root, Root: sc.reg.root, HealthWindow: time.Nanosecond, FS: fsys,
		Fetcher: update.Fetcher{Chunk: crashChunk, Backoff: time.Millisecond},
		Runtime: &update.Slots{Loader: boot.NewFileLoader(fsys, crashSlotDir), Dir: crashSlotDir, File: "perch", Perm: 0o755,
			Running: running, Restart: func(_ context.Context, reason string) error {
				if onRestart != nil {
					onRestart()
				}
				*restarts = append(*restarts, reason)
				return nil
			}}}, cfg, tgt, st)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (sc *slotCrash) round(t *testing.T, round int, p cutPoint) (int, string) {
	t.Helper()
	ctx := context.Background()
	where := fmt.Sprintf("%s, seed %d, round %d (%s)", sc.name, sc.seed, round, p.desc)
	rng := rand.New(rand.NewPCG(sc.seed, fnv64(fmt.Sprint(sc.name, round))))
	dir := filepath.Join(sc.dir, strconv.Itoa(round))
	must(t, os.MkdirAll(dir, 0o755))
	b := &crashBox{fs: faultfs.New(), dir: dir, root: filepath.Join(dir, "updates"), sc: &crashScenario{reg: sc.reg}}
	// Provisioning: the config's binaries, the agent's folder, perch-boot's folder with the old
	// binary in slot A, committed, booted once.
	for _, m := range b.config(t).Modules {
		bin, err := os.ReadFile(m.Wasm)
		must(t, err)
		writeDurable(t, b.fs, m.Wasm, bin)
	}
	must(t, boot.MkdirAll(b.fs, b.root, 0o755))
	writeDurable(t, b.fs, crashSlotDir+"/A/perch", sc.old)
	loader := boot.NewFileLoader(b.fs, crashSlotDir)
	must(t, loader.Init(ctx, boot.SlotA))
	if s, err := loader.Boot(ctx); err != nil || s != boot.SlotA {
		t.Fatalf("%s: the fresh box booted %s, %v", where, s, err)
	}

	// The update, with the power cut at p: the install, the restart into the trial (perch-boot's
	// Boot), the judgement and the commit.
	st := b.openStore(t)
	fsys := &powerFS{FS: b.fs, onCut: func() { st.Close() }}
	tgt := &fakeTarget{}
	var onRestart func()
	switch p.at {
	case "swap":
		onRestart = fsys.cut
	case "health":
		tgt.onHealth = fsys.cut
	}
	start := b.fs.Ops()
	if p.op > 0 {
		b.fs.CutAfter(p.op)
	}
	var restarts []string
	err := sc.slotAgent(t, b, fsys, st, tgt, boot.SlotA, &restarts, onRestart).Once(ctx)
	if err == nil && !fsys.wasCut() {
		if len(restarts) != 1 {
			t.Fatalf("%s: the install asked for %d restarts: %q", where, len(restarts), restarts)
		}
		// The process restarts (no power cut: what it wrote stays); perch-boot boots the trial.
		var slot boot.Slot
		slot, err = boot.NewFileLoader(fsys, crashSlotDir).Boot(ctx)
		if err == nil {
			restarts = nil
			err = sc.slotAgent(t, b, fsys, st, tgt, slot, &restarts, nil).Once(ctx)
			if err == nil && !fsys.wasCut() && (slot != boot.SlotB || len(restarts) != 0) {
				t.Fatalf("%s: after the install perch-boot booted %s and the agent asked for restarts %q", where, slot, restarts)
			}
		}
	}
	ops := b.fs.Ops() - start
	cut := fsys.wasCut()
	if !cut && err != nil {
		t.Fatalf("%s: the update failed without a cut: %v", where, err)
	}
	if p.op > 0 && !cut && p.op <= ops {
		t.Fatalf("%s: the cut at op %d did not happen (%d ops)", where, p.op, ops)
	}
	st.Close()

	// Power on: perch-boot chooses a slot.
	b.fs.Reboot(rng)
	slot, err := loader.Boot(ctx)
	if err != nil {
		t.Fatalf("%s: perch-boot after the cut: %v", where, err)
	}
	runs := sc.check(t, where, b, slot, false)

	// Fresh starts complete the update, perch-boot booting between them.
	for i := 0; ; i++ {
		if i == 4 {
			t.Fatalf("%s: the update is not complete after %d starts", where, i)
		}
		st := b.openStore(t)
		restarts = nil
		err := sc.slotAgent(t, b, b.fs, st, &fakeTarget{}, slot, &restarts, nil).Once(ctx)
		st.Close()
		if err != nil {
			t.Fatalf("%s: after the reboot (running the %s binary), start %d failed: %v", where, runs, i+1, err)
		}
		if len(restarts) == 0 {
			break
		}
		if slot, err = loader.Boot(ctx); err != nil {
			t.Fatalf("%s: perch-boot at start %d: %v", where, i+2, err)
		}
	}
	if got := sc.check(t, where+", after the update completed", b, slot, true); got != "new" {
		t.Fatalf("%s: after the update completed the box runs the %s binary", where, got)
	}
	if names, err := b.fs.ReadDir(filepath.ToSlash(filepath.Join(b.root, "runtime"))); err != nil || len(names) != 0 {
		t.Fatalf("%s: after the update completed the download folder holds %v (%v)", where, names, err)
	}
	return ops, runs
}

// check is the invariant after perch-boot booted slot: its image is byte for byte the old
// binary or the new one, and the loader and the recorder agree. With done, the new binary must
// be committed in the loader and installed. It returns "old" or "new".
func (sc *slotCrash) check(t *testing.T, where string, b *crashBox, slot boot.Slot, done bool) string {
	t.Helper()
	ctx := context.Background()
	in := &slots.Installer{FS: b.fs, Dir: crashSlotDir, File: "perch"}
	img, err := readAll(b.fs, in.Path(slot))
	if err != nil {
		t.Fatalf("%s: perch-boot booted slot %s, which has no binary: %v", where, slot, err)
	}
	ls, err := boot.NewFileLoader(b.fs, crashSlotDir).Status(ctx)
	must(t, err)
	st := b.openStore(t)
	defer st.Close()
	all, err := st.InstalledAll(ctx)
	must(t, err)
	var row *store.Installed
	for i := range all {
		if all[i].Target == "runtime/perch" {
			row = &all[i]
		}
	}
	var committed int
	must(t, st.DB().QueryRowContext(ctx, `SELECT count(*) FROM update_journal WHERE target = 'runtime/perch' AND release = 2 AND step = 'committed'`).Scan(&committed))
	var last, detail string
	err = st.DB().QueryRowContext(ctx, `SELECT step, detail FROM update_journal WHERE target = 'runtime/perch' ORDER BY id DESC LIMIT 1`).Scan(&last, &detail)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	state := fmt.Sprintf("loader %+v, installed row %s, %d commits in the journal, last step %q (%s)", ls, rowString(row), committed, last, detail)
	switch {
	case bytes.Equal(img, sc.old):
		if row != nil || committed != 0 || done {
			t.Fatalf("%s: the box runs the old binary from slot %s, but %s", where, slot, state)
		}
		return "old"
	case !bytes.Equal(img, sc.newBin):
		t.Fatalf("%s: slot %s holds neither the old nor the new binary: %d bytes, sha256 %s", where, slot, len(img), hexSHA(img))
	case ls.Trial():
		// A trial: the release the journal last downloaded (a cut can take the staged step
		// after TryNext was durable), staged or began to judge, in this slot.
		ok := last == update.StepDownloaded || ((last == update.StepStaged || last == update.StepSwapped) && strings.HasPrefix(detail, "slot "+string(slot)+":"))
		if !ok || row != nil || committed != 0 || done {
			t.Fatalf("%s: the box runs the new binary on trial in slot %s, but %s", where, slot, state)
		}
	default:
		// Committed in the loader: installed, or the commit under way (MarkGood was durable,
		// the installed row not yet: the next start finishes it).
		installed := row != nil && row.Release == 2 && row.Path == in.Path(slot) && row.SHA256 == hexSHA(img) && committed == 1
		underway := row == nil && committed == 0 && last == update.StepSwapped && !done
		if !installed && !underway {
			t.Fatalf("%s: the box runs the new binary committed in slot %s, but %s", where, slot, state)
		}
	}
	return "new"
}
