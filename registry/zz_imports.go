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
