// Package adxl345 holds the tests of the adxl345 driver, a module written in C (wasm/adxl345.c)
// against sdk/c/perch.h. The module itself is built by `make modules` with clang; see README.md.
package adxl345
