// Package gpio holds the tests of the gpio driver, a module written in C (wasm/gpio.c) against
// sdk/c/perch.h. The module itself is built by `make modules` with clang; see README.md.
package gpio
