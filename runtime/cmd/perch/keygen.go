package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/perch-edge/perch/registry/trust"
)

const keygenUsage = `perch registry keygen: create the TUF keys and first metadata of a Perch registry

Usage:
  perch registry keygen --out DIR [--root-keys N --root-threshold K]
                        [--targets-keys N --targets-threshold K] [--ROLE-expires DURATION ...]

Writes DIR/keys/ (ed25519 private keys, one 0600 file each: root-1.key..., targets-1.key...,
snapshot-1.key, timestamp-1.key) and DIR/tuf/ (1.root.json and a first, empty publish).

  - Keep DIR/keys OFF the registry box: store each root and targets key with a different holder
    (a fleet wants e.g. --root-keys 3 --root-threshold 2). The snapshot and timestamp keys may be
    copied to the registry box, which re-signs those roles before they expire.
  - Copy DIR/tuf/ to <registry root>/tuf/; the registry serves it under /tuf/.
  - Embed DIR/tuf/1.root.json in every box at provisioning: it is the box's initial trust.
`

// cmdRegistryKeygen runs "perch registry keygen".
func cmdRegistryKeygen(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("perch registry keygen", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, keygenUsage, "\nFlags:\n")
		flags.PrintDefaults()
	}
	def := trust.DefaultExpiry()
	var (
		out  string
		o    trust.InitOptions
		exp  trust.Expiry
		errs []error
	)
	flags.StringVar(&out, "out", "", "create `DIR`/keys and DIR/tuf (required)")
	flags.IntVar(&o.RootKeys, "root-keys", 1, "number of root keys `N`")
	flags.IntVar(&o.RootThreshold, "root-threshold", 1, "root keys `K` needed to sign a root")
	flags.IntVar(&o.TargetsKeys, "targets-keys", 1, "number of targets keys `N`")
	flags.IntVar(&o.TargetsThreshold, "targets-threshold", 1, "targets keys `K` needed to sign targets")
	flags.DurationVar(&exp.Root, "root-expires", def.Root, "root metadata validity `DURATION`")
	flags.DurationVar(&exp.Targets, "targets-expires", def.Targets, "targets metadata validity `DURATION`")
	flags.DurationVar(&exp.Snapshot, "snapshot-expires", def.Snapshot, "snapshot metadata validity `DURATION`")
	flags.DurationVar(&exp.Timestamp, "timestamp-expires", def.Timestamp, "timestamp metadata validity `DURATION`")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", flags.Args()))
	}
	if out == "" {
		errs = append(errs, errors.New("--out is required"))
	}
	for name, n := range map[string]int{"--root-keys": o.RootKeys, "--root-threshold": o.RootThreshold,
		"--targets-keys": o.TargetsKeys, "--targets-threshold": o.TargetsThreshold} {
		if n < 1 {
			errs = append(errs, fmt.Errorf("%s: want at least 1, got %d", name, n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		flags.Usage()
		return fmt.Errorf("perch registry keygen: %w", err)
	}
	o.Expiry = exp
	keysDir, tufDir := filepath.Join(out, "keys"), filepath.Join(out, "tuf")
	res, err := trust.Init(keysDir, tufDir, o)
	if err != nil {
		return fmt.Errorf("perch registry keygen: %w", err)
	}
	fmt.Fprintf(stdout, "keys (keep OFF the registry box):\n")
	for _, k := range res.Keys {
		fmt.Fprintf(stdout, "  %-9s %s  id %s\n", k.Role, k.Path, k.ID[:16])
	}
	fmt.Fprintf(stdout, "\nmetadata (copy to <registry root>/tuf/):\n  %s\n", tufDir)
	fmt.Fprintf(stdout, "\nembed in every box: %s\n", res.Root)
	fmt.Fprintf(stdout, "\nthresholds: root %d of %d, targets %d of %d; expiry: root %s, targets %s, snapshot %s, timestamp %s\n",
		o.RootThreshold, o.RootKeys, o.TargetsThreshold, o.TargetsKeys,
		exp.Root, exp.Targets, exp.Snapshot, exp.Timestamp)
	fmt.Fprintf(stdout, "re-sign the timestamp within %s and the snapshot within %s, or boxes stop updating.\n",
		exp.Timestamp, exp.Snapshot)
	return nil
}
