// Command perch-registry is Perch's registry server: the OCI distribution API of the reference
// implementation (distribution v3, embedded) with the TUF metadata beside it. It is its own
// binary so that the perch binary a box runs does not carry the registry's dependencies (about
// 26 MB of resident memory); `perch registry serve` runs it.
//
//	perch-registry serve --root DIR [--listen ADDR] [--tls-cert F --tls-key F] [--log-level L]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/perch-edge/perch/registry/server"
	"github.com/perch-edge/perch/runtime/internal/logx"
)

const usage = "Usage:\n  perch-registry serve --root DIR [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--log-level LEVEL]\n"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return errors.New("perch registry: no subcommand")
		}
		return fmt.Errorf("perch registry: unknown subcommand %q", args[0])
	}
	return serve(ctx, args[1:], stdout, stderr)
}

// serve runs the embedded OCI registry (and the TUF metadata beside it) until ctx is done,
// then drains in-flight requests and returns.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	log := slog.New(logx.Handler(stderr, &lv)).With("component", "registry")
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
