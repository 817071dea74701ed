package config

import (
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	goruntime "runtime"
	"time"
)

// Update configures the update agent (runtime/update): where the signed registry is, which
// trust root the box was provisioned with, and which device group it belongs to. Without a
// registry there is no agent.
//
//	update:
//	  registry: https://registry.example:5000   # OCI API under /v2/, TUF metadata under /tuf/
//	  root: root.json            # the TUF root embedded at provisioning (relative to this file)
//	  group: pumps               # the device group deployments name
//	  hardware: arm64            # what targets must list; default the binary's architecture
//	  dir: /var/lib/perch/updates  # downloads, installed artifacts, TUF cache; default next to the store
//	  poll: 5m                   # time between polls (an MQTT `update` command polls at once)
//	  health_window: 30s         # how long a new module must stay healthy before it is committed
//
// The device id that places the box in a rollout stage is the config's device.
type Update struct {
	Registry     string   `yaml:"registry"`
	Root         string   `yaml:"root"`
	Group        string   `yaml:"group"`
	Hardware     string   `yaml:"hardware"`
	Dir          string   `yaml:"dir"`
	Poll         Duration `yaml:"poll"`
	HealthWindow Duration `yaml:"health_window"`
}

// Update defaults.
const (
	DefaultUpdatePoll         = 5 * time.Minute
	DefaultUpdateHealthWindow = 30 * time.Second
)

// Enabled reports whether the config has an update agent.
func (u *Update) Enabled() bool { return u.Registry != "" }

var groupRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]{0,127}$`)

// update validates the update section and fills in its defaults.
func (p *parser) update(c *Config) {
	u := &c.Update
	if reflect.ValueOf(*u).IsZero() {
		return
	}
	if u.Registry == "" {
		p.errf("update.registry", "required (or remove the update section)")
	} else if r, err := url.Parse(u.Registry); err != nil {
		p.errf("update.registry", "%v", err)
	} else if (r.Scheme != "http" && r.Scheme != "https") || r.Host == "" {
		p.errf("update.registry", "want an http:// or https:// URL with a host, got %q", u.Registry)
	}
	if u.Root == "" {
		p.errf("update.root", "required: the TUF root.json the box was provisioned with")
	} else {
		u.Root = p.abs(u.Root)
		if _, err := os.Stat(u.Root); err != nil {
			p.errf("update.root", "%v", err)
		}
	}
	if !groupRE.MatchString(u.Group) {
		p.errf("update.group", "want a lowercase group name, got %q", u.Group)
	}
	if u.Hardware == "" {
		u.Hardware = goruntime.GOARCH
	}
	if u.Dir == "" {
		u.Dir = filepath.Join(filepath.Dir(c.Store.Path), "updates")
	} else {
		u.Dir = p.abs(u.Dir)
	}
	if u.Poll == 0 {
		u.Poll = Duration(DefaultUpdatePoll)
	} else if u.Poll.D() < time.Second {
		p.errf("update.poll", "at least 1s")
	}
	if u.HealthWindow == 0 {
		u.HealthWindow = Duration(DefaultUpdateHealthWindow)
	} else if u.HealthWindow.D() < 100*time.Millisecond {
		p.errf("update.health_window", "at least 100ms")
	}
}
