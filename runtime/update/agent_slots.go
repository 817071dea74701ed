package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/update/slots"
)

// Slots is one set of A/B slots the agent installs into: the perch binary itself
// ([Config].Runtime) or the firmware ([Config].Firmware). Set the fields before [New] and do
// not change them after.
//
// The cycle, journaled step by step under the target's name (see [Agent.Once]):
//
//	found → downloaded → staged (the idle slot is written, verified, and the loader's
//	TryNext is durable) → Restart → [the box starts again from the new slot] →
//	swapped (the trial booted; the whole runtime is watched for the health window) →
//	committed (MarkGood, then the installed row) | rolled_back (Restart without MarkGood:
//	the loader falls back to the committed slot once the trial's boots run out)
//
// A trial is judged before the agent refreshes any metadata, so that a box whose registry is
// unreachable still commits or rolls back. A release that was rolled back is never tried
// again; the next release is.
type Slots struct {
	// Loader chooses the slot at boot: a boot.FileLoader on the perch-boot folder for the
	// runtime; the firmware's bootloader (boot.UBoot, boot.RPiTryboot, ...).
	Loader boot.Loader
	// FS is where the slots are written; nil means the agent's [Config].FS (itself boot.OSFS{}
	// by default), so that one faultfs in a test holds the downloads and the slots alike. The
	// Loader has its own FS (boot.NewFileLoader's): give it the same one for a test.
	FS boot.FS
	// Dir holds the slots; File, if set, makes each slot a folder Dir/<slot>/File (the perch
	// binary: "perch"), else each slot is the file Dir/<slot> (see slots.Installer).
	Dir, File string
	// Perm is the image file's permission bits (0o755 for the perch binary); 0 means 0o644.
	Perm fs.FileMode
	// Tries is the boot counter a new slot gets (1..boot.MaxTries); 0 means slots.DefaultTries.
	Tries int
	// Running is the slot the running perch binary was started from (perch-boot's PERCH_SLOT),
	// for the runtime only: it must be the slot the loader says booted, or the agent refuses
	// to install or commit (perch was not started by perch-boot). Ignored for firmware.
	Running boot.Slot
	// Restart makes the box start again from the slot the loader chooses: for the runtime, a
	// clean shutdown and an exit that perch-boot's service restarts; for firmware, a reboot.
	// The agent calls it from Once after a slot was staged or a trial was judged unhealthy,
	// with the reason; it must not wait for the agent to return. After it, the agent does
	// nothing more until the process ends. nil: the agent journals and waits for the next
	// start to happen some other way.
	Restart func(ctx context.Context, reason string) error
}

// kindSlots is one configured slot set and the target kind it takes.
type kindSlots struct {
	kind string
	s    *Slots
}

// slotSets returns the configured slot sets, runtime first.
func (a *Agent) slotSets() []kindSlots {
	var out []kindSlots
	if a.cfg.Runtime != nil {
		out = append(out, kindSlots{trust.KindRuntime, a.cfg.Runtime})
	}
	if a.cfg.Firmware != nil {
		out = append(out, kindSlots{trust.KindFirmware, a.cfg.Firmware})
	}
	return out
}

// installer returns the slot installer of s, on s.FS or else on agentFS.
func (s *Slots) installer(agentFS boot.FS) *slots.Installer {
	fsys := s.FS
	if fsys == nil {
		fsys = agentFS
	}
	return &slots.Installer{FS: fsys, Loader: s.Loader, Dir: s.Dir, File: s.File, Perm: s.Perm, Tries: s.Tries}
}

// status reads the loader and, for the runtime, checks that the running binary is the slot
// the loader booted.
func (k kindSlots) status(ctx context.Context) (boot.Status, error) {
	st, err := k.s.Loader.Status(ctx)
	if err != nil {
		return st, fmt.Errorf("update: %s slots: %w", k.kind, err)
	}
	if k.kind == trust.KindRuntime && k.s.Running != st.Booted {
		if k.s.Running == boot.NoSlot {
			return st, fmt.Errorf("update: runtime slots: perch is not running from a slot (PERCH_SLOT unset): start it with perch-boot -dir %s", k.s.Dir)
		}
		return st, fmt.Errorf("update: runtime slots: perch runs from slot %s, but the loader booted slot %s: start it with perch-boot -dir %s", k.s.Running, st.Booted, k.s.Dir)
	}
	return st, nil
}

// Journal details of the slot steps start with "slot X:", so that the next start knows which
// slot a staged release went to.
func slotDetail(slot boot.Slot, format string, args ...any) string {
	return fmt.Sprintf("slot %s: ", slot) + fmt.Sprintf(format, args...)
}

func slotOfDetail(detail string) boot.Slot {
	rest, ok := strings.CutPrefix(detail, "slot ")
	if !ok || len(rest) < 2 || rest[1] != ':' {
		return boot.NoSlot
	}
	s, err := boot.ParseSlot(rest[:1])
	if err != nil {
		return boot.NoSlot
	}
	return s
}

// lastOfKind returns the newest journal step of any target of kind.
func (a *Agent) lastOfKind(ctx context.Context, kind string) (store.UpdateStep, bool, error) {
	last, err := a.st.LastSteps(ctx)
	if err != nil {
		return store.UpdateStep{}, false, err
	}
	for _, l := range last { // newest first
		if l.Kind == kind {
			return l, true, nil
		}
	}
	return store.UpdateStep{}, false, nil
}

// resumeSlots settles what the slot sets left at the last start, before anything else in a
// poll: it judges a running trial (watch, then commit or roll back), records a fallback the
// loader made, and finishes a commit a power cut interrupted. It returns busy when the agent
// must do nothing else in this process: a restart was asked for, or a slot set is in a state
// it cannot act on (said in the error).
func (a *Agent) resumeSlots(ctx context.Context) (busy bool, err error) {
	if a.restarting != "" {
		return true, nil
	}
	for _, k := range a.slotSets() {
		busy, err := a.resumeSlot(ctx, k)
		if busy || err != nil {
			return busy, err
		}
	}
	return false, nil
}

func (a *Agent) resumeSlot(ctx context.Context, k kindSlots) (bool, error) {
	last, ok, err := a.lastOfKind(ctx, k.kind)
	if err != nil {
		return false, err
	}
	pending := ok && (last.Step == StepStaged || last.Step == StepSwapped || last.Step == StepRolledBack)
	st, err := k.status(ctx)
	if err != nil {
		if st.Trial() {
			// A trial we cannot judge: do nothing else; the loader rolls it back if the box
			// restarts, and commits only with MarkGood.
			return true, err
		}
		return false, nil // said by updateSlot when a deployment asks for this kind
	}
	staged := boot.NoSlot
	if pending {
		staged = slotOfDetail(last.Detail)
	}
	step := last
	switch {
	case st.Trial() && last.Step == StepRolledBack && staged == st.Booted:
		// Judged unhealthy at an earlier boot of this trial: spend its boots at once.
		a.restart(ctx, k, step, fmt.Sprintf("slot %s was judged unhealthy at an earlier boot; restarting until the loader falls back to slot %s (%d boots left)",
			st.Booted, st.Fallback, st.TriesLeft))
		return true, nil
	case st.Trial():
		// The trial is the release the journal last staged (or downloaded: a power cut can
		// take the staged step after TryNext was durable). Anything else is a trial this
		// agent did not start: judged all the same, but not recorded as installed.
		if !ok || !(last.Step == StepDownloaded || (pending && staged == st.Booted)) {
			step = store.UpdateStep{Target: k.kind + " (untracked trial)", Kind: k.kind}
		}
		return a.judgeTrial(ctx, k, step, st)
	case pending && last.Step != StepRolledBack && staged == st.Booted && st.Fallback == st.Booted:
		// MarkGood was durable, the installed row not: finish the commit.
		return false, a.commitSlot(ctx, k, step, st.Booted, "committed before a restart")
	case pending && last.Step != StepRolledBack && staged.Valid() && staged != st.Booted:
		// The trial was abandoned: its boots ran out (the loader's RolledBack), or the box
		// started again without taking it (rpi-tryboot's flag is one-shot; a restart that
		// bypassed perch-boot). Record it once and clear the loader's leftovers.
		why := fmt.Sprintf("the loader booted committed slot %s again", st.Booted)
		switch {
		case st.RolledBack == staged:
			why += fmt.Sprintf(": slot %s's boots ran out before it was committed", staged)
		case st.Trying == staged:
			why += fmt.Sprintf(": slot %s's trial was not taken (the box restarted without trying it)", staged)
		}
		if st.Trying != boot.NoSlot || st.RolledBack != boot.NoSlot {
			if err := k.s.Loader.MarkGood(ctx); err != nil {
				return false, fmt.Errorf("update: %s slots: clear the abandoned trial: %w", k.kind, err)
			}
		}
		step.Step, step.Detail = StepRolledBack, slotDetail(staged, "%s; never retried: the next release will be", why)
		a.journal(ctx, step)
		a.event(ctx, "update.rolled_back", "", fmt.Sprintf("%s %s %s: %s", k.kind, step.Target, step.Version, step.Detail))
	}
	return false, nil
}

// judgeTrial watches the whole runtime for the health window in a trial slot, then commits
// it, or journals rolled_back and restarts without MarkGood so that the loader falls back.
func (a *Agent) judgeTrial(ctx context.Context, k kindSlots, step store.UpdateStep, st boot.Status) (bool, error) {
	slot := st.Booted
	start := time.Now()
	step.Step, step.Detail = StepSwapped, slotDetail(slot, "booted on trial (%d more boots before the fallback to %s); watching the runtime's health for %v",
		st.TriesLeft, st.Fallback, a.cfg.HealthWindow)
	a.journal(ctx, step)
	why := a.watchAll(ctx)
	if ctx.Err() != nil {
		return true, nil // shutting down: the next start judges it again (it spends a boot)
	}
	if why != "" {
		step.Step, step.Detail = StepRolledBack, slotDetail(slot, "%s after %v; restarting without committing: the loader falls back to slot %s",
			why, time.Since(start).Round(time.Millisecond), st.Fallback)
		a.journal(ctx, step)
		a.event(ctx, "update.rolled_back", "", fmt.Sprintf("%s %s %s: %s", k.kind, step.Target, step.Version, step.Detail))
		a.restart(ctx, k, step, step.Detail)
		return true, nil
	}
	if err := k.s.Loader.MarkGood(ctx); err != nil {
		step.Step, step.Detail = StepFailed, slotDetail(slot, "commit: %v", err)
		a.journal(ctx, step)
		return true, fmt.Errorf("update: %s %s: commit slot %s: %w", k.kind, step.Target, slot, err)
	}
	return false, a.commitSlot(ctx, k, step, slot, fmt.Sprintf("healthy for %v", a.cfg.HealthWindow))
}

// commitSlot records what slot now holds as installed (with the committed journal step); a
// trial the agent did not start (release 0) is only journaled.
func (a *Agent) commitSlot(ctx context.Context, k kindSlots, step store.UpdateStep, slot boot.Slot, why string) error {
	if step.Release == 0 {
		step.Step, step.Detail = StepCommitted, slotDetail(slot, "%s; committed (not recorded as installed: no release of it was staged by this agent)", why)
		a.journal(ctx, step)
		return nil
	}
	in := k.s.installer(a.fs())
	path := in.Path(slot)
	sum, err := hashSlot(in.FS, path)
	if err != nil {
		return fmt.Errorf("update: %s %s: committed slot %s: %w", k.kind, step.Target, slot, err)
	}
	if err := a.st.Install(ctx, store.Installed{Target: step.Target, Kind: k.kind, Name: k.kind, Version: step.Version, Release: step.Release,
		Digest: step.Digest, Path: path, SHA256: sum}, slotDetail(slot, "%s; committed", why)); err != nil {
		return err
	}
	// A download whose removal after staging a power cut lost is not needed now either.
	if _, err := removeAllBut(a.fs(), filepath.ToSlash(filepath.Join(a.cfg.Dir, k.kind))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("update: remove old downloads", "kind", k.kind, "err", err)
	}
	a.event(ctx, "update.committed", "", fmt.Sprintf("%s %s %s (release %d) committed in slot %s", k.kind, step.Target, step.Version, step.Release, slot))
	return nil
}

func hashSlot(fsys boot.FS, path string) (string, error) {
	r, err := fsys.Open(path)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// watchAll watches every module of the runtime for the health window and returns why the
// runtime is unhealthy, or "" when every module stayed free of faults, errors and quarantine
// and is up at the end.
func (a *Agent) watchAll(ctx context.Context) string {
	names := make([]string, 0, len(a.running))
	for n := range a.running {
		names = append(names, n)
	}
	slices.Sort(names)
	deadline := time.Now().Add(a.cfg.HealthWindow)
	for {
		end := time.Now().After(deadline)
		for _, m := range names {
			h, err := a.rt.Health(m)
			switch {
			case err != nil:
				return err.Error()
			case h.Faults > 0:
				return fmt.Sprintf("module %s: %d faults", m, h.Faults)
			case h.Errors > 0:
				return fmt.Sprintf("module %s: %d errors reported", m, h.Errors)
			case h.Quarantined:
				return fmt.Sprintf("module %s: quarantined", m)
			case end && !h.Up:
				return fmt.Sprintf("module %s: not running", m)
			}
		}
		if end {
			return ""
		}
		select {
		case <-ctx.Done():
			return "interrupted: " + ctx.Err().Error()
		case <-time.After(healthEvery):
		}
	}
}

// restart asks the slot set to start the box again, once per process.
func (a *Agent) restart(ctx context.Context, k kindSlots, step store.UpdateStep, reason string) {
	a.restarting = reason
	what := "restart"
	if k.kind == trust.KindFirmware {
		what = "reboot"
	}
	a.event(ctx, "update."+what, "", fmt.Sprintf("%s %s %s: %s", k.kind, step.Target, step.Version, reason))
	if k.s.Restart == nil {
		a.log.Warn("update: a "+what+" is needed; nothing is wired to do it", "kind", k.kind, "reason", reason)
		return
	}
	if err := k.s.Restart(ctx, reason); err != nil {
		a.log.Error("update: "+what+" failed", "kind", k.kind, "err", err)
		a.event(ctx, "update.failed", "", fmt.Sprintf("%s %s: %s failed: %v", k.kind, step.Target, what, err))
	}
}

// updateSlots installs the deployment's runtime and firmware targets, one at a time: after a
// slot is staged, the box restarts before anything else.
func (a *Agent) updateSlots(ctx context.Context, d *Deployment) error {
	var errs []error
	for _, w := range [...]struct{ kind, target string }{{trust.KindRuntime, d.Runtime}, {trust.KindFirmware, d.Firmware}} {
		if w.target == "" {
			continue
		}
		errs = append(errs, a.updateSlot(ctx, w.kind, w.target))
		if a.restarting != "" {
			break
		}
	}
	return errors.Join(errs...)
}

// updateSlot brings a slot set to target's release, if it is newer than the committed one and
// was not rolled back before: check, download, install into the idle slot, restart.
func (a *Agent) updateSlot(ctx context.Context, kind, target string) error {
	c, info, err := a.trust.Target(target)
	if err != nil {
		return err
	}
	step := store.UpdateStep{Target: target, Kind: c.Kind, Version: c.Version, Release: c.Release, Digest: c.Digest}
	var k kindSlots
	for _, x := range a.slotSets() {
		if x.kind == kind {
			k = x
		}
	}
	if k.s == nil {
		return a.refuseOnce(ctx, step, fmt.Errorf("update: the deployment names %s target %q, but this box's config has no update.%s section: refused", kind, target, kind))
	}
	installed := trust.Custom{Kind: kind}
	rows, err := a.st.InstalledAll(ctx)
	if err != nil {
		return err
	}
	for _, in := range rows {
		if in.Kind == kind && in.Target == target {
			installed.Release = in.Release
		}
	}
	if c.Release <= installed.Release && c.Kind == kind {
		return nil // up to date
	}
	if bad, err := a.rolledBack(ctx, target, c.Release); err != nil || bad {
		return err // rolled back once: never again
	}
	if err := a.trust.Check(target, installed, a.cfg.Hardware); err != nil {
		return a.refuseOnce(ctx, step, err)
	}
	st, err := k.status(ctx)
	if err != nil {
		return a.refuseOnce(ctx, step, err)
	}
	fail := func(err error) error {
		step.Step, step.Detail = StepFailed, err.Error()
		a.journal(ctx, step)
		a.event(ctx, "update.failed", "", fmt.Sprintf("%s %s %s: %v", kind, target, c.Version, err))
		return err
	}
	step.Step, step.Detail = StepFound, ""
	a.journal(ctx, step)
	dir := filepath.Join(a.cfg.Dir, kind)
	files, _, err := a.fetch(ctx, target, c, info, dir)
	if err != nil {
		return fail(err)
	}
	if len(files) != 1 {
		return fail(fmt.Errorf("update: %s: a %s artifact is one file, this one has %d", target, kind, len(files)))
	}
	// Downloads of earlier releases whose removal after staging a power cut lost go now
	// (not journaled: they cost disk space, not correctness).
	if _, err := removeAllBut(a.fs(), filepath.ToSlash(dir), filepath.Base(files[0])); err != nil {
		a.log.Warn("update: remove old downloads", "dir", dir, "err", err)
	}
	step.Step = StepDownloaded
	a.journal(ctx, step)
	slot := st.Booted.Other()
	in := k.s.installer(a.fs())
	if err := in.Recover(ctx); err != nil {
		return fail(err)
	}
	// The file is named by its SHA-256, which fetch checked: it is checked again here, as
	// every cached file is before use (and this pass gives its size, which boot.FS does not
	// stat), and Install checks the slot against it after writing.
	size, err := verifyBlob(a.fs(), files[0])
	if err != nil {
		return fail(err)
	}
	f, err := a.fs().Open(files[0])
	if err != nil {
		return fail(err)
	}
	err = in.Install(ctx, slot, f, size, filepath.Base(files[0]))
	f.Close()
	if err != nil {
		return fail(err)
	}
	tries := in.Tries
	if tries == 0 {
		tries = slots.DefaultTries
	}
	step.Step, step.Detail = StepStaged, slotDetail(slot, "written and verified (%d bytes); the loader boots it next, %d boots to pass the health window", size, tries)
	a.journal(ctx, step)
	// The slot holds the verified copy now: the download goes (not journaled as collected:
	// the staged step must stay the kind's last, resumeSlot reads it at the next start). A
	// power cut that loses the removal leaves a file the next download of this kind removes.
	if err := a.removeDurable(files[0]); err != nil {
		a.log.Warn("update: remove a staged download", "file", files[0], "err", err)
	}
	a.restart(ctx, k, step, fmt.Sprintf("%s %s staged in slot %s", kind, c.Version, slot))
	return nil
}

// verifyBlob reads the content-addressed file name through and checks its SHA-256 against its
// name (as readBlob, without holding the bytes: a firmware image can be large); it returns
// its size in bytes.
func verifyBlob(fsys boot.FS, name string) (int64, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, fmt.Errorf("update: read %s: %w", name, err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), filepath.Base(name); got != want {
		return 0, fmt.Errorf("update: %s holds %d bytes with sha256:%s, not what its name says: %w", name, n, got, ErrDigest)
	}
	return n, nil
}

// removeDurable removes the file name through the agent's FS and syncs its folder.
func (a *Agent) removeDurable(name string) error {
	if err := a.fs().Remove(filepath.ToSlash(name)); err != nil {
		return err
	}
	return a.fs().SyncDir(slashDir(name))
}

// refuseOnce journals a refusal as failed, and returns it, unless the target's last step is
// already that refusal (so a refused deployment is reported once, not at every poll).
func (a *Agent) refuseOnce(ctx context.Context, step store.UpdateStep, err error) error {
	last, lerr := a.st.LastSteps(ctx)
	if lerr != nil {
		return lerr
	}
	for _, l := range last {
		if l.Target == step.Target && l.Step == StepFailed && l.Release == step.Release && l.Detail == err.Error() {
			return nil
		}
	}
	step.Step, step.Detail = StepFailed, err.Error()
	a.journal(ctx, step)
	a.event(ctx, "update.refused", "", fmt.Sprintf("%s %s: %v", step.Target, step.Version, err))
	return err
}
