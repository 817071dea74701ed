// Package replay holds the tests of the replay driver, a module written in C (wasm/replay.c)
// against sdk/c/perch.h that reads recorded data played back by hal/replay on a UART port. The
// module itself is built by `make modules` with clang; see README.md.
package replay
