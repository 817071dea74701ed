package trust

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// keyFileExt is the extension of the private key files [Init] writes and [LoadKeyDir] reads.
const keyFileExt = ".key"

// GenerateKey returns a new ed25519 private key.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("trust: generate key: %w", err)
	}
	return priv, nil
}

// KeyID returns the TUF key ID of pub: the hex sha256 of its canonical TUF key form.
func KeyID(pub ed25519.PublicKey) (string, error) {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("trust: key id: %w", err)
	}
	id, err := k.ID()
	if err != nil {
		return "", fmt.Errorf("trust: key id: %w", err)
	}
	return id, nil
}

// WriteKey writes priv to path as a PKCS#8 PEM block, mode 0600. It refuses to overwrite an
// existing file: a lost key cannot be regenerated.
func WriteKey(path string, priv ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("trust: write key %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("trust: write key: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("trust: write key %s: %w", path, err)
	}
	return nil
}

// LoadKey reads an ed25519 private key written by [WriteKey].
func LoadKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust: load key: %w", err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("trust: load key %s: want one PEM block of type PRIVATE KEY", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("trust: load key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("trust: load key %s: want an ed25519 key, got %T", path, k)
	}
	return priv, nil
}

// LoadKeyDir reads every *.key file in dir, in name order.
func LoadKeyDir(dir string) ([]ed25519.PrivateKey, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+keyFileExt))
	if err != nil {
		return nil, fmt.Errorf("trust: load keys: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("trust: load keys: no *%s files in %s", keyFileExt, dir)
	}
	slices.Sort(paths)
	keys := make([]ed25519.PrivateKey, 0, len(paths))
	for _, p := range paths {
		k, err := LoadKey(p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// keyring indexes private keys by TUF key ID.
type keyring map[string]ed25519.PrivateKey

func newKeyring(keys []ed25519.PrivateKey) (keyring, error) {
	kr := keyring{}
	for i, k := range keys {
		if len(k) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("trust: key %d: want an ed25519 private key of %d bytes, got %d", i, ed25519.PrivateKeySize, len(k))
		}
		id, err := KeyID(k.Public().(ed25519.PublicKey))
		if err != nil {
			return nil, err
		}
		kr[id] = k
	}
	return kr, nil
}

// keyedSigner is a signer and the TUF key ID of its key.
type keyedSigner struct {
	id string
	signature.Signer
}

// signersFor returns signers for the keys of role in root that kr holds, in root's key order. It
// fails with [ErrMissingKeys] when they cannot reach the role's threshold.
func (kr keyring) signersFor(root *metadata.RootType, role string) ([]keyedSigner, error) {
	r, ok := root.Roles[role]
	if !ok {
		return nil, fmt.Errorf("trust: root has no role %q", role)
	}
	var out []keyedSigner
	for _, id := range r.KeyIDs {
		k, ok := kr[id]
		if !ok {
			continue
		}
		s, err := signature.LoadED25519Signer(k)
		if err != nil {
			return nil, fmt.Errorf("trust: %s key %s: %w", role, id, err)
		}
		out = append(out, keyedSigner{id, s})
	}
	if len(out) < r.Threshold {
		return nil, fmt.Errorf("%w: %s needs %d signatures, the keys given hold %d of its %d keys",
			ErrMissingKeys, role, r.Threshold, len(out), len(r.KeyIDs))
	}
	return out, nil
}

// ErrMissingKeys means the keys handed to a [Repo] cannot reach a role's signature threshold.
var ErrMissingKeys = errors.New("trust: not enough keys")

// addKeys puts the public halves of keys into root under role with threshold.
func addKeys(root *metadata.RootType, role string, threshold int, keys []ed25519.PublicKey) error {
	if len(keys) == 0 {
		return fmt.Errorf("trust: %s: no keys", role)
	}
	for _, pub := range keys {
		k, err := metadata.KeyFromPublicKey(pub)
		if err != nil {
			return fmt.Errorf("trust: %s: %w", role, err)
		}
		if err := root.AddKey(k, role); err != nil {
			return fmt.Errorf("trust: %s: %w", role, err)
		}
	}
	if n := len(root.Roles[role].KeyIDs); threshold < 1 || threshold > n {
		return fmt.Errorf("trust: %s: threshold %d out of range 1..%d (the number of distinct keys)", role, threshold, n)
	}
	root.Roles[role].Threshold = threshold
	return nil
}

func publicKeys(keys []ed25519.PrivateKey) []ed25519.PublicKey {
	out := make([]ed25519.PublicKey, len(keys))
	for i, k := range keys {
		out[i] = k.Public().(ed25519.PublicKey)
	}
	return out
}
