package main

import (
	"fmt"
	"image"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/perch-edge/perch/runtime/internal/browsertest"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// TestBrowserPage runs the demo pipeline (examples/demo/perch.yaml, with its recorder in a
// temporary folder) in the real perch binary with a token on its local API, opens the live page
// in headless Chromium, and checks that live data is plotted and moving: two screenshots a few
// seconds apart both have plot lines in every plot, and the plots differ between them. Then it
// waits for the demo's scripted alert to be listed, and checks that the page asks for the token
// when it has none. The screenshots are saved in the test's
// temporary folder and, if PERCH_SCREENSHOTS names a folder, copied there.
//
// Without Chromium (/usr/bin/chromium) the test is skipped, unless the environment has CI set:
// then it fails.
func TestBrowserPage(t *testing.T) {
	dir := t.TempDir()
	b := browsertest.New(t, dir) // skips without Chromium, unless CI is set
	const token = "page-test-token"
	cfg := demoConfig(t, dir, token)
	addr := freeAddr(t)
	p := start(t, "run", "--config", cfg, "--quiet", "--api-listen", addr)
	base := "http://" + addr
	waitAPI(t, p, base+"/healthz", token)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nperch stderr:\n%s\nchromium:\n%s", append(args, &p.stderr, b.Output())...)
	}

	if err := browsertest.Navigate(b.Ctx, base+"/?window=60&access_token="+token); err != nil {
		fail("loading the page: %v", err)
	}
	// Live data: the demo's driver reads temperature, pressure and humidity every 500 ms; 16
	// readings are 8 s, a line of some 50 pixels across a 1-minute plot.
	const ready = `document.querySelectorAll("figure.plot").length >= 3 &&
		[...document.querySelectorAll("figure.plot")].every((f) => Number(f.dataset.points) >= 16) &&
		document.querySelector("#conn").classList.contains("live") &&
		document.querySelectorAll("#modules tbody tr").length === 3`
	if err := browsertest.Wait(b.Ctx, ready, 90*time.Second); err != nil {
		text, _ := browsertest.Eval[string](b.Ctx, `document.body.innerText`)
		fail("no live plots: %v\npage:\n%s", err, text)
	}
	where, err := browsertest.Eval[string](b.Ctx, `document.querySelector("#where").textContent`)
	if err != nil || where != "demo / sim-01" {
		t.Errorf("the page's heading names %q (%v), want demo / sim-01", where, err)
	}
	health, err := browsertest.Eval[[]string](b.Ctx, `[...document.querySelectorAll("#modules tbody td.health")].map((td) => td.textContent)`)
	if err != nil || strings.Join(health, ",") != "ok,ok,ok" {
		t.Errorf("module health %q (%v), want ok for all three", health, err)
	}

	const plotArea = "figure.plot canvas"
	first, plots := b.Shot("page-1.png", plotArea)
	time.Sleep(3 * time.Second)
	second, plots2 := b.Shot("page-2.png", plotArea)
	if len(plots) < 3 || len(plots2) != len(plots) {
		t.Fatalf("%d plots, then %d; want the same three or more", len(plots), len(plots2))
	}
	changed := 0
	for i, r := range plots {
		if r.Empty() || r != plots2[i] {
			t.Fatalf("plot %d: area %v, then %v", i, r, plots2[i])
		}
		for _, img := range []image.Image{first, second} {
			if n := browsertest.Count(r, browsertest.Saturated(img)); n < 40 {
				t.Errorf("plot %d at %v: %d line pixels, want a drawn line (≥ 40)", i, r, n)
			}
		}
		changed += browsertest.Count(r, browsertest.Differ(first, second))
	}
	if changed < 200 {
		t.Errorf("%d pixels of the plots changed in 3 s, want the plots moving (≥ 200)", changed)
	}
	t.Logf("%d plots; %d plot pixels changed in 3 s", len(plots), changed)

	// The demo's temperature steps up 15 s after the start; the anomaly model and the rule
	// raise their alerts within seconds, and the page lists both from the stream.
	const raised = `[...document.querySelectorAll("#alerts li.raised")].map(e => e.textContent).join("\n")`
	if err := browsertest.Wait(b.Ctx, raised+`.includes("temperature above 30 °C") && `+raised+`.includes("anomaly score")`, 90*time.Second); err != nil {
		alerts, _ := browsertest.Eval[string](b.Ctx, raised)
		fail("the demo's two alerts are not listed (%v); listed:\n%s", err, alerts)
	}
	b.Shot("page-alert.png", plotArea)

	// In a new tab, without the token, the page asks for it.
	tab, cancelTab := chromedp.NewContext(b.Ctx)
	defer cancelTab()
	if err := browsertest.Navigate(tab, base+"/"); err != nil {
		fail("loading the page without the token: %v", err)
	}
	if err := browsertest.Wait(tab, `!document.querySelector("#login").hidden`, 30*time.Second); err != nil {
		t.Errorf("without the token, the page shows no token form: %v", err)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// demoConfig writes the demo's config into dir with absolute module paths, its recorder in
// dir, the package's shared compilation cache and an API token, and returns its path.
func demoConfig(t *testing.T, dir, token string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "demo", "perch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	replace := func(old, new string) {
		t.Helper()
		if !strings.Contains(cfg, old) {
			t.Fatalf("examples/demo/perch.yaml has no %q: update this test", old)
		}
		cfg = strings.ReplaceAll(cfg, old, new)
	}
	replace("path: ../../var/perch.db", fmt.Sprintf("path: %q", filepath.Join(dir, "perch.db")))
	for _, m := range []string{"bme280", "window", "threshold"} {
		replace("wasm: ../../build/modules/"+m+".wasm", fmt.Sprintf("wasm: %q", perchtest.Built(t, m)))
	}
	models, err := filepath.Abs(filepath.Join("..", "..", "..", "build", "models"))
	if err != nil {
		t.Fatal(err)
	}
	replace("card: ../../build/models/", "card: "+models+"/")
	cfg += fmt.Sprintf("\nengine:\n  cache_dir: %q\napi:\n  token: %s\n", filepath.Join(shared, "cache"), token)
	path := filepath.Join(dir, "perch.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitAPI waits until url answers 200 to the token, failing if p exits first.
func waitAPI(t *testing.T, p *proc, url, token string) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("the API at %s did not answer (exited: %v)\nstdout:\n%s\nstderr:\n%s", url, p.exited(), &p.stdout, &p.stderr)
		}
	}
}
