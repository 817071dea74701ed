package trust

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// The kinds of artifact a target can be.
const (
	KindModule     = "module"
	KindModel      = "model"
	KindDeployment = "deployment"
	KindFirmware   = "firmware"
	KindRuntime    = "runtime" // the perch binary itself, installed into A/B slots
)

// kinds lists the valid [Custom.Kind] values.
var kinds = []string{KindModule, KindModel, KindDeployment, KindFirmware, KindRuntime}

// HardwareAny in [Custom.Hardware] marks an artifact that runs on any hardware (a deployment
// document, a Wasm module).
const HardwareAny = "any"

// Custom is Perch's metadata in the custom field of a TUF target. It is signed with the
// targets metadata, so a client can trust every field once [Client.Refresh] succeeded.
type Custom struct {
	// Kind is module, model, deployment, firmware or runtime.
	Kind string `json:"kind"`
	// Version is the artifact's human version, such as "1.4.2". Ordering uses Release, not this.
	Version string `json:"version"`
	// Hardware lists what the artifact runs on: architectures ("arm64", "amd64"), board ids
	// ("rpi4", "jetson-orin-nano") or "any".
	Hardware []string `json:"hardware"`
	// ABI is the module ABI or runtime interface the artifact needs, such as "perch:v1"; may be
	// empty for artifacts that have none.
	ABI string `json:"abi,omitempty"`
	// Release is the release counter: it grows with every release of this target name, and a
	// client refuses one that is not above what it has installed (see [Client.Check]). At most
	// 2^63-1: canonical JSON has no larger integers.
	Release uint64 `json:"release"`
	// Repository is the OCI repository that holds the artifact, such as "modules/thermo".
	Repository string `json:"repository"`
	// Digest is the OCI manifest digest, "sha256:<64 hex>"; the target's sha256 hash.
	Digest string `json:"digest"`
}

// Hashes maps a hash algorithm ("sha256", "sha512") to a lowercase hex digest.
type Hashes map[string]string

// hashSizes gives the digest size in bytes of each accepted algorithm.
var hashSizes = map[string]int{"sha256": 32, "sha512": 64}

// validate reports every problem with h at once.
func (h Hashes) validate() error {
	var errs []error
	if _, ok := h["sha256"]; !ok {
		errs = append(errs, errors.New("hashes: sha256 is required"))
	}
	for _, alg := range sortedKeys(h) {
		size, ok := hashSizes[alg]
		if !ok {
			errs = append(errs, fmt.Errorf("hashes: unknown algorithm %q (want sha256 or sha512)", alg))
			continue
		}
		v := h[alg]
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != size || strings.ToLower(v) != v {
			errs = append(errs, fmt.Errorf("hashes: %s: want %d lowercase hex digits, got %q", alg, 2*size, v))
		}
	}
	return errors.Join(errs...)
}

// validate reports every problem with c at once; digest is the sha256 the target's hashes give.
func (c *Custom) validate(sha256Hex string) error {
	var errs []error
	if !slices.Contains(kinds, c.Kind) {
		errs = append(errs, fmt.Errorf("kind: want one of %s, got %q", strings.Join(kinds, ", "), c.Kind))
	}
	if strings.TrimSpace(c.Version) == "" {
		errs = append(errs, errors.New("version: empty"))
	}
	if len(c.Hardware) == 0 {
		errs = append(errs, fmt.Errorf("hardware: empty (list architectures or boards, or %q)", HardwareAny))
	}
	for i, h := range c.Hardware {
		if strings.TrimSpace(h) == "" || h != strings.TrimSpace(h) {
			errs = append(errs, fmt.Errorf("hardware[%d]: want a non-empty name without spaces around it, got %q", i, h))
		}
	}
	if c.Release == 0 {
		errs = append(errs, errors.New("release: must be at least 1"))
	}
	if c.Release > math.MaxInt64 {
		errs = append(errs, fmt.Errorf("release: %d is above %d, the largest integer TUF's canonical JSON signs", c.Release, int64(math.MaxInt64)))
	}
	if c.Repository == "" || strings.ContainsAny(c.Repository, " \t\n@:") {
		errs = append(errs, fmt.Errorf("repository: want an OCI repository name such as \"modules/thermo\", got %q", c.Repository))
	}
	if want := "sha256:" + sha256Hex; c.Digest != want {
		errs = append(errs, fmt.Errorf("digest: want the target's sha256, %q, got %q", want, c.Digest))
	}
	return errors.Join(errs...)
}

// decodeCustom decodes the custom field of a target strictly: unknown fields are errors, so an
// older client refuses a target whose metadata it cannot fully understand.
func decodeCustom(raw []byte, sha256Hex string) (Custom, error) {
	var c Custom
	if len(raw) == 0 {
		return c, errors.New("no custom metadata")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Custom{}, fmt.Errorf("custom metadata: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Custom{}, errors.New("custom metadata: data after the object")
	}
	if err := c.validate(sha256Hex); err != nil {
		return Custom{}, fmt.Errorf("custom metadata: %w", err)
	}
	return c, nil
}

// validTargetName reports whether name is a target path we publish: lowercase letters, digits,
// '.', '_', '-' and '/', no empty, "." or ".." parts.
func validTargetName(name string) error {
	if name == "" || len(name) > 200 {
		return fmt.Errorf("target name %q: want 1 to 200 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return fmt.Errorf("target name %q: character %q not allowed (want a-z, 0-9, '.', '_', '-', '/')", name, r)
		}
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("target name %q: empty, \".\" or \"..\" path part", name)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
