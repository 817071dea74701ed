package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/perch-edge/perch/registry/artifact"
	"github.com/perch-edge/perch/registry/trust"
	perchupdate "github.com/perch-edge/perch/runtime/update"
)

const promoteUsage = `perch promote: sign a deployment: which modules, models, firmware and runtime a device group runs, and to what stage

Usage:
  perch promote --registry URL --keys DIR --tuf DIR --deployment NAME --group G --stage PCT
                [--module M=TARGET ...] [--model M=TARGET ...] [--firmware TARGET] [--runtime TARGET]
                [--version V]

Writes the deployment document (name, group, stage, and what it names) and pushes it as kind deployment
to target deployments/G with the next release (see perch push for --registry, --keys, --tuf).
Boxes of group G whose rollout bucket for NAME is below PCT take each module M of their config
from module target TARGET, which must already be signed (perch push module ...), and each
model M of their config (models:) from model target TARGET (perch push model ...).
--firmware TARGET and --runtime TARGET name a signed firmware image or perch binary (perch push
firmware|runtime ...) that boxes with an update.firmware or update.runtime section install into
their A/B slots; other boxes refuse such a deployment.

Raise a rollout by promoting the same NAME with a higher --stage: a new release, and the boxes
already in keep their bucket. Lowering the stage stops the rollout from spreading; boxes that
took it keep it (a rollback is a new deployment pointing at the old targets).
`

// moduleFlag collects repeated --module M=TARGET flags.
type moduleFlag []perchupdate.DeploymentModule

func (m *moduleFlag) String() string {
	var parts []string
	for _, x := range *m {
		parts = append(parts, x.Module+"="+x.Target)
	}
	return strings.Join(parts, " ")
}

func (m *moduleFlag) Set(s string) error {
	mod, target, ok := strings.Cut(s, "=")
	if !ok || mod == "" || target == "" {
		return fmt.Errorf("want MODULE=TARGET, such as f=modules/scale, got %q", s)
	}
	*m = append(*m, perchupdate.DeploymentModule{Module: mod, Target: target})
	return nil
}

// modelFlag collects repeated --model M=TARGET flags.
type modelFlag []perchupdate.DeploymentModel

func (m *modelFlag) String() string {
	var parts []string
	for _, x := range *m {
		parts = append(parts, x.Model+"="+x.Target)
	}
	return strings.Join(parts, " ")
}

func (m *modelFlag) Set(s string) error {
	model, target, ok := strings.Cut(s, "=")
	if !ok || model == "" || target == "" {
		return fmt.Errorf("want MODEL=TARGET, such as env-ae=models/env, got %q", s)
	}
	*m = append(*m, perchupdate.DeploymentModel{Model: model, Target: target})
	return nil
}

// cmdPromote runs "perch promote".
func cmdPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch promote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, promoteUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	var (
		pf      publishFlags
		d       perchupdate.Deployment
		modules moduleFlag
		models  modelFlag
	)
	pf.register(fs)
	fs.StringVar(&d.Name, "deployment", "", "the deployment's `NAME`, such as pumps-2026-12 (required)")
	fs.StringVar(&d.Group, "group", "", "the device `group` it is for (required)")
	fs.IntVar(&d.Stage, "stage", 0, "the rollout stage: the `percent` of the group that takes it, 1..100 (required)")
	fs.Var(&modules, "module", "`M=TARGET`: module M of the boxes' config runs module target TARGET (repeat; at least one)")
	fs.Var(&models, "model", "`M=TARGET`: model M of the boxes' config runs model target TARGET (repeat)")
	fs.StringVar(&d.Firmware, "firmware", "", "the firmware `TARGET` the boxes install into their A/B slots")
	fs.StringVar(&d.Runtime, "runtime", "", "the runtime `TARGET` (a perch binary) the boxes update themselves to")
	version := fs.String("version", "", "the human `version` of this release (default: \"NAME at PCT%\")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	errs := pf.check()
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	d.Modules, d.Models = modules, models
	doc, err := yaml.Marshal(&d)
	if err != nil {
		errs = append(errs, err)
	} else if _, err := perchupdate.ParseDeployment(doc); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		fs.Usage()
		return fmt.Errorf("perch promote: %w", err)
	}
	p, err := openPublisher(pf, stderr)
	if err != nil {
		return fmt.Errorf("perch promote: %w", err)
	}
	defer p.close()
	// Every module target must be signed already, as a module: a typo would otherwise fail
	// on every box of the group.
	for _, m := range d.Modules {
		c, _, err := p.repo.Target(m.Target)
		if err != nil {
			errs = append(errs, fmt.Errorf("--module %s=%s: %w (push it first)", m.Module, m.Target, err))
		} else if c.Kind != trust.KindModule {
			errs = append(errs, fmt.Errorf("--module %s=%s: the target is a %s, not a module", m.Module, m.Target, c.Kind))
		}
	}
	for _, m := range d.Models {
		c, _, err := p.repo.Target(m.Target)
		if err != nil {
			errs = append(errs, fmt.Errorf("--model %s=%s: %w (push it first)", m.Model, m.Target, err))
		} else if c.Kind != trust.KindModel {
			errs = append(errs, fmt.Errorf("--model %s=%s: the target is a %s, not a model", m.Model, m.Target, c.Kind))
		}
	}
	for _, f := range [...]struct{ flag, kind, target string }{{"--firmware", trust.KindFirmware, d.Firmware}, {"--runtime", trust.KindRuntime, d.Runtime}} {
		if f.target == "" {
			continue
		}
		if c, _, err := p.repo.Target(f.target); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w (push it first)", f.flag, f.target, err))
		} else if c.Kind != f.kind {
			errs = append(errs, fmt.Errorf("%s %s: the target is a %s, not a %s", f.flag, f.target, c.Kind, f.kind))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("perch promote: %w", err)
	}
	target := "deployments/" + d.Group
	prev := p.previous(ctx, target)
	dir, err := os.MkdirTemp("", "perch-promote-")
	if err != nil {
		return fmt.Errorf("perch promote: %w", err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "deployment.yaml")
	if err := os.WriteFile(file, doc, 0o644); err != nil {
		return fmt.Errorf("perch promote: %w", err)
	}
	if *version == "" {
		*version = fmt.Sprintf("%s at %d%%", d.Name, d.Stage)
	}
	r := release{target: target, kind: artifact.Deployment, files: []string{file},
		custom: trust.Custom{Kind: trust.KindDeployment, Version: *version, Hardware: []string{trust.HardwareAny}}}
	c, desc, err := p.publish(ctx, r)
	if err != nil {
		return fmt.Errorf("perch promote: %w", err)
	}
	fmt.Fprintf(stdout, "%s: deployment %s for group %s at stage %d%% signed as release %d (manifest %s)\n",
		target, d.Name, d.Group, d.Stage, c.Release, desc.Digest)
	switch {
	case prev == nil:
	case prev.Name != d.Name:
		fmt.Fprintf(stdout, "  replaces deployment %s (at %d%%): boxes draw new rollout buckets\n", prev.Name, prev.Stage)
	case d.Stage > prev.Stage:
		fmt.Fprintf(stdout, "  stage raised from %d%% to %d%%\n", prev.Stage, d.Stage)
	case d.Stage < prev.Stage:
		fmt.Fprintf(stdout, "  stage lowered from %d%% to %d%%: no new boxes take it; boxes that took it keep it\n", prev.Stage, d.Stage)
	}
	return nil
}

// previous returns the deployment target currently holds, or nil if there is none or it cannot
// be read (said on stderr: it only informs the summary).
func (p *publisher) previous(ctx context.Context, target string) *perchupdate.Deployment {
	c, _, err := p.repo.Target(target)
	if err != nil {
		return nil
	}
	dir, err := os.MkdirTemp("", "perch-promote-prev-")
	if err != nil {
		return nil
	}
	defer os.RemoveAll(dir)
	got, err := p.client.Pull(ctx, p.host+"/"+c.Repository+"@"+c.Digest, dir)
	if err == nil && len(got.Files) != 1 {
		err = fmt.Errorf("%d files", len(got.Files))
	}
	var d *perchupdate.Deployment
	if err == nil {
		var data []byte
		if data, err = os.ReadFile(got.Files[0]); err == nil {
			d, err = perchupdate.ParseDeployment(data)
		}
	}
	if err != nil {
		fmt.Fprintf(p.stderr, "note: cannot read the current deployment of %s (release %d): %v\n", target, c.Release, err)
		return nil
	}
	return d
}
