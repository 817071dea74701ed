package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/perch-edge/perch/registry/trust"
)

const lsUsage = `perch registry ls: list the signed targets a registry serves

Usage:
  perch registry ls --registry URL (--root FILE | --tuf DIR) [--json]

Refreshes the registry's TUF metadata (/tuf/) the way a box does, trusting the root in --root
(default: DIR/1.root.json of --tuf), and lists every target: name, kind, version, release,
hardware, manifest digest and size (the artifact's config and layers, read from its manifest,
which is checked against the target). Nothing is listed unless the metadata verifies.
`

// maxManifestBytes bounds the OCI manifest ls reads (the update agent's bound).
const maxManifestBytes = 4 << 20

// lsEntry is one target in the listing (the --json form).
type lsEntry struct {
	Name       string   `json:"name"`
	Kind       string   `json:"kind"`
	Version    string   `json:"version"`
	Release    uint64   `json:"release"`
	Hardware   []string `json:"hardware"`
	ABI        string   `json:"abi,omitempty"`
	Repository string   `json:"repository"`
	Digest     string   `json:"digest"`
	// ManifestBytes is the OCI manifest's length (what the target pins); SizeBytes the config
	// and layers it lists, or -1 when the manifest could not be fetched (Error says why).
	ManifestBytes int64  `json:"manifest_bytes"`
	SizeBytes     int64  `json:"size_bytes"`
	Error         string `json:"error,omitempty"`
}

// cmdRegistryLs runs "perch registry ls".
func cmdRegistryLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch registry ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, lsUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	reg := fs.String("registry", "", "the registry's base `URL` (required)")
	tufDir := fs.String("tuf", "", "the registry's TUF `folder`: its 1.root.json is the default --root")
	rootFile := fs.String("root", "", "the trusted root metadata `file`, such as the 1.root.json boxes embed")
	asJSON := fs.Bool("json", false, "print JSON (one array of targets)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if *reg == "" {
		errs = append(errs, errors.New("--registry is required"))
	} else if _, _, err := registryHost(*reg); err != nil {
		errs = append(errs, err)
	}
	if *rootFile == "" && *tufDir == "" {
		errs = append(errs, errors.New("--root or --tuf is required: the root to trust"))
	}
	if err := errors.Join(errs...); err != nil {
		fs.Usage()
		return fmt.Errorf("perch registry ls: %w", err)
	}
	if *rootFile == "" {
		*rootFile = filepath.Join(*tufDir, "1.root.json")
	}
	root, err := os.ReadFile(*rootFile)
	if err != nil {
		return fmt.Errorf("perch registry ls: --root: %w", err)
	}
	cache, err := os.MkdirTemp("", "perch-ls-")
	if err != nil {
		return fmt.Errorf("perch registry ls: %w", err)
	}
	defer os.RemoveAll(cache)
	base := strings.TrimSuffix(*reg, "/")
	hc := &http.Client{Timeout: 60 * time.Second}
	tc, err := trust.NewClient(trust.ClientConfig{Root: root, CacheDir: cache, BaseURL: base + "/tuf/", HTTPClient: hc})
	if err != nil {
		return fmt.Errorf("perch registry ls: %w", err)
	}
	if err := tc.Refresh(ctx); err != nil {
		return fmt.Errorf("perch registry ls: %s: %w", *reg, err)
	}
	entries := []lsEntry{}
	for _, name := range tc.Names() {
		c, info, err := tc.Target(name)
		if err != nil {
			return fmt.Errorf("perch registry ls: %w", err)
		}
		e := lsEntry{Name: name, Kind: c.Kind, Version: c.Version, Release: c.Release, Hardware: c.Hardware, ABI: c.ABI,
			Repository: c.Repository, Digest: c.Digest, ManifestBytes: info.Length, SizeBytes: -1}
		if size, err := artifactSize(ctx, hc, base, c, info); err != nil {
			e.Error = err.Error()
		} else {
			e.SizeBytes = size
		}
		entries = append(entries, e)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	v := tc.Versions()
	fmt.Fprintf(stdout, "%s: %d targets (root v%d, targets v%d, snapshot v%d, timestamp v%d)\n",
		*reg, len(entries), v.Root, v.Targets, v.Snapshot, v.Timestamp)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tVERSION\tRELEASE\tHARDWARE\tDIGEST\tSIZE")
	for _, e := range entries {
		size := fmt.Sprint(e.SizeBytes)
		if e.Error != "" {
			size = "? (" + e.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.Name, e.Kind, e.Version, e.Release,
			strings.Join(e.Hardware, ","), shortDigest(e.Digest), size)
	}
	return tw.Flush()
}

// shortDigest is "sha256:" and the first 12 hex digits.
func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

// artifactSize fetches target's OCI manifest, checks it against the signed length and hashes,
// and returns the bytes of the config and layers it lists.
func artifactSize(ctx context.Context, hc *http.Client, base string, c trust.Custom, info trust.TargetInfo) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+c.Repository+"/manifests/"+c.Digest, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("manifest: %s", resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, min(info.Length, maxManifestBytes)+1))
	if err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	if err := trust.VerifyReader(strings.NewReader(string(raw)), info); err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}
