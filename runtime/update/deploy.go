package update

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"

	"go.yaml.in/yaml/v3"
)

// Deployment is the signed document that says what a group of devices runs: which registry
// target each of its modules takes, and how far the rollout has gone. It is an artifact of kind
// deployment, pinned by a TUF target like every other.
//
//	name: pumps-2026-12
//	group: pumps          # the devices whose update.group is pumps
//	stage: 25             # percent of the group that takes it (1..100)
//	modules:
//	  - module: f                   # a module of the device's config
//	    target: modules/scale       # the TUF target that replaces its binary
//	models:
//	  - model: env-anomaly          # a model of the device's config (models:)
//	    target: models/env          # the TUF target (kind model) that replaces its artifact
//	firmware: firmware/rpi4         # a TUF target (kind firmware): the image for the A/B slots
//	runtime: runtime/perch-arm64    # a TUF target (kind runtime): the perch binary itself
//
// A deployment names at least one of them.
type Deployment struct {
	Name     string             `yaml:"name"`
	Group    string             `yaml:"group"`
	Stage    int                `yaml:"stage"`
	Modules  []DeploymentModule `yaml:"modules"`
	Models   []DeploymentModel  `yaml:"models"`
	Firmware string             `yaml:"firmware"`
	Runtime  string             `yaml:"runtime"`
}

// DeploymentModule names the target a module of the device's config takes.
type DeploymentModule struct {
	Module string `yaml:"module"`
	Target string `yaml:"target"`
}

// DeploymentModel names the target a model of the device's config takes.
type DeploymentModel struct {
	Model  string `yaml:"model"`
	Target string `yaml:"target"`
}

var deployNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]{0,127}$`)

// ParseDeployment decodes a deployment document strictly and checks it, reporting every
// problem at once.
func ParseDeployment(data []byte) (*Deployment, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var d Deployment
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("deployment: %w", err)
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("deployment: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !deployNameRE.MatchString(d.Name) {
		bad("name", "want a lowercase name, got %q", d.Name)
	}
	if !deployNameRE.MatchString(d.Group) {
		bad("group", "want a lowercase group name, got %q", d.Group)
	}
	if d.Stage < 1 || d.Stage > 100 {
		bad("stage", "want a percentage from 1 to 100, got %d", d.Stage)
	}
	if len(d.Modules) == 0 && len(d.Models) == 0 && d.Firmware == "" && d.Runtime == "" {
		bad("modules", "a deployment names at least one module, model, firmware or runtime")
	}
	seen := map[string]bool{}
	for i, m := range d.Modules {
		at := fmt.Sprintf("modules[%d]", i)
		if m.Module == "" {
			bad(at+".module", "missing")
		} else if seen[m.Module] {
			bad(at+".module", "%q listed twice", m.Module)
		}
		seen[m.Module] = true
		if !deployNameRE.MatchString(m.Target) {
			bad(at+".target", "want a target name such as modules/thermo, got %q", m.Target)
		}
	}
	seen = map[string]bool{}
	for i, m := range d.Models {
		at := fmt.Sprintf("models[%d]", i)
		if m.Model == "" {
			bad(at+".model", "missing")
		} else if seen[m.Model] {
			bad(at+".model", "%q listed twice", m.Model)
		}
		seen[m.Model] = true
		if !deployNameRE.MatchString(m.Target) {
			bad(at+".target", "want a target name such as models/env, got %q", m.Target)
		}
	}
	for _, f := range [...]struct{ field, target string }{{"firmware", d.Firmware}, {"runtime", d.Runtime}} {
		if f.target != "" && !deployNameRE.MatchString(f.target) {
			bad(f.field, "want a target name such as %s/rpi4, got %q", f.field, f.target)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &d, nil
}

// Member reports whether device takes deployment d: devices of d's group whose bucket, a hash
// of the device id and the deployment's name in 0..99, is below the stage. The choice is
// deterministic, so a device asked again answers the same, and raising the stage only adds
// devices; a new deployment name draws new buckets.
func (d *Deployment) Member(group, device string) bool {
	return group == d.Group && Bucket(device, d.Name) < d.Stage
}

// Bucket is device's rollout bucket for a deployment, 0..99.
func Bucket(device, deployment string) int {
	h := fnv.New64a()
	h.Write([]byte(device))
	h.Write([]byte{0})
	h.Write([]byte(deployment))
	return int(h.Sum64() % 100)
}
