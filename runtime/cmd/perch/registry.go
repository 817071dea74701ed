package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// registryCommand is one `perch registry` subcommand. To add one, append it to registryCommands.
type registryCommand struct {
	name  string
	usage string // the argument synopsis after "perch registry NAME"
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var registryCommands = []registryCommand{
	{"serve", "--root DIR [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--log-level LEVEL]", cmdRegistryServe},
	{"keygen", "--out DIR [--root-keys N --root-threshold K --targets-keys N --targets-threshold K]",
		func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return cmdRegistryKeygen(args, stdout, stderr)
		}},
	{"ls", "--registry URL (--root FILE | --tuf DIR) [--json]", cmdRegistryLs},
}

func registryUsage() string {
	var b strings.Builder
	b.WriteString("Usage:\n")
	for _, c := range registryCommands {
		fmt.Fprintf(&b, "  perch registry %s %s\n", c.name, c.usage)
	}
	return b.String()
}

// cmdRegistry dispatches `perch registry SUBCOMMAND ...`.
func cmdRegistry(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, registryUsage())
		return errors.New("perch registry: no subcommand")
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, registryUsage())
		return nil
	}
	for _, c := range registryCommands {
		if c.name == name {
			return c.run(ctx, rest, stdout, stderr)
		}
	}
	fmt.Fprint(stderr, registryUsage())
	return fmt.Errorf("perch registry: unknown subcommand %q", name)
}

// RegistryBinaryEnv names the perch-registry binary `perch registry serve` runs; without it,
// perch-registry beside this executable, then on $PATH.
const RegistryBinaryEnv = "PERCH_REGISTRY_BIN"

// cmdRegistryServe runs the registry server, the perch-registry binary (runtime/cmd/perch-registry;
// `make build` builds it beside perch), with the same arguments and streams, until it exits or
// ctx is done (then it is sent SIGTERM: it drains its requests and exits).
func cmdRegistryServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	bin, err := registryBinary()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("perch registry serve: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		err = <-done
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("perch registry serve: exit status %d", ee.ExitCode())
	}
	return err
}

// registryBinary finds perch-registry: $PERCH_REGISTRY_BIN, beside this executable, or on $PATH.
func registryBinary() (string, error) {
	if p := os.Getenv(RegistryBinaryEnv); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "perch-registry"); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("perch-registry"); err == nil {
		return p, nil
	}
	return "", errors.New("perch registry serve: no perch-registry binary beside perch, on $PATH or in $" + RegistryBinaryEnv +
		" (make build builds it into build/)")
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
