package config

import (
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	goruntime "runtime"
	"slices"
	"time"
)

// Update configures the update agent (runtime/update): where the signed registry is, which
// trust root the box was provisioned with, and which device group it belongs to. Without a
// registry there is no agent.
//
//	update:
//	  registry: https://registry.example:5000   # OCI API under /v2/, TUF metadata under /tuf/
//	  tls: {ca_file: registry-ca.pem}   # https only: the registry's CA (default the system's), and
//	                                    # cert_file/key_file for a registry that asks for client certs
//	  root: root.json            # the TUF root embedded at provisioning (relative to this file)
//	  group: pumps               # the device group deployments name
//	  hardware: arm64            # what targets must list; default the binary's architecture
//	  dir: /var/lib/perch/updates  # downloads, installed artifacts, TUF cache; default next to the store
//	  poll: 5m                   # time between polls (an MQTT `update` command polls at once)
//	  health_window: 30s         # how long a new module must stay healthy before it is committed
//	  runtime:                   # optional: the perch binary updates itself (A/B slots)
//	    slots: /var/lib/perch/slots   # perch-boot's -dir: A/perch, B/perch, bootenv.0/1
//	    tries: 3                 # starts a new binary gets to pass its health window; default 3
//	  firmware:                  # optional: firmware images into A/B slots
//	    slots: /var/lib/perch/firmware  # the images are written as files A and B here
//	    loader: uboot            # file, uboot or rpi-tryboot (see runtime/update/boot)
//	    reboot: [systemctl, reboot]     # the command that reboots into the new slot
//	    tries: 3                 # boots the new image gets (rpi-tryboot: always 1)
//
// The device id that places the box in a rollout stage is the config's device. A box without
// a runtime (firmware) section refuses a deployment that names a runtime (firmware) target.
type Update struct {
	Registry     string          `yaml:"registry"`
	TLS          TLS             `yaml:"tls"`
	Root         string          `yaml:"root"`
	Group        string          `yaml:"group"`
	Hardware     string          `yaml:"hardware"`
	Dir          string          `yaml:"dir"`
	Poll         Duration        `yaml:"poll"`
	HealthWindow Duration        `yaml:"health_window"`
	Runtime      *UpdateRuntime  `yaml:"runtime"`
	Firmware     *UpdateFirmware `yaml:"firmware"`
}

// UpdateRuntime is where the perch binary's A/B slots are: the folder perch-boot boots from
// (its -dir), holding A/perch, B/perch and the boot environment bootenv.0/bootenv.1. perch
// must be started by perch-boot (which sets PERCH_SLOT) for the agent to update it.
type UpdateRuntime struct {
	// Slots is the slots folder; required, must exist. Relative to the config file.
	Slots string `yaml:"slots"`
	// Tries is how many starts a new binary gets to pass its health window before perch-boot
	// falls back to the committed one: 1..32, default 3.
	Tries int `yaml:"tries"`
}

// UpdateFirmware is where firmware images go and which bootloader chooses between them.
type UpdateFirmware struct {
	// Slots is the folder the images are written to, as the files A and B, which the
	// bootloader loads; required, must exist. Relative to the config file.
	Slots string `yaml:"slots"`
	// Loader is the bootloader: file (a boot.FileLoader environment in Slots: tests and
	// boxes whose boot script reads it), uboot (fw_printenv/fw_setenv) or rpi-tryboot
	// (autoboot.txt). Required.
	Loader string `yaml:"loader"`
	// Reboot is the command (argv, no shell) that reboots the box into the new slot. Default
	// [systemctl, reboot]; for rpi-tryboot [reboot, "0 tryboot"], and a command given for
	// rpi-tryboot must pass "0 tryboot" as one argument (the firmware's one-shot flag).
	Reboot []string `yaml:"reboot"`
	// Tries is how many boots a new image gets before the loader falls back: 1..32, default 3
	// (rpi-tryboot: always one, whatever this says).
	Tries int `yaml:"tries"`
}

// Firmware loaders (UpdateFirmware.Loader).
const (
	FirmwareLoaderFile       = "file"
	FirmwareLoaderUBoot      = "uboot"
	FirmwareLoaderRPiTryboot = "rpi-tryboot"
)

// Update slot defaults.
const (
	DefaultSlotTries = 3
	maxSlotTries     = 32 // boot.MaxTries
	trybootArg       = "0 tryboot"
)

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
	} else if r.Scheme != "https" && u.TLS != (TLS{}) {
		p.errf("update.tls", "the registry %q is not an https:// URL", u.Registry)
	}
	p.tlsFiles("update.tls", &u.TLS)
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
	if r := u.Runtime; r != nil {
		r.Slots = p.slotsDir("update.runtime.slots", r.Slots)
		r.Tries = p.slotTries("update.runtime.tries", r.Tries)
	}
	if f := u.Firmware; f != nil {
		f.Slots = p.slotsDir("update.firmware.slots", f.Slots)
		f.Tries = p.slotTries("update.firmware.tries", f.Tries)
		switch f.Loader {
		case FirmwareLoaderFile, FirmwareLoaderUBoot:
			if len(f.Reboot) == 0 {
				f.Reboot = []string{"systemctl", "reboot"}
			}
		case FirmwareLoaderRPiTryboot:
			if len(f.Reboot) == 0 {
				f.Reboot = []string{"reboot", trybootArg}
			} else if !slices.Contains(f.Reboot[1:], trybootArg) {
				p.errf("update.firmware.reboot", "rpi-tryboot needs the firmware's one-shot flag: pass %q as one argument, got %q", trybootArg, f.Reboot)
			}
		case "":
			p.errf("update.firmware.loader", "required: %s, %s or %s", FirmwareLoaderFile, FirmwareLoaderUBoot, FirmwareLoaderRPiTryboot)
		default:
			p.errf("update.firmware.loader", "want %s, %s or %s, got %q", FirmwareLoaderFile, FirmwareLoaderUBoot, FirmwareLoaderRPiTryboot, f.Loader)
		}
		for i, a := range f.Reboot {
			if a == "" {
				p.errf("update.firmware.reboot", "argument %d is empty", i)
			}
		}
	}
	if u.Runtime != nil && u.Firmware != nil && u.Runtime.Slots == u.Firmware.Slots && u.Runtime.Slots != "" {
		p.errf("update.firmware.slots", "the same folder as update.runtime.slots (%s): each needs its own", u.Runtime.Slots)
	}
}

// slotsDir checks a slots folder (required, must be a folder) and makes it absolute.
func (p *parser) slotsDir(field, dir string) string {
	if dir == "" {
		p.errf(field, "required: the folder holding slots A and B")
		return ""
	}
	dir = p.abs(dir)
	if fi, err := os.Stat(dir); err != nil {
		p.errf(field, "%v", err)
	} else if !fi.IsDir() {
		p.errf(field, "%s is not a folder", dir)
	}
	return dir
}

// slotTries checks a boot counter and applies its default.
func (p *parser) slotTries(field string, n int) int {
	if n == 0 {
		return DefaultSlotTries
	}
	if n < 1 || n > maxSlotTries {
		p.errf(field, "want 1 to %d boots, got %d", maxSlotTries, n)
	}
	return n
}
