package trust

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// Clock is the client's source of trusted time, used to judge metadata expiry. Expiry is never
// switched off: a box that has no trusted time yet (no real-time clock, no time sync since boot)
// must return an error, and the client then refuses to refresh or to answer.
type Clock interface {
	// Now returns the current time, or an error wrapping [ErrNoTrustedTime] when there is none.
	// It may be called from several goroutines at once.
	Now() (time.Time, error)
}

// ErrNoTrustedTime: the [Clock] has no trusted time.
var ErrNoTrustedTime = errors.New("trust: no trusted time")

// DefaultNotBefore is the floor of the default [SystemClock]: a system clock before it is taken
// as unset (a box without a real-time clock boots in 1970).
var DefaultNotBefore = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// SystemClock is the system clock, refused when it reads before NotBefore (zero: no floor). On a
// box without a real-time clock, prefer a Clock that also knows whether time sync has happened.
type SystemClock struct {
	NotBefore time.Time
}

// Now returns time.Now, or an error wrapping [ErrNoTrustedTime] when it is before c.NotBefore.
func (c SystemClock) Now() (time.Time, error) {
	now := time.Now()
	if now.Before(c.NotBefore) {
		return time.Time{}, fmt.Errorf("%w: the system clock reads %s, before %s: is it set?",
			ErrNoTrustedTime, now.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339))
	}
	return now, nil
}

// ClientConfig configures [NewClient].
type ClientConfig struct {
	// Root is the initial root metadata embedded in the box at provisioning (the 1.root.json of
	// perch registry keygen, or a later root). It is trusted unconditionally. Required.
	Root []byte
	// CacheDir holds the cached metadata between refreshes; created (0700) if missing. Required.
	CacheDir string
	// BaseURL is where the metadata is served, such as "https://registry:5000/tuf/". Required.
	BaseURL string
	// HTTPClient fetches the metadata; nil means a client with a 60 s overall timeout. Its
	// timeout bounds reading the body too.
	HTTPClient *http.Client
	// Clock gives trusted time; nil means SystemClock{NotBefore: DefaultNotBefore}.
	Clock Clock
}

// Versions are the versions of the trusted metadata.
type Versions struct {
	Root, Timestamp, Snapshot, Targets int64
}

// Client is the verifying side of Perch's TUF trust. It is safe for concurrent use; refreshes
// are serialized, and lookups see the state of the last refresh that fully succeeded. Only one
// Client (in one process) may use a cache folder at a time.
type Client struct {
	root     []byte // the embedded root
	rootVer  int64
	cacheDir string
	baseURL  string
	http     *http.Client
	clock    Clock

	refreshMu sync.Mutex // serializes Refresh
	mu        sync.Mutex // guards state
	state     *trustedState
}

// trustedState is what one successful refresh established.
type trustedState struct {
	versions Versions
	expires  time.Time // the earliest expiry of the four roles
	targets  map[string]*metadata.TargetFiles
}

// NewClient returns a client that trusts cfg.Root. It does no I/O beyond creating the cache
// folder; call [Client.Refresh] before looking targets up.
func NewClient(cfg ClientConfig) (*Client, error) {
	var errs []error
	if len(cfg.Root) == 0 {
		errs = append(errs, errors.New("Root: empty (the embedded initial root is required)"))
	}
	if cfg.CacheDir == "" {
		errs = append(errs, errors.New("CacheDir: empty"))
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("BaseURL: want an http or https URL, got %q", cfg.BaseURL))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("trust: new client: %w", err)
	}
	root, err := metadata.Root().FromBytes(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("trust: new client: Root: %w", err)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return nil, fmt.Errorf("trust: new client: Root: %w", err)
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("trust: new client: %w", err)
	}
	// Staging folders left by a refresh that a crash interrupted.
	stale, _ := filepath.Glob(filepath.Join(cfg.CacheDir, ".refresh-*"))
	for _, p := range stale {
		os.RemoveAll(p)
	}
	c := &Client{
		root:     slices.Clone(cfg.Root),
		rootVer:  root.Signed.Version,
		cacheDir: cfg.CacheDir,
		baseURL:  cfg.BaseURL,
		http:     cfg.HTTPClient,
		clock:    cfg.Clock,
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 60 * time.Second}
	}
	if c.clock == nil {
		c.clock = SystemClock{NotBefore: DefaultNotBefore}
	}
	return c, nil
}

// cachedRoles are the metadata files the cache keeps, in the order a refresh commits them.
var cachedRoles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// Refresh runs the TUF client workflow (root → timestamp → snapshot → targets) with a new
// go-tuf updater against the server, judging expiry by the client's [Clock]. On success the new
// metadata become the client's trusted state and are fsynced into the cache; on any failure the
// trusted state and the cache are left as they were, and the error wraps go-tuf's (test it with
// errors.Is against metadata.ErrRepository and its kinds, such as metadata.ErrBadVersionNumber).
func (c *Client) Refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	now, err := c.clock.Now()
	if err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}
	stage, err := os.MkdirTemp(c.cacheDir, ".refresh-")
	if err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := c.stageCache(stage); err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}

	cfg, err := config.New(c.baseURL, c.trustedRoot())
	if err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}
	cfg.LocalMetadataDir = stage
	cfg.LocalTargetsDir = stage // unused: artifacts come from the OCI registry
	cfg.Fetcher = fetchFunc(func(u string, maxLength int64) ([]byte, error) {
		return c.download(ctx, u, maxLength)
	})
	up, err := updater.New(cfg)
	if err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}
	up.UnsafeSetRefTime(now) // the go-tuf seam for the reference time: our trusted clock
	if err := up.Refresh(); err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}
	st, err := newTrustedState(up)
	if err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}
	if err := c.commitCache(stage); err != nil {
		return fmt.Errorf("trust: refresh: %w", err)
	}
	c.mu.Lock()
	c.state = st
	c.mu.Unlock()
	return nil
}

// trustedRoot returns the root to start a refresh from: the cached root.json if it is intact,
// signed by its own keys and newer than the embedded root, else the embedded root. A cache cut
// short by a power cut, or older than a box re-provisioned with a newer root, is never preferred.
func (c *Client) trustedRoot() []byte {
	data, err := os.ReadFile(filepath.Join(c.cacheDir, "root.json"))
	if err != nil {
		return c.root
	}
	cached, err := metadata.Root().FromBytes(data)
	if err != nil || cached.Signed.Type != metadata.ROOT || cached.Signed.Version <= c.rootVer {
		return c.root
	}
	if err := cached.VerifyDelegate(metadata.ROOT, cached); err != nil {
		return c.root
	}
	return data
}

// stageCache copies the cached timestamp, snapshot and targets into stage, skipping any that do
// not parse as their role: go-tuf aborts on a cached file that is not JSON (such as an empty
// file after a power cut) instead of fetching a fresh one.
func (c *Client) stageCache(stage string) error {
	for _, role := range []string{metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		data, err := os.ReadFile(filepath.Join(c.cacheDir, role+".json"))
		if err != nil {
			continue
		}
		if parseRole(role, data) != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(stage, role+".json"), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// parseRole reports whether data parses as metadata of role.
func parseRole(role string, data []byte) error {
	var err error
	switch role {
	case metadata.ROOT:
		_, err = metadata.Root().FromBytes(data)
	case metadata.TIMESTAMP:
		_, err = metadata.Timestamp().FromBytes(data)
	case metadata.SNAPSHOT:
		_, err = metadata.Snapshot().FromBytes(data)
	case metadata.TARGETS:
		_, err = metadata.Targets().FromBytes(data)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	return err
}

// commitCache fsyncs the metadata go-tuf left in stage and moves them into the cache.
func (c *Client) commitCache(stage string) error {
	for _, role := range cachedRoles {
		p := filepath.Join(stage, role+".json")
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := syncFile(p); err != nil {
			return err
		}
		if err := os.Rename(p, filepath.Join(c.cacheDir, role+".json")); err != nil {
			return err
		}
	}
	return syncDir(c.cacheDir)
}

// newTrustedState reads what a successful refresh established.
func newTrustedState(up *updater.Updater) (*trustedState, error) {
	tm := up.GetTrustedMetadataSet()
	targets := tm.Targets[metadata.TARGETS]
	if tm.Root == nil || tm.Timestamp == nil || tm.Snapshot == nil || targets == nil {
		return nil, errors.New("incomplete metadata after refresh")
	}
	if targets.Signed.Delegations != nil {
		return nil, errors.New("targets delegate to other roles; Perch does not use delegations")
	}
	st := &trustedState{
		versions: Versions{
			Root:      tm.Root.Signed.Version,
			Timestamp: tm.Timestamp.Signed.Version,
			Snapshot:  tm.Snapshot.Signed.Version,
			Targets:   targets.Signed.Version,
		},
		expires: tm.Root.Signed.Expires,
		targets: targets.Signed.Targets,
	}
	for _, e := range []time.Time{tm.Timestamp.Signed.Expires, tm.Snapshot.Signed.Expires, targets.Signed.Expires} {
		if e.Before(st.expires) {
			st.expires = e
		}
	}
	return st, nil
}

// Versions returns the versions of the trusted metadata: all zero before the first successful
// [Client.Refresh].
func (c *Client) Versions() Versions {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		return Versions{}
	}
	return c.state.versions
}

// Names returns the trusted target names, sorted.
func (c *Client) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		return nil
	}
	return sortedKeys(c.state.targets)
}

// ErrNotRefreshed: the client has no trusted targets yet.
var ErrNotRefreshed = errors.New("trust: no successful refresh yet")

// ErrExpired: the trusted metadata expired since the last refresh; refresh again.
var ErrExpired = errors.New("trust: trusted metadata expired")

// Target returns the trusted custom metadata and file info of target name. It fails if the
// trusted metadata has expired by the client's clock since the refresh, or if the target's
// custom metadata does not decode strictly.
func (c *Client) Target(name string) (Custom, TargetInfo, error) {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st == nil {
		return Custom{}, TargetInfo{}, fmt.Errorf("trust: target %q: %w", name, ErrNotRefreshed)
	}
	now, err := c.clock.Now()
	if err != nil {
		return Custom{}, TargetInfo{}, fmt.Errorf("trust: target %q: %w", name, err)
	}
	if now.After(st.expires) {
		return Custom{}, TargetInfo{}, fmt.Errorf("trust: target %q: %w at %s", name, ErrExpired, st.expires.UTC().Format(time.RFC3339))
	}
	tf, ok := st.targets[name]
	if !ok {
		return Custom{}, TargetInfo{}, fmt.Errorf("trust: target %q: %w", name, ErrNoTarget)
	}
	cu, err := customOf(tf)
	if err != nil {
		return Custom{}, TargetInfo{}, fmt.Errorf("trust: target %q: %w", name, err)
	}
	return cu, infoOf(name, tf), nil
}

// Check says whether the box may install target name over installed (the zero Custom when
// nothing is installed) on hardware (an architecture or board id). It refuses, with errors
// wrapping [ErrRelease], [ErrHardware] or [ErrKind] (all that apply), a release counter not
// above installed.Release, a target that lists neither hardware nor "any", and a target of
// another kind than installed (when installed.Kind is set).
func (c *Client) Check(name string, installed Custom, hardware string) error {
	cu, _, err := c.Target(name)
	if err != nil {
		return err
	}
	var errs []error
	if installed.Kind != "" && cu.Kind != installed.Kind {
		errs = append(errs, fmt.Errorf("%w: target %q is a %s, the installed artifact a %s", ErrKind, name, cu.Kind, installed.Kind))
	}
	if hardware == "" {
		errs = append(errs, fmt.Errorf("%w: no hardware given to check target %q against", ErrHardware, name))
	} else if !slices.Contains(cu.Hardware, hardware) && !slices.Contains(cu.Hardware, HardwareAny) {
		errs = append(errs, fmt.Errorf("%w: target %q is for %q, this box is %q", ErrHardware, name, cu.Hardware, hardware))
	}
	if cu.Release <= installed.Release {
		errs = append(errs, fmt.Errorf("%w: target %q has release %d, the installed one %d", ErrRelease, name, cu.Release, installed.Release))
	}
	return errors.Join(errs...)
}

// fetchFunc adapts a function to go-tuf's fetcher.Fetcher; Refresh builds one per call so the
// call's context reaches every request.
type fetchFunc func(url string, maxLength int64) ([]byte, error)

// DownloadFile implements fetcher.Fetcher.
func (f fetchFunc) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	return f(u, maxLength)
}

// download fetches u, reading at most maxLength+1 bytes of the body, with go-tuf's error types
// (a 404 ends the root walk).
func (c *Client) download(ctx context.Context, u string, maxLength int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: u}
	}
	if cl := resp.Header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n > maxLength {
			return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: length %d is above the %d allowed", u, n, maxLength)}
		}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: longer than the %d bytes allowed", u, maxLength)}
	}
	return data, nil
}
