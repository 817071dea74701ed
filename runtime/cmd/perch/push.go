package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/perch-edge/perch/registry/artifact"
	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime/config"
	perchupdate "github.com/perch-edge/perch/runtime/update"
)

const pushUsage = `perch push: push an artifact to the registry and sign a TUF target for it

Usage:
  perch push --registry URL --keys DIR --tuf DIR KIND FILE... --target NAME
             [--version V] [--release N] [--hardware any|amd64,arm64,...] [--abi perch:v1]

KIND is module (NAME.wasm, with NAME.manifest.yaml beside it), model (NAME.onnx NAME.card.yaml),
deployment (one YAML document; see perch promote), firmware (one image) or runtime (one perch
binary, which boxes install into their A/B slots: see update.runtime in the config).

The files go to OCI repository NAME (tag rN, N the release); then target NAME is signed in the
TUF repository at --tuf, pinning the OCI manifest (its length and sha256), with the kind,
version, hardware, ABI, release, repository and digest in its custom metadata, and published:
N.targets.json and N.snapshot.json first, timestamp.json last.

  - --tuf is the registry's ROOT/tuf folder (what perch registry serve --root ROOT serves under
    /tuf/). Run push on the registry host, or against a copy of that folder that you then sync
    back (rsync the N.*.json files first and timestamp.json last). One push or promote at a time
    per folder: they take a lock on it.
  - --keys holds the targets, snapshot and timestamp keys (perch registry keygen's DIR/keys). They
    are needed where you sign, never on a box.
  - --release defaults to the target's current release + 1; a release that does not grow is
    refused, as boxes would refuse it.
  - A module's version and ABI come from its NAME.manifest.yaml (which travels in the OCI
    manifest's annotation ` + perchupdate.ModuleManifestAnnotation + `); --version and --abi, if given, must agree.
  - --hardware defaults to any, except for firmware and runtime, which must name what they run
    on (a runtime: the GOARCH it was built for, such as arm64).
  - An http:// registry URL is allowed only on loopback.
`

// cmdPush runs "perch push".
func cmdPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, pushUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	var pf publishFlags
	pf.register(fs)
	target := fs.String("target", "", "the TUF target and OCI repository `NAME`, such as modules/thermo (required)")
	version := fs.String("version", "", "the artifact's human `version` (a module's defaults to its manifest's)")
	rel := fs.Uint64("release", 0, "the release counter `N` (default: the current release + 1)")
	hardware := fs.String("hardware", "", "comma-separated `list` of architectures or boards, or any (default any; firmware and runtime: required)")
	abi := fs.String("abi", "", "the `ABI` the artifact needs, such as perch:v1 (a module's comes from its manifest)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	errs := pf.check()
	if *target == "" {
		errs = append(errs, errors.New("--target is required"))
	}
	if len(pos) < 2 {
		errs = append(errs, fmt.Errorf("want KIND FILE..., got %q", pos))
	}
	if err := errors.Join(errs...); err != nil {
		fs.Usage()
		return fmt.Errorf("perch push: %w", err)
	}
	kind, files := artifact.Kind(pos[0]), pos[1:]
	r := release{target: *target, kind: kind, files: files,
		custom: trust.Custom{Kind: string(kind), Version: *version, ABI: *abi, Release: *rel}}
	switch kind {
	case artifact.Module, artifact.Model, artifact.Deployment:
		r.custom.Hardware = []string{trust.HardwareAny}
	case artifact.Firmware, artifact.Runtime:
		if *hardware == "" {
			return fmt.Errorf("perch push: %s needs --hardware: the architectures or boards it runs on", kind)
		}
	default:
		return fmt.Errorf("perch push: unknown KIND %q (want module, model, deployment, firmware or runtime)", kind)
	}
	if *hardware != "" {
		r.custom.Hardware = nil
		for _, h := range strings.Split(*hardware, ",") {
			if h = strings.TrimSpace(h); h == "" {
				return fmt.Errorf("perch push: --hardware %q: an empty name", *hardware)
			}
			r.custom.Hardware = append(r.custom.Hardware, h)
		}
	}
	if kind == artifact.Module {
		if err := r.moduleManifest(); err != nil {
			return fmt.Errorf("perch push: %w", err)
		}
	} else if r.custom.Version == "" {
		return fmt.Errorf("perch push: --version is required for a %s", kind)
	}
	p, err := openPublisher(pf, stderr)
	if err != nil {
		return fmt.Errorf("perch push: %w", err)
	}
	defer p.close()
	c, desc, err := p.publish(ctx, r)
	if err != nil {
		return fmt.Errorf("perch push: %w", err)
	}
	fmt.Fprintf(stdout, "%s: %s %s release %d signed and published (manifest %s, %d bytes; hardware %s)\n",
		r.target, c.Kind, c.Version, c.Release, desc.Digest, desc.Size, strings.Join(c.Hardware, ","))
	return nil
}

// moduleManifest reads the Perch manifest beside a module's .wasm file (NAME.manifest.yaml),
// checks it, takes the version and ABI from it, and puts it in the OCI manifest annotation the
// update agent reads.
func (r *release) moduleManifest() error {
	if len(r.files) != 1 || !strings.HasSuffix(r.files[0], ".wasm") {
		return fmt.Errorf("a module is one NAME.wasm file, got %q", r.files)
	}
	path := strings.TrimSuffix(r.files[0], ".wasm") + ".manifest.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("the module's manifest: %w", err)
	}
	man, err := config.ParseManifest(path, data)
	if err != nil {
		return err
	}
	if r.custom.Version == "" {
		r.custom.Version = man.Version
	} else if r.custom.Version != man.Version {
		return fmt.Errorf("--version %q, but %s says version %q: boxes report the manifest's", r.custom.Version, path, man.Version)
	}
	abi := fmt.Sprintf("perch:v%d", man.ABI)
	if r.custom.ABI == "" {
		r.custom.ABI = abi
	} else if r.custom.ABI != abi {
		return fmt.Errorf("--abi %q, but %s says abi %d (%s)", r.custom.ABI, path, man.ABI, abi)
	}
	r.annotations = map[string]string{perchupdate.ModuleManifestAnnotation: string(data)}
	return nil
}

// publishFlags are the flags push and promote share.
type publishFlags struct {
	registry, keys, tuf string
}

func (pf *publishFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&pf.registry, "registry", "", "the registry's base `URL`, such as https://registry.example:5000 (required)")
	fs.StringVar(&pf.keys, "keys", "", "the signing keys `folder` (perch registry keygen's DIR/keys) (required)")
	fs.StringVar(&pf.tuf, "tuf", "", "the registry's TUF `folder` (ROOT/tuf of perch registry serve) (required)")
}

func (pf *publishFlags) check() []error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"--registry", pf.registry}, {"--keys", pf.keys}, {"--tuf", pf.tuf}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s is required", f.name))
		}
	}
	return errs
}

// registryHost parses a registry base URL into the host[:port] that OCI references start with,
// and whether it speaks plain HTTP.
func registryHost(raw string) (host string, plainHTTP bool, err error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return "", false, fmt.Errorf("--registry %q: want http(s)://HOST[:PORT] with no path", raw)
	}
	return u.Host, u.Scheme == "http", nil
}

// publisher pushes artifacts to a registry and signs them into its TUF folder. It holds an
// exclusive lock on the folder until close.
type publisher struct {
	host   string
	client *artifact.Client
	repo   *trust.Repo
	lock   *os.File
	stderr io.Writer
}

// openPublisher locks the TUF folder (waiting for another push or promote to finish) and opens
// it with the keys.
func openPublisher(pf publishFlags, stderr io.Writer) (*publisher, error) {
	host, plain, err := registryHost(pf.registry)
	if err != nil {
		return nil, err
	}
	keys, err := trust.LoadKeyDir(pf.keys)
	if err != nil {
		return nil, fmt.Errorf("--keys: %w", err)
	}
	lock, err := lockDir(pf.tuf, stderr)
	if err != nil {
		return nil, fmt.Errorf("--tuf: %w", err)
	}
	repo, err := trust.OpenRepo(pf.tuf, keys, trust.RepoOptions{})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("--tuf: %w", err)
	}
	return &publisher{host: host, client: &artifact.Client{PlainHTTP: plain}, repo: repo, lock: lock, stderr: stderr}, nil
}

func (p *publisher) close() { p.lock.Close() } // closing the descriptor drops the lock

// lockDir takes an exclusive flock on folder dir itself (no lock file appears among what the
// registry serves). It says so on stderr when it has to wait.
func lockDir(dir string, stderr io.Writer) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintf(stderr, "waiting for another push or promote to finish with %s...\n", dir)
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// release is one artifact to push and sign.
type release struct {
	target      string
	kind        artifact.Kind
	files       []string
	annotations map[string]string
	// custom is the target's metadata; Repository and Digest are filled in by publish, and a
	// zero Release means the current release + 1.
	custom trust.Custom
}

// publish pushes r's files to OCI repository r.target (tag rN), then signs target r.target
// pinning the manifest and publishes the TUF metadata. A release that does not grow is refused
// before anything is uploaded.
func (p *publisher) publish(ctx context.Context, r release) (trust.Custom, ocispec.Descriptor, error) {
	c := r.custom
	cur, _, err := p.repo.Target(r.target)
	switch {
	case errors.Is(err, trust.ErrNoTarget):
		cur = trust.Custom{}
	case err != nil:
		return c, ocispec.Descriptor{}, err
	}
	if c.Release == 0 {
		c.Release = cur.Release + 1
	} else if c.Release <= cur.Release {
		return c, ocispec.Descriptor{}, fmt.Errorf("target %q: %w: --release %d is not above the current release %d (%s %s); omit --release to take %d",
			r.target, trust.ErrRelease, c.Release, cur.Release, cur.Kind, cur.Version, cur.Release+1)
	}
	if cur.Kind != "" && cur.Kind != c.Kind {
		return c, ocispec.Descriptor{}, fmt.Errorf("target %q is a %s; it cannot take a %s", r.target, cur.Kind, c.Kind)
	}
	ref := fmt.Sprintf("%s/%s:r%d", p.host, r.target, c.Release)
	fmt.Fprintf(p.stderr, "pushing %s %s to %s\n", r.kind, strings.Join(baseNames(r.files), " "), ref)
	desc, err := p.client.PushWith(ctx, ref, r.kind, artifact.PushOptions{Annotations: r.annotations, Progress: newProgress(p.stderr)}, r.files...)
	if err != nil {
		return c, desc, err
	}
	if desc.Digest.Algorithm() != digest.SHA256 {
		return c, desc, fmt.Errorf("manifest digest %s: TUF targets pin sha256", desc.Digest)
	}
	c.Repository, c.Digest = r.target, desc.Digest.String()
	if err := p.repo.AddTarget(r.target, desc.Size, trust.Hashes{"sha256": desc.Digest.Encoded()}, c); err != nil {
		return c, desc, err
	}
	if err := p.repo.Publish(); err != nil {
		return c, desc, fmt.Errorf("%w (the artifact is in the registry as %s@%s, but not signed)", err, r.target, desc.Digest)
	}
	return c, desc, nil
}

func baseNames(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Base(p)
	}
	return out
}

// parseInterspersed parses flags that may come before, between and after the positional
// arguments (perch push KIND FILE --target NAME), and returns the positional ones. "--" ends
// the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// progress shows blob uploads on w: a progress bar per blob when w is a terminal, one line per
// blob otherwise (logs, CI). It implements artifact.Progress; it is used by one push at a time.
type progress struct {
	w     io.Writer
	tty   bool
	bar   *progressbar.ProgressBar
	start time.Time
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// blobName is the file a blob carries, or what it is.
func blobName(d ocispec.Descriptor) string {
	if t := d.Annotations[ocispec.AnnotationTitle]; t != "" {
		return t
	}
	return "config"
}

func (p *progress) Begin(d ocispec.Descriptor, r io.Reader) io.Reader {
	p.start = time.Now()
	if !p.tty {
		return r
	}
	p.bar = progressbar.NewOptions64(d.Size,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription("  "+blobName(d)),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
		progressbar.OptionSetRenderBlankState(true),
	)
	return io.TeeReader(r, p.bar)
}

func (p *progress) End(d ocispec.Descriptor, err error) {
	took := time.Since(p.start)
	if p.bar != nil {
		if err == nil {
			p.bar.Finish()
		} else {
			p.bar.Exit()
			fmt.Fprintln(p.w)
		}
		p.bar = nil
	}
	switch {
	case err != nil:
		fmt.Fprintf(p.w, "  %s: upload failed: %v\n", blobName(d), err)
	case !p.tty:
		fmt.Fprintf(p.w, "  %s: %d bytes sent in %v (%.1f MB/s)\n", blobName(d), d.Size, took.Round(time.Millisecond),
			float64(d.Size)/1e6/max(took.Seconds(), 1e-6))
	}
}

var _ artifact.Progress = (*progress)(nil)
