package trust

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// InitOptions configures [Init]. Zero counts and thresholds mean 1.
type InitOptions struct {
	RootKeys, RootThreshold       int // root keys: N, and K of them needed to sign a root
	TargetsKeys, TargetsThreshold int // targets keys: N, and K of them needed to sign targets
	// Expiry of the metadata; zero fields take [DefaultExpiry]'s.
	Expiry Expiry
	// Now is the signing time; nil means time.Now.
	Now func() time.Time
}

// KeyFile is one private key file [Init] wrote.
type KeyFile struct {
	Role string // root, targets, snapshot or timestamp
	Path string
	ID   string // the TUF key ID
}

// InitResult says what [Init] wrote.
type InitResult struct {
	Keys []KeyFile // in role order: root, targets, snapshot, timestamp
	Root string    // the path of 1.root.json: embed it in boxes at provisioning
}

// maxKeysPerRole bounds the key counts [Init] accepts.
const maxKeysPerRole = 16

func (o *InitOptions) validate() error {
	var errs []error
	for _, r := range []struct {
		role string
		n, k *int
	}{{"root", &o.RootKeys, &o.RootThreshold}, {"targets", &o.TargetsKeys, &o.TargetsThreshold}} {
		if *r.n == 0 {
			*r.n = 1
		}
		if *r.k == 0 {
			*r.k = 1
		}
		if *r.n < 1 || *r.n > maxKeysPerRole {
			errs = append(errs, fmt.Errorf("%s keys: %d out of range 1..%d", r.role, *r.n, maxKeysPerRole))
		} else if *r.k < 1 || *r.k > *r.n {
			errs = append(errs, fmt.Errorf("%s threshold: %d out of range 1..%d (the number of %s keys)", r.role, *r.k, *r.n, r.role))
		}
	}
	o.Expiry = o.Expiry.withDefaults()
	if err := o.Expiry.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Init creates a new repository: fresh ed25519 keys in keysDir (created 0700; each key file
// 0600; the folder must not exist or be empty) — root and targets keys distinct, plus one
// snapshot and one timestamp key — and, in tufDir (created if missing; it must hold no
// metadata yet), the signed 1.root.json and a first, empty publish (1.targets.json,
// 1.snapshot.json, timestamp.json), so the registry can serve it at once.
//
// keysDir is meant to stay off the registry box; the snapshot and timestamp keys may be copied
// to it to re-sign those roles online.
func Init(keysDir, tufDir string, o InitOptions) (*InitResult, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("trust: init: %w", err)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	if entries, err := os.ReadDir(keysDir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("trust: init: keys folder %s is not empty: refusing to overwrite keys", keysDir)
	}
	if matches, _ := filepath.Glob(filepath.Join(tufDir, "*.json")); len(matches) > 0 {
		return nil, fmt.Errorf("trust: init: %s already holds metadata (%s)", tufDir, filepath.Base(matches[0]))
	}
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		return nil, fmt.Errorf("trust: init: %w", err)
	}
	if err := os.Chmod(keysDir, 0o700); err != nil {
		return nil, fmt.Errorf("trust: init: %w", err)
	}
	if err := os.MkdirAll(tufDir, 0o755); err != nil {
		return nil, fmt.Errorf("trust: init: %w", err)
	}

	root := metadata.Root(now().UTC().Add(o.Expiry.Root).Truncate(time.Second))
	res := &InitResult{}
	var all []ed25519.PrivateKey
	for _, r := range []struct {
		role      string
		n, thresh int
	}{
		{metadata.ROOT, o.RootKeys, o.RootThreshold},
		{metadata.TARGETS, o.TargetsKeys, o.TargetsThreshold},
		{metadata.SNAPSHOT, 1, 1},
		{metadata.TIMESTAMP, 1, 1},
	} {
		keys := make([]ed25519.PrivateKey, r.n)
		for i := range keys {
			k, err := GenerateKey()
			if err != nil {
				return nil, err
			}
			keys[i] = k
			id, err := KeyID(k.Public().(ed25519.PublicKey))
			if err != nil {
				return nil, err
			}
			path := filepath.Join(keysDir, fmt.Sprintf("%s-%d%s", r.role, i+1, keyFileExt))
			if err := WriteKey(path, k); err != nil {
				return nil, err
			}
			res.Keys = append(res.Keys, KeyFile{Role: r.role, Path: path, ID: id})
		}
		if err := addKeys(&root.Signed, r.role, r.thresh, publicKeys(keys)); err != nil {
			return nil, err
		}
		all = append(all, keys...)
	}
	if err := syncDir(keysDir); err != nil {
		return nil, err
	}
	kr, err := newKeyring(all)
	if err != nil {
		return nil, err
	}
	signers, err := kr.signersFor(&root.Signed, metadata.ROOT)
	if err != nil {
		return nil, err
	}
	for _, s := range signers {
		if _, err := root.Sign(s); err != nil {
			return nil, fmt.Errorf("trust: init: sign root: %w", err)
		}
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return nil, fmt.Errorf("trust: init: verify root: %w", err)
	}
	data, err := root.ToBytes(true)
	if err != nil {
		return nil, fmt.Errorf("trust: init: %w", err)
	}
	if err := writeFileSync(tufDir, "1.root.json", data, 0o644); err != nil {
		return nil, err
	}
	res.Root = filepath.Join(tufDir, "1.root.json")

	repo, err := OpenRepo(tufDir, all, RepoOptions{Expiry: o.Expiry, Now: now})
	if err != nil {
		return nil, err
	}
	if err := repo.Publish(); err != nil {
		return nil, err
	}
	return res, nil
}
