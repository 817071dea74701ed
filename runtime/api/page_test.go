package api_test

import (
	"context"
	"image/color"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/runtime/internal/browsertest"
	"github.com/perch-edge/perch/sdk/abi"
)

// TestPage: the page and its files are served (without the token: they are static), with a
// content security policy that keeps the page to its own origin, and they name nothing
// outside the device, so the page works offline.
func TestPage(t *testing.T) {
	base := serveHub(t, nil, "s3cret", nil)
	for path, want := range map[string]string{
		"/":               "text/html; charset=utf-8",
		"/page/app.js":    "text/javascript; charset=utf-8",
		"/page/style.css": "text/css; charset=utf-8",
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != want || len(body) == 0 {
			t.Errorf("%s: %d %q, %d bytes; want 200 %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
	}
	for _, path := range []string{"/page/nothing.js", "/page/"} {
		if code, _ := get(t, base, path, ""); code != http.StatusNotFound && code != http.StatusForbidden && code != http.StatusOK {
			t.Errorf("%s: %d", path, code)
		}
	}
	// The page's folder is open; the API behind it is not.
	if code, _ := get(t, base, "/page/../api/v1/stream", ""); code == http.StatusOK {
		t.Errorf("/page/../api/v1/stream without the token: %d", code)
	}

	// Offline and small: no address outside the device in any file, and a few tens of KB.
	total := 0
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(os.DirFS("page"), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join("page", path))
		if err != nil {
			return err
		}
		total += len(b)
		if m := external.Find(b); m != nil {
			t.Errorf("page/%s names %q: the page must work offline", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total > 48<<10 {
		t.Errorf("the page is %d bytes; keep it under 48 KB", total)
	}
	t.Logf("the page is %d bytes", total)
}

// TestBrowserScores shows the page, in headless Chromium, model scores fed to the hub of a
// running pipeline (the model node is not in the test pipeline; its records take the same
// path): a score plot with its score and smoothed lines and the threshold, and the model's alert
// listed. The screenshot is saved as page-scores.png (see browsertest).
func TestBrowserScores(t *testing.T) {
	dir := t.TempDir()
	b := browsertest.New(t, dir) // skips without Chromium, unless CI is set
	_, hub, base := runPipeline(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		smoothed := 0.0
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			score := 0.45 + 0.5*math.Sin(float64(i)/8)
			smoothed += 0.3 * (score - smoothed)
			rec := abi.Append(nil, abi.KindScore, time.Now().UnixNano(), "anomaly", "environment",
				[]abi.Field{{Name: "score", Value: score}, {Name: "smoothed", Value: smoothed}, {Name: "threshold", Value: 0.8}}, nil)
			if i == 10 {
				rec = abi.Append(rec, abi.KindAlert, time.Now().UnixNano(), "anomaly", "environment",
					[]abi.Field{{Name: "value", Value: smoothed}, {Name: "threshold", Value: 0.8}},
					[]abi.Tag{{Key: "state", Value: "raised"}, {Key: "severity", Value: "warning"}, {Key: "message", Value: "anomaly score above 0.8"}})
			}
			hub.Publish("anomaly", rec)
		}
	}()

	if err := browsertest.Navigate(b.Ctx, base+"/?window=60"); err != nil {
		t.Fatal(err)
	}
	const ready = `(() => { const f = document.querySelector('figure.plot[data-key="s|anomaly|environment"]');
		return f !== null && Number(f.dataset.points) >= 60 &&
			[...document.querySelectorAll("#alerts li.raised")].some((li) => li.textContent.includes("anomaly score above 0.8")); })()`
	if err := browsertest.Wait(b.Ctx, ready, 90*time.Second); err != nil {
		text, _ := browsertest.Eval[string](b.Ctx, `document.body.innerText`)
		t.Fatalf("no score plot: %v\npage:\n%s\nchromium:\n%s", err, text, b.Output())
	}
	img, areas := b.Shot("page-scores.png", `figure.plot[data-key^="s|"] canvas`)
	if len(areas) != 1 {
		t.Fatalf("%d score plots, want 1", len(areas))
	}
	for _, c := range []struct {
		what string
		rgb  color.RGBA
	}{
		{"score line", color.RGBA{0x25, 0x63, 0xeb, 0xff}},
		{"smoothed line", color.RGBA{0xf5, 0x9e, 0x0b, 0xff}},
		{"threshold", color.RGBA{0xdc, 0x26, 0x26, 0xff}},
	} {
		if n := browsertest.Count(areas[0], browsertest.Near(img, c.rgb, 24)); n < 40 {
			t.Errorf("%s: %d pixels of its colour in the score plot, want ≥ 40", c.what, n)
		}
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
