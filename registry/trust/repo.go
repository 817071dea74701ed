package trust

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Expiry says how long each role's metadata stays valid after it is signed.
type Expiry struct {
	Root      time.Duration
	Targets   time.Duration
	Snapshot  time.Duration
	Timestamp time.Duration
}

// DefaultExpiry is root 1 year, targets 90 days, snapshot 1 week, timestamp 1 day: the
// timestamp must be re-signed ([Repo.RefreshTimestamp]) at least daily and the snapshot
// ([Repo.RefreshSnapshot]) weekly, or clients stop accepting updates.
func DefaultExpiry() Expiry {
	return Expiry{Root: 365 * 24 * time.Hour, Targets: 90 * 24 * time.Hour, Snapshot: 7 * 24 * time.Hour, Timestamp: 24 * time.Hour}
}

// withDefaults fills zero fields from [DefaultExpiry].
func (e Expiry) withDefaults() Expiry {
	d := DefaultExpiry()
	if e.Root == 0 {
		e.Root = d.Root
	}
	if e.Targets == 0 {
		e.Targets = d.Targets
	}
	if e.Snapshot == 0 {
		e.Snapshot = d.Snapshot
	}
	if e.Timestamp == 0 {
		e.Timestamp = d.Timestamp
	}
	return e
}

func (e Expiry) validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"root", e.Root}, {"targets", e.Targets}, {"snapshot", e.Snapshot}, {"timestamp", e.Timestamp}} {
		if f.d < time.Minute {
			errs = append(errs, fmt.Errorf("trust: %s expiry %s: want at least 1m", f.name, f.d))
		}
	}
	return errors.Join(errs...)
}

// RepoOptions tunes a [Repo]. The zero value is ready to use.
type RepoOptions struct {
	// Expiry of the metadata the repo signs; zero fields take [DefaultExpiry]'s.
	Expiry Expiry
	// Now is the signing time that expiries count from; nil means time.Now.
	Now func() time.Time
}

// Repo is the signing side of a TUF repository: the <registry root>/tuf folder the registry
// serves under /tuf/, with consistent snapshots (N.root.json, N.targets.json, N.snapshot.json)
// and one timestamp.json.
//
// A Repo is not safe for concurrent use, and only one Repo (in one process) may write a folder
// at a time.
type Repo struct {
	dir  string
	keys keyring
	exp  Expiry
	now  func() time.Time

	root *metadata.Metadata[metadata.RootType]

	targets        *metadata.Metadata[metadata.TargetsType] // the published targets plus staged changes
	targetsVersion int64                                    // the published version; 0 before the first publish
	targetsData    []byte                                   // the published N.targets.json

	snapshotVersion  int64
	snapshotData     []byte
	timestampVersion int64
}

var rootFileRE = regexp.MustCompile(`^([1-9][0-9]*)\.root\.json$`)

// OpenRepo opens the TUF folder dir (which holds at least 1.root.json) with keys, the private
// keys the operator hands over for this session: each is matched to its roles by key ID, and a
// method fails with [ErrMissingKeys] only when it needs a role the keys do not cover.
func OpenRepo(dir string, keys []ed25519.PrivateKey, o RepoOptions) (*Repo, error) {
	kr, err := newKeyring(keys)
	if err != nil {
		return nil, err
	}
	r := &Repo{dir: dir, keys: kr, exp: o.Expiry.withDefaults(), now: o.Now}
	if err := r.exp.validate(); err != nil {
		return nil, err
	}
	if r.now == nil {
		r.now = time.Now
	}
	if err := r.load(); err != nil {
		return nil, fmt.Errorf("trust: open %s: %w", dir, err)
	}
	return r, nil
}

// load reads the newest root and the published timestamp → snapshot → targets chain.
func (r *Repo) load() error {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return err
	}
	var newest int64
	for _, e := range entries {
		if m := rootFileRE.FindStringSubmatch(e.Name()); m != nil {
			if v, err := strconv.ParseInt(m[1], 10, 64); err == nil && v > newest {
				newest = v
			}
		}
	}
	if newest == 0 {
		return errors.New("no N.root.json (create one with perch registry keygen)")
	}
	name := fmt.Sprintf("%d.root.json", newest)
	root, err := metadata.Root().FromFile(filepath.Join(r.dir, name))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if root.Signed.Version != newest {
		return fmt.Errorf("%s: holds version %d", name, root.Signed.Version)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if !root.Signed.ConsistentSnapshot {
		return fmt.Errorf("%s: consistent_snapshot is off; Perch repositories need it", name)
	}
	r.root = root
	r.targets = metadata.Targets(time.Time{})
	r.targets.Signed.Version = 0

	tsData, err := os.ReadFile(filepath.Join(r.dir, "timestamp.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing published yet
	}
	if err != nil {
		return err
	}
	ts, err := metadata.Timestamp().FromBytes(tsData)
	if err != nil {
		return fmt.Errorf("timestamp.json: %w", err)
	}
	snapMeta, ok := ts.Signed.Meta["snapshot.json"]
	if !ok {
		return errors.New("timestamp.json: no snapshot.json entry")
	}
	snapName := fmt.Sprintf("%d.snapshot.json", snapMeta.Version)
	snapData, err := os.ReadFile(filepath.Join(r.dir, snapName))
	if err != nil {
		return err
	}
	if err := snapMeta.VerifyLengthHashes(snapData); err != nil {
		return fmt.Errorf("%s does not match timestamp.json: %w", snapName, err)
	}
	snap, err := metadata.Snapshot().FromBytes(snapData)
	if err != nil {
		return fmt.Errorf("%s: %w", snapName, err)
	}
	targetsMeta, ok := snap.Signed.Meta["targets.json"]
	if !ok {
		return fmt.Errorf("%s: no targets.json entry", snapName)
	}
	targetsName := fmt.Sprintf("%d.targets.json", targetsMeta.Version)
	targetsData, err := os.ReadFile(filepath.Join(r.dir, targetsName))
	if err != nil {
		return err
	}
	if err := targetsMeta.VerifyLengthHashes(targetsData); err != nil {
		return fmt.Errorf("%s does not match %s: %w", targetsName, snapName, err)
	}
	targets, err := metadata.Targets().FromBytes(targetsData)
	if err != nil {
		return fmt.Errorf("%s: %w", targetsName, err)
	}
	if targets.Signed.Targets == nil {
		targets.Signed.Targets = map[string]*metadata.TargetFiles{}
	}
	r.targets, r.targetsVersion, r.targetsData = targets, targets.Signed.Version, targetsData
	r.snapshotVersion, r.snapshotData = snap.Signed.Version, snapData
	r.timestampVersion = ts.Signed.Version
	return nil
}

// Dir returns the TUF folder the repo writes.
func (r *Repo) Dir() string { return r.dir }

// RootVersion returns the version of the newest root.
func (r *Repo) RootVersion() int64 { return r.root.Signed.Version }

// Versions returns the published targets, snapshot and timestamp versions (0 before the first
// [Repo.Publish]).
func (r *Repo) Versions() (targets, snapshot, timestamp int64) {
	return r.targetsVersion, r.snapshotVersion, r.timestampVersion
}

// AddTarget stages the target name: an OCI manifest of length bytes with hashes (sha256 is
// required: it is the manifest digest), described by c. If c.Digest is empty it is filled in
// from hashes. The release counter must be above the one of the target's current entry, if any.
// Nothing is visible to clients until [Repo.Publish].
func (r *Repo) AddTarget(name string, length int64, hashes Hashes, c Custom) error {
	if err := validTargetName(name); err != nil {
		return fmt.Errorf("trust: add target: %w", err)
	}
	var errs []error
	if length <= 0 {
		errs = append(errs, fmt.Errorf("length: want > 0, got %d", length))
	}
	if err := hashes.validate(); err != nil {
		errs = append(errs, err)
	} else {
		if c.Digest == "" {
			c.Digest = "sha256:" + hashes["sha256"]
		}
		if err := c.validate(hashes["sha256"]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("trust: add target %q: %w", name, err)
	}
	if old, ok := r.targets.Signed.Targets[name]; ok {
		prev, err := customOf(old)
		if err != nil {
			return fmt.Errorf("trust: add target %q: the current entry: %w", name, err)
		}
		if c.Release <= prev.Release {
			return fmt.Errorf("trust: add target %q: %w: release %d is not above the current release %d",
				name, ErrRelease, c.Release, prev.Release)
		}
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("trust: add target %q: %w", name, err)
	}
	msg := json.RawMessage(raw)
	tf := &metadata.TargetFiles{Length: length, Hashes: metadata.Hashes{}, Custom: &msg, Path: name}
	for alg, h := range hashes {
		tf.Hashes[alg], _ = hex.DecodeString(h) // validated above
	}
	r.targets.Signed.Targets[name] = tf
	return nil
}

// RemoveTarget stages the removal of target name.
func (r *Repo) RemoveTarget(name string) error {
	if _, ok := r.targets.Signed.Targets[name]; !ok {
		return fmt.Errorf("trust: remove target %q: no such target", name)
	}
	delete(r.targets.Signed.Targets, name)
	return nil
}

// Target returns the staged or published target name.
func (r *Repo) Target(name string) (Custom, TargetInfo, error) {
	tf, ok := r.targets.Signed.Targets[name]
	if !ok {
		return Custom{}, TargetInfo{}, fmt.Errorf("trust: target %q: %w", name, ErrNoTarget)
	}
	c, err := customOf(tf)
	if err != nil {
		return Custom{}, TargetInfo{}, fmt.Errorf("trust: target %q: %w", name, err)
	}
	return c, infoOf(name, tf), nil
}

// Publish signs the staged targets as the next targets version, then a new snapshot and a new
// timestamp. It needs the targets, snapshot and timestamp keys (each up to its threshold). It
// writes N.targets.json and N.snapshot.json first and timestamp.json last, each fsynced, so a
// client never sees a timestamp whose snapshot or targets are missing.
func (r *Repo) Publish() error {
	if _, err := r.keys.signersFor(&r.root.Signed, metadata.SNAPSHOT); err != nil {
		return fmt.Errorf("trust: publish: %w", err)
	}
	if _, err := r.keys.signersFor(&r.root.Signed, metadata.TIMESTAMP); err != nil {
		return fmt.Errorf("trust: publish: %w", err)
	}
	t, err := cloneMetadata(r.targets, metadata.Targets())
	if err != nil {
		return fmt.Errorf("trust: publish: %w", err)
	}
	t.Signatures = []metadata.Signature{}
	t.Signed.Version = r.targetsVersion + 1
	t.Signed.Expires = r.now().UTC().Add(r.exp.Targets).Truncate(time.Second)
	data, err := signAndEncode(r, t, metadata.TARGETS)
	if err != nil {
		return fmt.Errorf("trust: publish: %w", err)
	}
	if err := r.publishTargets(data, t.Signed.Version); err != nil {
		return fmt.Errorf("trust: publish: %w", err)
	}
	r.targets = t
	return nil
}

// RefreshSnapshot re-signs the snapshot (next version, new expiry) over the published targets
// and then the timestamp. It needs only the snapshot and timestamp keys: run it before the
// snapshot expires while the targets keys stay offline.
func (r *Repo) RefreshSnapshot() error {
	if r.targetsData == nil {
		return errors.New("trust: refresh snapshot: nothing published yet")
	}
	if err := r.publishSnapshot(r.targetsData, r.targetsVersion); err != nil {
		return fmt.Errorf("trust: refresh snapshot: %w", err)
	}
	return nil
}

// RefreshTimestamp re-signs the timestamp (next version, new expiry) over the published
// snapshot. It needs only the timestamp key: run it well within the timestamp expiry.
func (r *Repo) RefreshTimestamp() error {
	if r.snapshotData == nil {
		return errors.New("trust: refresh timestamp: nothing published yet")
	}
	ts, data, err := r.buildTimestamp(r.timestampVersion+1, r.snapshotData, r.snapshotVersion)
	if err != nil {
		return fmt.Errorf("trust: refresh timestamp: %w", err)
	}
	if err := writeFileSync(r.dir, "timestamp.json", data, 0o644); err != nil {
		return err
	}
	r.timestampVersion = ts.Signed.Version
	return nil
}

// publishTargets writes targetsData as N.targets.json (N = version) and then a new snapshot
// and timestamp over it.
func (r *Repo) publishTargets(targetsData []byte, version int64) error {
	if err := writeFileSync(r.dir, fmt.Sprintf("%d.targets.json", version), targetsData, 0o644); err != nil {
		return err
	}
	if err := r.publishSnapshot(targetsData, version); err != nil {
		return err
	}
	r.targetsVersion, r.targetsData = version, targetsData
	return nil
}

// publishSnapshot writes a new N.snapshot.json listing targets version targetsVersion (whose
// file holds targetsData) and then a new timestamp.json over it.
func (r *Repo) publishSnapshot(targetsData []byte, targetsVersion int64) error {
	snap, snapData, err := r.buildSnapshot(r.snapshotVersion+1, targetsData, targetsVersion)
	if err != nil {
		return err
	}
	ts, tsData, err := r.buildTimestamp(r.timestampVersion+1, snapData, snap.Signed.Version)
	if err != nil {
		return err
	}
	if err := writeFileSync(r.dir, fmt.Sprintf("%d.snapshot.json", snap.Signed.Version), snapData, 0o644); err != nil {
		return err
	}
	if testHookBeforeTimestamp != nil {
		if err := testHookBeforeTimestamp(); err != nil {
			return err
		}
	}
	if err := writeFileSync(r.dir, "timestamp.json", tsData, 0o644); err != nil {
		return err
	}
	r.snapshotVersion, r.snapshotData = snap.Signed.Version, snapData
	r.timestampVersion = ts.Signed.Version
	return nil
}

// buildSnapshot signs snapshot version listing targets version targetsVersion with the length
// and sha256 of targetsData.
func (r *Repo) buildSnapshot(version int64, targetsData []byte, targetsVersion int64) (*metadata.Metadata[metadata.SnapshotType], []byte, error) {
	s := metadata.Snapshot(r.now().UTC().Add(r.exp.Snapshot).Truncate(time.Second))
	s.Signed.Version = version
	s.Signed.Meta = map[string]*metadata.MetaFiles{"targets.json": metaFile(targetsVersion, targetsData)}
	data, err := signAndEncode(r, s, metadata.SNAPSHOT)
	return s, data, err
}

// buildTimestamp signs timestamp version pointing at snapshot version snapshotVersion with the
// length and sha256 of snapshotData.
func (r *Repo) buildTimestamp(version int64, snapshotData []byte, snapshotVersion int64) (*metadata.Metadata[metadata.TimestampType], []byte, error) {
	t := metadata.Timestamp(r.now().UTC().Add(r.exp.Timestamp).Truncate(time.Second))
	t.Signed.Version = version
	t.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": metaFile(snapshotVersion, snapshotData)}
	data, err := signAndEncode(r, t, metadata.TIMESTAMP)
	return t, data, err
}

// testHookBeforeTimestamp, when set by a test, runs after the snapshot is written and before the
// timestamp is: an error stands for a crash between the two.
var testHookBeforeTimestamp func() error

func metaFile(version int64, data []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(data)
	return &metadata.MetaFiles{Version: version, Length: int64(len(data)), Hashes: metadata.Hashes{"sha256": sum[:]}}
}

// signAndEncode signs m with every key of role that the repo holds, checks the result against
// the root's threshold for role, and encodes it.
func signAndEncode[T metadata.Roles](r *Repo, m *metadata.Metadata[T], role string) ([]byte, error) {
	signers, err := r.keys.signersFor(&r.root.Signed, role)
	if err != nil {
		return nil, err
	}
	for _, s := range signers {
		if _, err := m.Sign(s); err != nil {
			return nil, fmt.Errorf("sign %s: %w", role, err)
		}
	}
	if err := r.root.VerifyDelegate(role, m); err != nil {
		return nil, fmt.Errorf("verify the new %s: %w", role, err)
	}
	return m.ToBytes(true)
}

// RotateRoot writes the next root, N+1.root.json, whose root role is newKeys with threshold,
// and whose other roles are unchanged. It is signed by the current root keys (the repo must
// hold enough of them to reach the current threshold) and by every new key (which must reach
// the new threshold), so a client holding only root N accepts it. The new keys join the repo's
// keys.
func (r *Repo) RotateRoot(threshold int, newKeys ...ed25519.PrivateKey) error {
	oldSigners, err := r.keys.signersFor(&r.root.Signed, metadata.ROOT)
	if err != nil {
		return fmt.Errorf("trust: rotate root: %w", err)
	}
	add, err := newKeyring(newKeys)
	if err != nil {
		return fmt.Errorf("trust: rotate root: %w", err)
	}
	next, err := cloneMetadata(r.root, metadata.Root())
	if err != nil {
		return fmt.Errorf("trust: rotate root: %w", err)
	}
	next.Signatures = []metadata.Signature{}
	next.Signed.Version++
	next.Signed.Expires = r.now().UTC().Add(r.exp.Root).Truncate(time.Second)
	for _, id := range append([]string(nil), next.Signed.Roles[metadata.ROOT].KeyIDs...) {
		if err := next.Signed.RevokeKey(id, metadata.ROOT); err != nil {
			return fmt.Errorf("trust: rotate root: %w", err)
		}
	}
	if err := addKeys(&next.Signed, metadata.ROOT, threshold, publicKeys(newKeys)); err != nil {
		return fmt.Errorf("trust: rotate root: %w", err)
	}
	newSigners, err := add.signersFor(&next.Signed, metadata.ROOT)
	if err != nil {
		return fmt.Errorf("trust: rotate root: %w", err)
	}
	seen := map[string]bool{}
	for _, s := range append(oldSigners, newSigners...) {
		if seen[s.id] {
			continue
		}
		seen[s.id] = true
		if _, err := next.Sign(s); err != nil {
			return fmt.Errorf("trust: rotate root: %w", err)
		}
	}
	if err := r.root.VerifyDelegate(metadata.ROOT, next); err != nil {
		return fmt.Errorf("trust: rotate root: signed by the old root: %w", err)
	}
	if err := next.VerifyDelegate(metadata.ROOT, next); err != nil {
		return fmt.Errorf("trust: rotate root: signed by the new root: %w", err)
	}
	data, err := next.ToBytes(true)
	if err != nil {
		return fmt.Errorf("trust: rotate root: %w", err)
	}
	if err := writeFileSync(r.dir, fmt.Sprintf("%d.root.json", next.Signed.Version), data, 0o644); err != nil {
		return err
	}
	r.root = next
	for id, k := range add {
		r.keys[id] = k
	}
	return nil
}

// cloneMetadata deep-copies m through its JSON form into into.
func cloneMetadata[T metadata.Roles](m, into *metadata.Metadata[T]) (*metadata.Metadata[T], error) {
	data, err := m.ToBytes(false)
	if err != nil {
		return nil, err
	}
	return into.FromBytes(data)
}
