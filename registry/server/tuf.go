package server

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// tufHandler serves the files under root read-only: GET and HEAD only, no directory listings,
// nothing outside root (os.Root refuses symbolic links that leave it). The request path has had
// its /tuf/ prefix stripped.
//
// TUF metadata files are JSON. A versioned file (N.root.json, N.targets.json, N.snapshot.json)
// never changes once published, so it may be cached for good; timestamp.json (and any other
// name) must be revalidated on every request, or clients would miss new releases.
func tufHandler(root *os.Root) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := r.URL.Path
		if name == "" || strings.HasSuffix(name, "/") || !fs.ValidPath(name) {
			http.NotFound(w, r)
			return
		}
		f, err := root.Open(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				http.NotFound(w, r)
			} else {
				// Outside root (a symbolic link) or unreadable: say nothing more.
				http.Error(w, "forbidden", http.StatusForbidden)
			}
			return
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil || !info.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", contentType(name))
		h.Set("X-Content-Type-Options", "nosniff")
		if versioned(path.Base(name)) {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, name, info.ModTime(), f)
	})
}

func contentType(name string) string {
	if strings.HasSuffix(name, ".json") {
		return "application/json"
	}
	return "application/octet-stream"
}

// versioned reports whether base starts with a version number and a dot, as in "3.root.json".
func versioned(base string) bool {
	i := strings.IndexByte(base, '.')
	if i <= 0 {
		return false
	}
	for _, c := range base[:i] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
