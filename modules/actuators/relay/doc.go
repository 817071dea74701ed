// Package relay holds the tests of the relay actuator, a module written in C (wasm/relay.c)
// against sdk/c/perch.h. The module itself is built by `make modules` with clang; see README.md.
package relay
