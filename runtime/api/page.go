package api

import (
	"embed"
	"io/fs"
	"net/http"
)

// page holds the live page served at / and /page/: plain HTML, CSS and JavaScript, no build
// step and nothing fetched from elsewhere, so it works on a box with no internet.
//
//go:embed page
var page embed.FS

// pageHandler serves page/index.html at / and the page's other files under /page/. The files
// are static and hold no data of the device, so they are served without the token; everything
// the page shows comes from the API, which requires it.
func pageHandler() http.Handler {
	files, err := fs.Sub(page, "page")
	if err != nil { // the embed pattern guarantees the folder
		panic(err)
	}
	static := http.StripPrefix("/page/", http.FileServerFS(files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The page loads its own files and talks to its own origin only.
		h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, files, "index.html")
			return
		}
		static.ServeHTTP(w, r)
	})
}
