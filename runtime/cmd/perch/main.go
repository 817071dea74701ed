// Command perch is the Perch edge runtime and its tools.
//
//	perch run --config perch.yaml [--for 60s] [--quiet]   run a pipeline
//	perch validate perch.yaml                              check a config without running it
//	perch db --db var/perch.db [VIEW ...]                  print the recorder's views
//	perch status --db var/perch.db [--json]                modules, alerts, outbox, uptime
//	perch module new NAME [--dir DIR] [--kind KIND]        scaffold a Go module
//	perch registry serve|keygen|ls ...                     the signed artifact registry
//	perch push --registry URL --keys DIR --tuf DIR KIND FILE... --target NAME   sign an artifact
//	perch promote --registry URL ... --group G --stage PCT --module M=TARGET ... sign a deployment
//	perch model train|quantize|inspect|eval ...            anomaly models
//	perch version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Version is the runtime's version, set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

const usage = `perch: the Perch edge runtime

Usage:
  perch run --config FILE [--for DURATION] [--quiet] [--log-level LEVEL]
  perch validate FILE
  perch db --db FILE [VIEW ...]
  perch status --db FILE [--json]
  perch module new NAME [--dir DIR] [--kind filter|rule|driver] [--perch PATH]
  perch registry serve --root DIR [--listen ADDR]
  perch registry keygen --out DIR
  perch registry ls --registry URL (--root FILE | --tuf DIR) [--json]
  perch push --registry URL --keys DIR --tuf DIR KIND FILE... --target NAME [--version V] [--release N]
             [--hardware any|amd64,...] [--abi perch:v1]
  perch promote --registry URL --keys DIR --tuf DIR --deployment NAME --group G --stage PCT
                [--module M=TARGET ...] [--model M=TARGET ...] [--firmware TARGET] [--runtime TARGET]
  perch model train|quantize|inspect|eval ...   (perch model help)
  perch version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode()) // perch run: ExitRestart
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("perch: no command")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "validate":
		return cmdValidate(ctx, rest, stdout, stderr)
	case "db":
		return cmdDB(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "module":
		return cmdModule(rest, stdout, stderr)
	case "registry":
		return cmdRegistry(ctx, rest, stdout, stderr)
	case "push":
		return cmdPush(ctx, rest, stdout, stderr)
	case "promote":
		return cmdPromote(ctx, rest, stdout, stderr)
	case "model":
		return cmdModel(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "perch", Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("perch: unknown command %q", cmd)
	}
}
