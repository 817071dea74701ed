package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/update/boot"
)

// ModuleManifestAnnotation is the OCI manifest annotation that carries a Wasm module's Perch
// manifest (YAML): what it is, emits and needs. The OCI manifest is pinned by its TUF target,
// so the annotation is as trusted as the binary.
const ModuleManifestAnnotation = "dev.perch.module.manifest"

// Agent defaults.
const (
	DefaultPoll         = 5 * time.Minute
	DefaultHealthWindow = 30 * time.Second
	healthEvery         = 50 * time.Millisecond
	maxManifestBytes    = 1 << 20
)

// Journal steps (update_journal.step).
const (
	StepFound      = "found"
	StepDownloaded = "downloaded"
	StepStaged     = "staged"
	StepSwapped    = "swapped"
	StepCommitted  = "committed"
	StepCollected  = "collected" // superseded files removed after a commit (see collect)
	StepRolledBack = "rolled_back"
	StepFailed     = "failed"
	StepSkipped    = "skipped"
)

// Target is what the agent updates: the running pipeline (*runtime.Runtime).
type Target interface {
	Swap(ctx context.Context, module string, bin []byte, man *config.Manifest) (runtime.SwapReport, error)
	SwapModel(ctx context.Context, model, cardPath string) (runtime.ModelSwapReport, error)
	Health(name string) (runtime.Health, error) // a module's or a model's
}

// Config configures an [Agent].
type Config struct {
	Device   string // this box's id: its rollout bucket
	Group    string // the device group its deployments name
	Hardware string // what targets must list: an architecture or board id
	// Registry is the registry's base URL (OCI API under /v2/, TUF metadata under /tuf/).
	Registry string
	// Dir holds the agent's files: the TUF cache and the installed artifacts.
	Dir string
	// Root is the TUF root embedded at provisioning.
	Root []byte
	// Clock is the trusted time for metadata expiry; nil: the system clock (see trust).
	Clock trust.Clock
	// HTTP sends every request; nil: a client without an overall timeout (the fetcher's
	// body-read timeout bounds a stalled download).
	HTTP *http.Client
	// Poll is the time between polls; HealthWindow how long a swapped module must stay healthy
	// before the update is committed.
	Poll, HealthWindow time.Duration
	Fetcher            Fetcher
	Logger             *slog.Logger
	// FS holds the agent's downloads under Dir and the module binaries the config names (every
	// write, fsync, rename and removal goes through it, and every read of a binary); nil:
	// boot.OSFS. Tests cut the power on it (package faultfs). The TUF cache under Dir/tuf is
	// go-tuf's own and uses the operating system's files.
	FS boot.FS
	// Runtime and Firmware, if set, are the A/B slots of the perch binary and of the firmware,
	// which deployments' runtime: and firmware: targets update (agent_slots.go); nil: this box
	// refuses such deployments.
	Runtime, Firmware *Slots
}

// Agent keeps the box's modules at what the signed deployment for its group says: it polls
// the registry (or is nudged), refreshes the TUF metadata, downloads what is new with resume,
// verifies it against the trusted targets, swaps it in, watches its health for a window, and
// commits it or rolls it back, journaling each step in the recorder before the next. It is
// safe for concurrent use; updates run one at a time.
type Agent struct {
	cfg   Config
	trust *trust.Client
	rt    Target
	st    *store.Store
	log   *slog.Logger
	nudge chan struct{}

	mu      sync.Mutex // one update at a time; guards running
	running map[string]running
	models  map[string]runningModel // what each model node runs (agent_model.go); guarded by mu

	restarting string // why this process asked its slot set for a restart; "" if it did not (agent_slots.go)
}

// running is what a module runs now: what a rollback restores.
type running struct {
	bin     []byte
	man     config.Manifest
	target  string
	release uint64
}

// New returns an agent for the modules of cfg, which run in rt and record to st. A module's
// current binary is the one its config names (ApplyInstalled has already put the installed
// ones there).
func New(ac Config, cfg *config.Config, rt Target, st *store.Store) (*Agent, error) {
	if ac.Registry == "" || ac.Dir == "" || len(ac.Root) == 0 || ac.Device == "" || ac.Group == "" || ac.Hardware == "" {
		return nil, errors.New("update: the agent needs a registry, a folder, a root, a device id, a group and a hardware id")
	}
	if ac.Poll <= 0 {
		ac.Poll = DefaultPoll
	}
	if ac.HealthWindow <= 0 {
		ac.HealthWindow = DefaultHealthWindow
	}
	if ac.HTTP == nil {
		ac.HTTP = &http.Client{}
	}
	if ac.Fetcher.Client == nil {
		ac.Fetcher.Client = ac.HTTP
	}
	if ac.Logger == nil {
		ac.Logger = slog.New(slog.DiscardHandler)
	}
	tc, err := trust.NewClient(trust.ClientConfig{Root: ac.Root, CacheDir: filepath.Join(ac.Dir, "tuf"),
		BaseURL: strings.TrimSuffix(ac.Registry, "/") + "/tuf/", HTTPClient: ac.HTTP, Clock: ac.Clock})
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: ac, trust: tc, rt: rt, st: st, log: ac.Logger, nudge: make(chan struct{}, 1), running: map[string]running{}}
	installed, err := st.InstalledAll(context.Background())
	if err != nil {
		return nil, err
	}
	for i := range cfg.Modules {
		m := &cfg.Modules[i]
		bin, err := readFile(a.fs(), m.Wasm)
		if err != nil {
			return nil, fmt.Errorf("update: module %s: %w", m.Name, err)
		}
		r := running{bin: bin, man: m.Manifest}
		for _, in := range installed {
			if in.Kind == trust.KindModule && in.Name == m.Name && in.Path == m.Wasm {
				r.target, r.release = in.Target, in.Release
			}
		}
		a.running[m.Name] = r
	}
	a.models = runningModels(cfg, installed)
	return a, nil
}

// Nudge makes the agent poll now (an MQTT command does this). It does not block.
func (a *Agent) Nudge() {
	select {
	case a.nudge <- struct{}{}:
	default:
	}
}

// Run polls every Poll, and when nudged, until ctx is done; it returns nil then. A failed poll
// is logged and recorded, and tried again at the next.
func (a *Agent) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Poll)
	defer t.Stop()
	for {
		if err := a.Once(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("update: poll failed", "err", err)
			a.event(ctx, "update.poll_failed", "", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-a.nudge:
		}
	}
}

// Once polls once: it refreshes the trusted metadata, takes the newest deployment for the
// box's group, and if the box is in its stage, updates each module whose target is newer than
// what it runs. With A/B slots (Config.Runtime, Config.Firmware) it first judges a trial slot
// that is running, and then installs a newer runtime or firmware target (agent_slots.go).
func (a *Agent) Once(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	// A/B slot trials are judged first, without the network (agent_slots.go).
	if busy, err := a.resumeSlots(ctx); busy || err != nil {
		return err
	}
	if err := a.trust.Refresh(ctx); err != nil {
		return err
	}
	d, dc, err := a.deployment(ctx)
	if err != nil || d == nil {
		return err
	}
	if !d.Member(a.cfg.Group, a.cfg.Device) {
		return a.journalOnce(ctx, store.UpdateStep{Target: d.Name, Kind: trust.KindDeployment, Version: dc.Version, Release: dc.Release,
			Digest: dc.Digest, Step: StepSkipped, Detail: fmt.Sprintf("not in stage %d%% (bucket %d)", d.Stage, Bucket(a.cfg.Device, d.Name))})
	}
	var errs []error
	for _, m := range d.Modules {
		if err := a.updateModule(ctx, m.Module, m.Target); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range d.Models {
		if err := a.updateModel(ctx, m.Model, m.Target); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, a.updateSlots(ctx, d))
	return errors.Join(errs...)
}

// deployment returns the newest deployment for the box's group among the trusted targets, or
// nil if there is none.
func (a *Agent) deployment(ctx context.Context) (*Deployment, trust.Custom, error) {
	var best *Deployment
	var bestC trust.Custom
	for _, name := range a.trust.Names() {
		c, info, err := a.trust.Target(name)
		if err != nil || c.Kind != trust.KindDeployment || (best != nil && c.Release <= bestC.Release) {
			continue
		}
		files, _, err := a.fetch(ctx, name, c, info, filepath.Join(a.cfg.Dir, "deployments"))
		if err != nil {
			return nil, c, err
		}
		data, err := readBlob(a.fs(), files[0])
		if err != nil {
			return nil, c, err
		}
		d, err := ParseDeployment(data)
		if err != nil {
			return nil, c, fmt.Errorf("update: target %s: %w", name, err)
		}
		if d.Group == a.cfg.Group {
			best, bestC = d, c
		}
	}
	return best, bestC, nil
}

// updateModule brings module to target's release, if it is newer than what runs.
func (a *Agent) updateModule(ctx context.Context, module, target string) error {
	cur, ok := a.running[module]
	if !ok {
		return fmt.Errorf("update: the deployment names module %q, which this box's config does not have", module)
	}
	c, info, err := a.trust.Target(target)
	if err != nil {
		return err
	}
	u := a.attempt(module, target, c) // attempt.go: the steps modules and models share
	dir := filepath.Join(a.cfg.Dir, "modules", module)
	if c.Release <= cur.release && cur.target == target {
		// Up to date; finish a collect that a power cut interrupted.
		a.collectStale(ctx, u.step, dir, cur)
		return nil
	}
	var installed uint64
	if cur.target == target {
		installed = cur.release
	}
	files, annotations, skip, err := u.download(ctx, trust.KindModule, installed, info, dir)
	if skip || err != nil {
		return err
	}
	man, err := config.ParseManifest(target, []byte(annotations[ModuleManifestAnnotation]))
	if err != nil {
		return u.fail(ctx, fmt.Errorf("the artifact's module manifest: %w", err))
	}
	// Read back and checked against its name (its SHA-256): the bytes swapped in and recorded
	// are the bytes the registry signed, whatever happened on the disk since the download.
	bin, err := readBlob(a.fs(), files[0])
	if err != nil {
		return u.fail(ctx, err)
	}
	u.to(ctx, StepStaged, "")
	rep, err := a.rt.Swap(ctx, module, bin, man)
	if err != nil {
		return u.fail(ctx, err)
	}
	swappedAt := time.Now()
	u.to(ctx, StepSwapped, fmt.Sprintf("%s -> %s, compile %v, gap %v, state handed over: %d bytes", rep.OldVersion, rep.NewVersion, rep.Compile, rep.Gap, rep.Handoff))
	if err := u.settle(ctx, swappedAt, cur.man.Version, func(ctx context.Context) error {
		_, err := a.rt.Swap(ctx, module, cur.bin, &cur.man)
		return err
	}); err != nil {
		return err
	}
	sum := sha256.Sum256(bin)
	if err := a.st.Install(ctx, store.Installed{Target: target, Kind: c.Kind, Name: module, Version: c.Version, Release: c.Release,
		Digest: c.Digest, Path: files[0], SHA256: hex.EncodeToString(sum[:]), Manifest: annotations[ModuleManifestAnnotation]},
		fmt.Sprintf("healthy for %v", a.cfg.HealthWindow)); err != nil {
		return u.fail(ctx, err)
	}
	a.running[module] = running{bin: bin, man: *man, target: target, release: c.Release}
	u.committed(ctx)
	// Only now, with the installed row on disk, may the superseded binaries go.
	a.collect(ctx, u.step, dir, filepath.Base(files[0]))
	return nil
}

// watch watches module's health for the health window and returns why it is unhealthy, or ""
// when it stayed healthy: up, with no fault and no error reported.
func (a *Agent) watch(ctx context.Context, module string) string {
	deadline := time.Now().Add(a.cfg.HealthWindow)
	for {
		h, err := a.rt.Health(module)
		switch {
		case err != nil:
			return err.Error()
		case h.Faults > 0:
			return fmt.Sprintf("%d faults", h.Faults)
		case h.Errors > 0:
			return fmt.Sprintf("%d errors reported", h.Errors)
		case h.Quarantined:
			return "quarantined"
		}
		if time.Now().After(deadline) {
			if !h.Up {
				return "not running"
			}
			return ""
		}
		select {
		case <-ctx.Done():
			return "interrupted: " + ctx.Err().Error()
		case <-time.After(healthEvery):
		}
	}
}

// fetch downloads the artifact that target pins into dir: the OCI manifest, checked against
// the target's length and hashes, then each layer, resumably, checked against the manifest's
// descriptors. It returns the layer files in order and the manifest's annotations.
func (a *Agent) fetch(ctx context.Context, target string, c trust.Custom, info trust.TargetInfo, dir string) ([]string, map[string]string, error) {
	fsys := a.fs()
	// Each folder created is synced into its parent: a file fsynced in it survives a power cut.
	if err := boot.MkdirAll(fsys, dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("update: %s: %w", target, err)
	}
	fetcher := a.cfg.Fetcher
	if fetcher.FS == nil {
		fetcher.FS = fsys
	}
	base := strings.TrimSuffix(a.cfg.Registry, "/") + "/v2/" + c.Repository
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/manifests/"+c.Digest, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := a.cfg.HTTP.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("update: %s: manifest: %w", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("update: %s: manifest: status %s", target, resp.Status)
	}
	// At most one byte more than the target says: endless data stops there.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, min(info.Length, maxManifestBytes)+1))
	if err != nil {
		return nil, nil, fmt.Errorf("update: %s: manifest: %w", target, err)
	}
	if err := trust.VerifyReader(strings.NewReader(string(raw)), info); err != nil {
		return nil, nil, fmt.Errorf("update: %s: manifest: %w", target, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, fmt.Errorf("update: %s: manifest: %w", target, err)
	}
	if len(m.Layers) == 0 {
		return nil, nil, fmt.Errorf("update: %s: the manifest has no layers", target)
	}
	var files []string
	for i, l := range m.Layers {
		hexDigest, ok := strings.CutPrefix(string(l.Digest), "sha256:")
		if !ok || len(hexDigest) != 64 || strings.ContainsAny(hexDigest, "./") {
			return nil, nil, fmt.Errorf("update: %s: layer %d: digest %q is not sha256", target, i, l.Digest)
		}
		dst := filepath.Join(dir, hexDigest)
		if _, err := fetcher.Fetch(ctx, base+"/blobs/"+string(l.Digest), l.Size, string(l.Digest), dst); err != nil {
			return nil, nil, fmt.Errorf("update: %s: layer %d: %w", target, i, err)
		}
		files = append(files, dst)
	}
	return files, m.Annotations, nil
}

// journal appends a step; a journal that cannot be written is logged (the step still runs:
// the recorder failing must not stop an update that keeps the box safe).
func (a *Agent) journal(ctx context.Context, st store.UpdateStep) {
	if err := a.st.Journal(context.WithoutCancel(ctx), st); err != nil {
		a.log.Error("update: journal", "err", err)
	}
}

// journalOnce journals st unless the target's last step is already the same.
func (a *Agent) journalOnce(ctx context.Context, st store.UpdateStep) error {
	last, err := a.st.LastSteps(ctx)
	if err != nil {
		return err
	}
	for _, l := range last {
		if l.Target == st.Target && l.Step == st.Step && l.Release == st.Release {
			return nil
		}
	}
	a.journal(ctx, st)
	return nil
}

func (a *Agent) event(ctx context.Context, kind, module, msg string) {
	a.log.Info(msg, "event", kind, "module", module)
	if err := a.st.Event(context.WithoutCancel(ctx), store.Event{TimeNS: time.Now().UnixNano(), Kind: kind, Module: module, Message: msg}); err != nil {
		a.log.Error("update: event", "err", err)
	}
}

// ApplyInstalled points the modules of cfg at the binaries the agent installed and committed
// (the installed table of the recorder at cfg.Store.Path), once each file is re-verified by its
// SHA-256: a file that fails (a power cut, a disk error) is skipped with a warning and the
// config's own binary runs. It is called before the runtime starts. It reads the binaries
// from the operating system's files; see [ApplyInstalledFS].
func ApplyInstalled(cfg *config.Config, log *slog.Logger) error {
	return ApplyInstalledFS(cfg, boot.OSFS{}, log)
}

// ApplyInstalledFS is [ApplyInstalled] reading the installed binaries through fsys (the
// agent's Config.FS). The recorder is opened from the operating system's files.
func ApplyInstalledFS(cfg *config.Config, fsys boot.FS, log *slog.Logger) error {
	if _, err := os.Stat(cfg.Store.Path); err != nil {
		return nil // a new box: nothing installed
	}
	db, err := store.OpenReadOnly(cfg.Store.Path)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name, path, sha256, manifest, version FROM installed WHERE kind = 'module'`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil // a recorder from before migration 3
		}
		return fmt.Errorf("update: installed: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, path, sum, manifest, version string
		if err := rows.Scan(&name, &path, &sum, &manifest, &version); err != nil {
			return fmt.Errorf("update: installed: %w", err)
		}
		m := moduleNamed(cfg, name)
		if m == nil {
			continue
		}
		if err := verifyFileSHA(fsys, path, sum); err != nil {
			log.Warn("update: an installed module does not verify; running the config's", "module", name, "err", err)
			continue
		}
		man, err := config.ParseManifest(path, []byte(manifest))
		if err != nil {
			log.Warn("update: an installed module's manifest does not parse; running the config's", "module", name, "err", err)
			continue
		}
		if gerrs := config.CheckGrants(&m.Grants, &man.Needs); len(gerrs) > 0 || man.Kind != m.Manifest.Kind {
			log.Warn("update: an installed module no longer fits its config; running the config's", "module", name)
			continue
		}
		m.Wasm, m.Manifest = path, *man
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return applyInstalledModels(cfg, db, fsys, log) // agent_model.go
}

func moduleNamed(cfg *config.Config, name string) *config.Module {
	for i := range cfg.Modules {
		if cfg.Modules[i].Name == name {
			return &cfg.Modules[i]
		}
	}
	return nil
}

// verifyFileSHA checks the SHA-256 (hex) of a file of fsys.
func verifyFileSHA(fsys boot.FS, path, want string) error {
	f, err := fsys.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %s, want %s: %w", path, got, want, ErrDigest)
	}
	return nil
}
