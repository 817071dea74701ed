// Package browsertest drives the local API's page in headless Chromium for tests (through
// chromedp): it starts the browser with the flags a root user on a closed network needs,
// collects the page's console errors, takes screenshots and measures the plots in them.
//
// Tests only: nothing outside _test.go files imports it, so the perch binary does not link
// chromedp.
package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium is where the Debian package chromium puts the browser (`make deps` installs it).
const Chromium = "/usr/bin/chromium"

// Viewport is the page's size in CSS pixels, at a device scale of 1: screenshots have it too.
const Viewport = 1280

// Browser is one headless Chromium for one test; Ctx is its first tab. Close ends it (New
// registers that with t.Cleanup).
type Browser struct {
	Ctx    context.Context
	t      testing.TB
	dir    string // where screenshots are saved
	out    syncBuffer
	mu     sync.Mutex
	errs   []string // console errors and uncaught exceptions of the first tab
	cancel []context.CancelFunc
}

// New starts Chromium with a fresh profile under dir and opens a tab of 1280×1100 CSS pixels.
// Without Chromium it skips the test, unless the environment has CI set: then it fails.
func New(t testing.TB, dir string) *Browser {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and there is no Chromium: %v (make deps installs it)", err)
		}
		t.Skipf("no Chromium: %v", err)
	}
	b := &Browser{t: t, dir: dir}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // root in a container
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(dir, "chromium-profile")),
		chromedp.CombinedOutput(&b.out),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	b.Ctx = ctx
	b.cancel = []context.CancelFunc{cancelTab, cancelAlloc}
	t.Cleanup(b.Close)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(Viewport, 1100)); err != nil {
		t.Fatalf("starting Chromium: %v\n%s", err, &b.out)
	}
	consoleCtx, stop := context.WithCancel(ctx)
	b.cancel = append([]context.CancelFunc{stop}, b.cancel...)
	messages := chromedp.Console(consoleCtx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				b.mu.Lock()
				b.errs = append(b.errs, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// Close stops the browser. It is safe to call more than once.
func (b *Browser) Close() {
	for _, c := range b.cancel {
		c()
	}
}

// Output returns what Chromium wrote to stdout and stderr, for a failure message.
func (b *Browser) Output() string { return b.out.String() }

// Errors returns the console errors and uncaught exceptions of the first tab so far.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// Navigate loads url in tab ctx (b.Ctx or another tab of b).
func Navigate(ctx context.Context, url string) error {
	return chromedp.Do(ctx, chromedp.Navigate(url))
}

// Wait polls the JavaScript expression in tab ctx every 100 ms until it is truthy, for up to d.
func Wait(ctx context.Context, expr string, d time.Duration) error {
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond),
		chromedp.WithPollingTimeout(d)))
	return err
}

// Eval evaluates a JavaScript expression in tab ctx and decodes its value into T.
func Eval[T any](ctx context.Context, expr string) (T, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// Shot takes a screenshot of the first tab's viewport after the page's next redraw, saves it as
// name in the test's folder and, if PERCH_SCREENSHOTS names a folder, there too. It returns the
// image and the area of each element that selector matches (CSS pixels, which are the image's
// pixels at the viewport's scale of 1), shrunk by a pixel on each side.
func (b *Browser) Shot(name, selector string) (image.Image, []image.Rectangle) {
	b.t.Helper()
	time.Sleep(300 * time.Millisecond) // the page redraws every 250 ms
	rects, err := Eval[[][4]float64](b.Ctx, fmt.Sprintf(`[...document.querySelectorAll(%q)].map((e) => {
		const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })`, selector))
	if err != nil {
		b.t.Fatalf("the areas of %s: %v", selector, err)
	}
	buf, err := chromedp.Run(b.Ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v\n%s", err, &b.out)
	}
	b.save(name, buf)
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		b.t.Fatalf("%s: %v", name, err)
	}
	var out []image.Rectangle
	for _, r := range rects {
		out = append(out, image.Rect(int(r[0])+1, int(r[1])+1, int(r[2])-1, int(r[3])-1).Intersect(img.Bounds()))
	}
	return img, out
}

func (b *Browser) save(name string, buf []byte) {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.dir, name), buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
	out := os.Getenv("PERCH_SCREENSHOTS")
	if out == "" {
		return
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, name), buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("saved %s", filepath.Join(out, name))
}

// Count counts the pixels of r for which match is true.
func Count(r image.Rectangle, match func(x, y int) bool) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if match(x, y) {
				n++
			}
		}
	}
	return n
}

// Saturated matches the pixels of img far from grey (the largest channel exceeds the smallest
// by a quarter of the range): the page's plot lines are the only such colours in a plot, whose
// background is white and whose grid and labels are grey.
func Saturated(img image.Image) func(x, y int) bool {
	return func(x, y int) bool {
		r, g, b, _ := img.At(x, y).RGBA()
		return max(r, g, b)-min(r, g, b) > 0x4000
	}
}

// Near matches the pixels of img within tol (0 to 255, per channel) of c.
func Near(img image.Image, c color.RGBA, tol int) func(x, y int) bool {
	return func(x, y int) bool {
		r, g, b, _ := img.At(x, y).RGBA()
		d := func(a uint32, want uint8) bool { v := int(a>>8) - int(want); return v >= -tol && v <= tol }
		return d(r, c.R) && d(g, c.G) && d(b, c.B)
	}
}

// Differ matches the pixels that differ between a and b.
func Differ(a, b image.Image) func(x, y int) bool {
	return func(x, y int) bool {
		r1, g1, b1, a1 := a.At(x, y).RGBA()
		r2, g2, b2, a2 := b.At(x, y).RGBA()
		return r1 != r2 || g1 != g2 || b1 != b2 || a1 != a2
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
