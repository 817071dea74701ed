// Package pms5003 holds the tests of the pms5003 driver, a module written in C (wasm/pms5003.c)
// against sdk/c/perch.h. The module itself is built by `make modules` with clang; see README.md.
package pms5003
