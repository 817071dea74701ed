package config_test

import (
	"strings"
	"testing"
)

func TestAPI(t *testing.T) {
	dir := testDir(t)
	cfg, err := parse(dir, "site: s\ndevice: d\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.Listen != "127.0.0.1:8686" || cfg.API.Token != "" {
		t.Errorf("defaults: %+v", cfg.API)
	}
	for _, ok := range []string{"127.0.0.1:0", "localhost:9000", "'[::1]:8686'", "0.0.0.0:8686\n  token: t", "':8686'\n  token: t"} {
		if _, err := parse(dir, "site: s\ndevice: d\napi:\n  listen: "+ok+"\n"); err != nil {
			t.Errorf("listen %s: %v", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:8686", "':8686'", "192.168.1.5:8686", "nocolon"} {
		_, err := parse(dir, "site: s\ndevice: d\napi:\n  listen: "+bad+"\n")
		if err == nil {
			t.Errorf("listen %s: no error", bad)
			continue
		}
		// file:line: field: message
		if !strings.Contains(err.Error(), "perch.yaml:4: api.listen: ") {
			t.Errorf("listen %s: %v", bad, err)
		}
		if bad != "nocolon" && !strings.Contains(err.Error(), "requires api.token") {
			t.Errorf("listen %s: %v", bad, err)
		}
	}
}
