//go:build !linux

package boot

import "os"

// dropCache does nothing outside Linux.
func dropCache(*os.File) {}
