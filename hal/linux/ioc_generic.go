//go:build linux && !mips && !mipsle && !mips64 && !mips64le && !ppc64 && !ppc64le

package linux

// ioctl direction bits and size width of include/uapi/asm-generic/ioctl.h (x86, arm, arm64,
// riscv64, loong64, s390x).
const (
	iocNone     = 0
	iocWrite    = 1
	iocRead     = 2
	iocSizeBits = 14
)
