package update

import (
	"context"
	"fmt"
	"time"

	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime/store"
)

// attempt is one update of a module or model to a target, journaled step by step: the steps
// updateModule and updateModel share.
type attempt struct {
	a    *Agent
	name string // the module or model
	c    trust.Custom
	step store.UpdateStep
}

func (a *Agent) attempt(name, target string, c trust.Custom) *attempt {
	return &attempt{a: a, name: name, c: c,
		step: store.UpdateStep{Target: target, Kind: c.Kind, Version: c.Version, Release: c.Release, Digest: c.Digest}}
}

// rolledBack reports whether the journal's last step for target is a rollback of release: a
// release that was rolled back is never tried again, so that a bad release cannot loop the box
// through swaps (or trial boots) at every poll; the next release is tried.
func (a *Agent) rolledBack(ctx context.Context, target string, release uint64) (bool, error) {
	last, err := a.st.LastSteps(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range last {
		if l.Target == target && l.Step == StepRolledBack && l.Release == release {
			return true, nil
		}
	}
	return false, nil
}

// download runs the steps every module or model update starts with: it skips a release that
// was rolled back (skip true, nil error), checks the target (kind, hardware, newer than
// installed: the installed release of the same target, or 0), and downloads the artifact into
// dir, journaling found and downloaded; an error is journaled failed.
func (u *attempt) download(ctx context.Context, kind string, installed uint64, info trust.TargetInfo, dir string) (files []string, annotations map[string]string, skip bool, err error) {
	if bad, err := u.a.rolledBack(ctx, u.step.Target, u.c.Release); err != nil || bad {
		return nil, nil, true, err // rolled back once: never again
	}
	if err := u.check(ctx, kind, installed); err != nil {
		return nil, nil, false, err
	}
	files, annotations, err = u.a.fetch(ctx, u.step.Target, u.c, info, dir)
	if err != nil {
		return nil, nil, false, u.fail(ctx, err)
	}
	u.to(ctx, StepDownloaded, "")
	return files, annotations, false, nil
}

// check checks that the target is of kind, for this box's hardware and newer than release (the
// installed release of the same target, or 0), and journals it found; an error is failed.
func (u *attempt) check(ctx context.Context, kind string, release uint64) error {
	if err := u.a.trust.Check(u.step.Target, trust.Custom{Kind: kind, Release: release}, u.a.cfg.Hardware); err != nil {
		return u.fail(ctx, err)
	}
	u.to(ctx, StepFound, "")
	return nil
}

// to journals step with detail.
func (u *attempt) to(ctx context.Context, step, detail string) {
	u.step.Step, u.step.Detail = step, detail
	u.a.journal(ctx, u.step)
}

// fail journals err as the failed step, records it as an event and returns it.
func (u *attempt) fail(ctx context.Context, err error) error {
	u.to(ctx, StepFailed, err.Error())
	u.a.event(ctx, "update.failed", u.name, fmt.Sprintf("%s %s: %v", u.step.Target, u.c.Version, err))
	return err
}

// settle watches the swapped-in artifact's health for the window; when it is unhealthy, it
// calls rollback (which restores version, the one that ran before) on a context that is not
// canceled with ctx, journals the rollback and returns an error that says why.
func (u *attempt) settle(ctx context.Context, swappedAt time.Time, version string, rollback func(context.Context) error) error {
	why := u.a.watch(ctx, u.name)
	if why == "" {
		return nil
	}
	if err := rollback(context.WithoutCancel(ctx)); err != nil {
		// What ran a moment ago no longer swaps in: this should not happen. Say so loudly.
		u.a.log.Error("update: rollback failed", "name", u.name, "err", err)
		why += "; rollback failed: " + err.Error()
	}
	u.to(ctx, StepRolledBack, fmt.Sprintf("%s; rolled back to %s after %v", why, version, time.Since(swappedAt).Round(time.Millisecond)))
	u.a.event(ctx, "update.rolled_back", u.name, fmt.Sprintf("%s %s: %s", u.step.Target, u.c.Version, u.step.Detail))
	return fmt.Errorf("update: %s %s: %s", u.step.Target, u.c.Version, u.step.Detail)
}

// committed records the commit as an event (the installed row journals the step).
func (u *attempt) committed(ctx context.Context) {
	u.a.event(ctx, "update.committed", u.name, fmt.Sprintf("%s %s (release %d) committed", u.step.Target, u.c.Version, u.c.Release))
}
