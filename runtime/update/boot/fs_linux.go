package boot

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to drop f's clean cached pages so that the next reads come from
// the device. Errors are ignored: it is advice (some file systems, e.g. overlayfs, ignore it).
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
