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
	} {
		_, err := parse(dir, "site: s\ndevice: d\n"+tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
