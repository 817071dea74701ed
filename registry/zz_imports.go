// Package registry holds, for now, only the imports that keep the registry dependencies in go.mod
// while their packages are written; it goes away once registry/server and registry/artifact use them.
package registry

import (
	_ "github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/theupdateframework/go-tuf/v2/metadata"
	_ "github.com/theupdateframework/go-tuf/v2/metadata/updater"
	_ "oras.land/oras-go/v2"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/chromedp/chromedp"
)
