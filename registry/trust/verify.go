package trust

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Errors of the verifying side; test them with errors.Is.
var (
	// ErrMismatch: an artifact's bytes do not match its target's length or hashes.
	ErrMismatch = errors.New("trust: length or hash mismatch")
	// ErrRelease: a target's release counter is not above the installed one.
	ErrRelease = errors.New("trust: release is not newer")
	// ErrHardware: a target does not list the box's hardware.
	ErrHardware = errors.New("trust: wrong hardware")
	// ErrKind: a target is of another kind than the installed artifact.
	ErrKind = errors.New("trust: wrong kind")
	// ErrNoTarget: the trusted targets have no such name.
	ErrNoTarget = errors.New("trust: no such target")
)

// TargetInfo is what the trusted targets metadata says about one artifact's bytes.
type TargetInfo struct {
	Name   string // the target name, such as "modules/thermo"
	Length int64  // the exact length in bytes
	Hashes Hashes // algorithm → lowercase hex; sha256 is the OCI manifest digest
}

func infoOf(name string, tf *metadata.TargetFiles) TargetInfo {
	h := Hashes{}
	for alg, v := range tf.Hashes {
		h[alg] = hex.EncodeToString(v)
	}
	return TargetInfo{Name: name, Length: tf.Length, Hashes: h}
}

// customOf decodes and validates the custom metadata of tf.
func customOf(tf *metadata.TargetFiles) (Custom, error) {
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	sum, ok := tf.Hashes["sha256"]
	if !ok {
		return Custom{}, errors.New("no sha256 hash")
	}
	return decodeCustom(raw, hex.EncodeToString(sum))
}

// VerifyReader reads r to its end and checks its length and every hash of t. It reads at most
// t.Length+1 bytes: a longer body (endless data) is refused without reading the rest. Errors
// from the checks wrap [ErrMismatch]; read errors are returned as they are.
func VerifyReader(r io.Reader, t TargetInfo) error {
	if t.Length < 0 {
		return fmt.Errorf("trust: verify %q: negative length %d", t.Name, t.Length)
	}
	if err := t.Hashes.validate(); err != nil {
		return fmt.Errorf("trust: verify %q: %w", t.Name, err)
	}
	hashers := map[string]hash.Hash{}
	writers := make([]io.Writer, 0, len(t.Hashes))
	for _, alg := range sortedKeys(t.Hashes) {
		var h hash.Hash
		switch alg {
		case "sha256":
			h = sha256.New()
		case "sha512":
			h = sha512.New()
		}
		hashers[alg] = h
		writers = append(writers, h)
	}
	n, err := io.Copy(io.MultiWriter(writers...), io.LimitReader(r, t.Length+1))
	if err != nil {
		return fmt.Errorf("trust: verify %q: after %d bytes: %w", t.Name, n, err)
	}
	if n > t.Length {
		return fmt.Errorf("trust: verify %q: %w: longer than the %d bytes its target allows", t.Name, ErrMismatch, t.Length)
	}
	if n < t.Length {
		return fmt.Errorf("trust: verify %q: %w: %d bytes, its target says %d", t.Name, ErrMismatch, n, t.Length)
	}
	for _, alg := range sortedKeys(hashers) {
		want, _ := hex.DecodeString(t.Hashes[alg]) // validated above
		if subtle.ConstantTimeCompare(hashers[alg].Sum(nil), want) != 1 {
			return fmt.Errorf("trust: verify %q: %w: %s differs", t.Name, ErrMismatch, alg)
		}
	}
	return nil
}

// VerifyFile checks the file at path against t like [VerifyReader]. Use it on every cached
// artifact before use: a power cut can leave a cached file short or stale.
func VerifyFile(path string, t TargetInfo) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("trust: verify %q: %w", t.Name, err)
	}
	defer f.Close()
	if err := VerifyReader(f, t); err != nil {
		return fmt.Errorf("%w (file %s)", err, path)
	}
	return nil
}
