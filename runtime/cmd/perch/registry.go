package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/perch-edge/perch/registry/server"
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

// cmdRegistryServe runs the embedded OCI registry (and the TUF metadata beside it) until ctx is
// done, then drains in-flight requests and returns.
func cmdRegistryServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch registry serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "the storage root `folder` (registry data in DIR/oci, TUF metadata in DIR/tuf)")
	listen := fs.String("listen", server.DefaultAddr, "the listen `address` (port 0: a free port)")
	cert := fs.String("tls-cert", "", "TLS certificate PEM `file` (with --tls-key: serve HTTPS)")
	key := fs.String("tls-key", "", "TLS private key PEM `file`")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("perch registry serve: unexpected argument %q", fs.Arg(0))
	}
	if *root == "" {
		return errors.New("perch registry serve: --root is required")
	}
	var lv slog.LevelVar
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("perch registry serve: --log-level: %w", err)
	}
	log := slog.New(logHandler(stderr, &lv)).With("component", "registry")
	srv, err := server.New(server.Config{Root: *root, Addr: *listen, TLSCert: *cert, TLSKey: *key, Logger: log})
	if err != nil {
		return fmt.Errorf("perch registry serve: %w", err)
	}
	defer srv.Close()
	// One line on stdout once the port is bound, for scripts that start us on port 0.
	fmt.Fprintf(stdout, "perch registry: serving %s (root %s)\n", srv.URL(), *root)
	if err := srv.Serve(ctx); err != nil {
		return fmt.Errorf("perch registry serve: %w", err)
	}
	return nil
}
