// Command perch-boot is the bootloader of the perch binary's A/B self-update. A systemd unit
// runs it instead of perch:
//
//	[Service]
//	ExecStart=/usr/lib/perch/perch-boot -dir /var/lib/perch/slots -- run --config /etc/perch/perch.yaml
//	Restart=always
//
// At every start it plays the bootloader on the slots' [boot.FileLoader] environment
// (bootenv.0/bootenv.1 in -dir): a slot under trial takes one of its boots, a trial whose
// boots ran out falls back to the committed slot. It then execs <dir>/<slot>/<file> with the
// arguments after "--", and PERCH_SLOT=<slot> in the environment. perch commits the new slot
// (MarkGood) after its health window; if it crashes or exits first, systemd restarts
// perch-boot, and after the trial's last boot the old slot runs again.
//
// On the very first start (no environment yet) it commits slot A. If neither copy of the
// environment is readable it exits with an error rather than guess.
//
// perch-boot itself is not updated by the self-update: it ships with the OS image.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/perch-edge/perch/runtime/update/boot"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr, syscall.Exec); err != nil {
		fmt.Fprintln(os.Stderr, "perch-boot:", err)
		os.Exit(1)
	}
}

// execFunc replaces the process (syscall.Exec); it returns only on failure.
type execFunc func(argv0 string, argv []string, envv []string) error

func run(ctx context.Context, args []string, stderr io.Writer, exec execFunc) error {
	fl := flag.NewFlagSet("perch-boot", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dir := fl.String("dir", "/var/lib/perch/slots", "folder holding the slots A/ and B/ and the boot environment")
	file := fl.String("file", "perch", "name of the binary inside a slot folder")
	if err := fl.Parse(args); err != nil {
		return err
	}
	l := boot.NewFileLoader(boot.OSFS{}, *dir)
	slot, err := l.Boot(ctx)
	if errors.Is(err, boot.ErrNoEnv) {
		if err := l.Init(ctx, boot.SlotA); err != nil {
			return err
		}
		slot, err = l.Boot(ctx)
	}
	if err != nil {
		return err
	}
	bin := filepath.Join(*dir, string(slot), *file)
	argv := append([]string{bin}, fl.Args()...)
	env := append(os.Environ(), "PERCH_SLOT="+string(slot))
	if err := exec(bin, argv, env); err != nil {
		return fmt.Errorf("exec slot %s: %s: %w", slot, bin, err)
	}
	return nil
}
