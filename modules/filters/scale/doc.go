// Package scale holds the tests of the scale filter, a module written in C (scale.c) against
// sdk/c/perch.h. The module itself is built by `make modules` with clang; see README.md.
package scale
