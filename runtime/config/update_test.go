package config_test

import (
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"
)

func TestUpdateSection(t *testing.T) {
	dir := testDir(t)
	if err := os.WriteFile(filepath.Join(dir, "root.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parse(dir, "site: s\ndevice: d\nupdate:\n  registry: http://127.0.0.1:5000\n  root: root.json\n  group: pumps\n")
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Update
	if !u.Enabled() || u.Root != filepath.Join(dir, "root.json") || u.Hardware != goruntime.GOARCH ||
		u.Dir != filepath.Join(filepath.Dir(cfg.Store.Path), "updates") || u.Poll.D() != 5*time.Minute || u.HealthWindow.D() != 30*time.Second {
		t.Errorf("defaults: %+v", u)
	}
	cfg, err = parse(dir, "site: s\ndevice: d\nupdate:\n  registry: https://127.0.0.1:5000\n  root: root.json\n  group: pumps\n  tls: {ca_file: root.json}\n")
	if err != nil || cfg.Update.TLS.CAFile != filepath.Join(dir, "root.json") {
		t.Errorf("update.tls: %+v, %v", cfg.Update.TLS, err)
	}
	if cfg, err := parse(dir, "site: s\ndevice: d\n"); err != nil || cfg.Update.Enabled() {
		t.Errorf("no update section: %+v, %v", cfg.Update, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"update:\n  group: pumps\n  root: root.json\n", "update.registry: required"},
		{"update:\n  registry: ftp://x\n  root: root.json\n  group: g\n", "update.registry: want an http:// or https:// URL"},
		{"update:\n  registry: http://x:1\n  group: g\n", "update.root: required"},
		{"update:\n  registry: http://x:1\n  root: nope.json\n  group: g\n", "update.root: stat"},
		{"update:\n  registry: http://x:1\n  root: root.json\n  group: Pumps!\n", "update.group: want a lowercase group name"},
		{"update:\n  registry: http://x:1\n  root: root.json\n  group: g\n  poll: 10ms\n", "update.poll: at least 1s"},
		{"update:\n  registry: http://x:1\n  root: root.json\n  group: g\n  health_window: 1ms\n", "update.health_window: at least 100ms"},
		{"update:\n  registry: http://x:1\n  root: root.json\n  group: g\n  bogus: 1\n", "field bogus not found"},
		{"update:\n  registry: http://x:1\n  root: root.json\n  group: g\n  tls: {ca_file: root.json}\n", `update.tls: the registry "http://x:1" is not an https:// URL`},
		{"update:\n  registry: https://x:1\n  root: root.json\n  group: g\n  tls: {ca_file: ca.pem}\n", "update.tls.ca_file: stat"},
		{"update:\n  registry: https://x:1\n  root: root.json\n  group: g\n  tls: {cert_file: root.json}\n", "update.tls: cert_file and key_file go together"},
	} {
		_, err := parse(dir, "site: s\ndevice: d\n"+tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestUpdateSlots(t *testing.T) {
	dir := testDir(t)
	if err := os.WriteFile(filepath.Join(dir, "root.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"slots", "fw"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	const head = "site: s\ndevice: d\nupdate:\n  registry: http://127.0.0.1:5000\n  root: root.json\n  group: pumps\n"
	cfg, err := parse(dir, head+"  runtime: {slots: slots}\n  firmware: {slots: fw, loader: uboot}\n")
	if err != nil {
		t.Fatal(err)
	}
	r, f := cfg.Update.Runtime, cfg.Update.Firmware
	if r.Slots != filepath.Join(dir, "slots") || r.Tries != 3 {
		t.Errorf("runtime defaults: %+v", r)
	}
	if f.Slots != filepath.Join(dir, "fw") || f.Tries != 3 || strings.Join(f.Reboot, " ") != "systemctl reboot" {
		t.Errorf("firmware defaults: %+v", f)
	}
	cfg, err = parse(dir, head+"  firmware: {slots: fw, loader: rpi-tryboot, tries: 1}\n")
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.Update.Firmware; strings.Join(f.Reboot, "|") != "reboot|0 tryboot" || f.Tries != 1 || cfg.Update.Runtime != nil {
		t.Errorf("rpi-tryboot defaults: %+v, runtime %+v", f, cfg.Update.Runtime)
	}
	if _, err := parse(dir, head+"  firmware: {slots: fw, loader: rpi-tryboot, reboot: [/sbin/reboot, \"0 tryboot\"]}\n"); err != nil {
		t.Errorf("a tryboot reboot command: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"  runtime: {}\n", "update.runtime.slots: required"},
		{"  runtime: {slots: nope}\n", "update.runtime.slots: stat"},
		{"  runtime: {slots: file}\n", "update.runtime.slots: " + filepath.Join(dir, "file") + " is not a folder"},
		{"  runtime: {slots: slots, tries: 33}\n", "update.runtime.tries: want 1 to 32 boots, got 33"},
		{"  runtime: {slots: slots, tries: -1}\n", "update.runtime.tries: want 1 to 32 boots, got -1"},
		{"  runtime: {slots: slots, bogus: 1}\n", "field bogus not found"},
		{"  firmware: {slots: fw}\n", "update.firmware.loader: required: file, uboot or rpi-tryboot"},
		{"  firmware: {slots: fw, loader: grub}\n", "update.firmware.loader: want file, uboot or rpi-tryboot, got \"grub\""},
		{"  firmware: {loader: file}\n", "update.firmware.slots: required"},
		{"  firmware: {slots: fw, loader: file, tries: 40}\n", "update.firmware.tries: want 1 to 32"},
		{"  firmware: {slots: fw, loader: rpi-tryboot, reboot: [reboot]}\n", "update.firmware.reboot: rpi-tryboot needs the firmware's one-shot flag"},
		{"  firmware: {slots: fw, loader: file, reboot: [reboot, \"\"]}\n", "update.firmware.reboot: argument 1 is empty"},
		{"  runtime: {slots: slots}\n  firmware: {slots: slots, loader: file}\n", "update.firmware.slots: the same folder as update.runtime.slots"},
	} {
		_, err := parse(dir, head+tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
