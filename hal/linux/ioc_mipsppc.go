//go:build linux && (mips || mipsle || mips64 || mips64le || ppc64 || ppc64le)

package linux

// ioctl direction bits and size width of arch/{mips,powerpc}/include/uapi/asm/ioctl.h.
const (
	iocNone     = 1
	iocWrite    = 4
	iocRead     = 2
	iocSizeBits = 13
)
