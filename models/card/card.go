// Package card reads and writes model cards: the YAML file that travels with a model's .onnx file
// and says how to feed it, how to read its score, where it came from and how well it did.
//
// A model artifact is two files side by side: NAME.onnx and NAME.card.yaml. The model takes one
// float32 input of shape [N, len(Features)×Window] and returns N scores ([N] or [N, 1]); see
// models/ort. Row i of the input is the normalised window ending at sample i, time-major: the
// oldest sample's features first, in Features order, the newest sample's last.
//
// Cards are plain data; Load validates one and checks the model file's digest.
package card

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Suffix is the file name suffix of a card; the model beside it is NAME.onnx.
const Suffix = ".card.yaml"

// Precisions a card can declare.
const (
	FP32 = "fp32"
	Int8 = "int8"
)

// Card describes one model artifact.
type Card struct {
	Name      string `yaml:"name"`
	Version   string `yaml:"version"`
	Model     string `yaml:"model"`     // the .onnx file, relative to the card's folder
	SHA256    string `yaml:"sha256"`    // hex SHA-256 of the .onnx file
	Precision string `yaml:"precision"` // fp32 or int8
	Detector  string `yaml:"detector"`  // what produced the score, e.g. "pca-t2q" or "autoencoder"

	// Features are the input features in model order: record field names.
	Features []string `yaml:"features"`
	// Window is how many consecutive samples make one input row (1: each sample alone).
	Window int `yaml:"window"`
	// Normalization is applied by the host before the model: x' = (x − Mean[j]) / Std[j].
	Normalization Normalization `yaml:"normalization"`
	// Score says how the model's raw output becomes an alert.
	Score Score `yaml:"score"`

	Training   Training     `yaml:"training"`
	Evaluation []Evaluation `yaml:"evaluation,omitempty"`
}

// Normalization holds one mean and one standard deviation (both > 0 for Std) per feature.
type Normalization struct {
	Mean []float64 `yaml:"mean"`
	Std  []float64 `yaml:"std"`
}

// Score turns raw scores into an alert state, causally, one sample at a time.
type Score struct {
	// Likelihood, if set, turns each raw score into an anomaly score in [0, 1] before the
	// smoothing and the threshold (see [Likelihood]).
	Likelihood *LikelihoodOptions `yaml:"likelihood,omitempty"`
	// Smooth is the number of most recent raw scores averaged before comparing (1: none).
	Smooth int `yaml:"smooth"`
	// Threshold raises the alert when the smoothed score is above it.
	Threshold float64 `yaml:"threshold"`
	// Clear ends the alert when the smoothed score falls below it (≤ Threshold; hysteresis).
	Clear float64 `yaml:"clear"`
	// Consecutive is how many samples in a row must be above Threshold to raise (≥ 1).
	Consecutive int `yaml:"consecutive"`
}

// Training records what the model was fitted on.
type Training struct {
	Data   string `yaml:"data"`   // a description or file name of the training data
	SHA256 string `yaml:"sha256"` // hex SHA-256 of the training data as read
	Rows   int    `yaml:"rows"`
	// Params are the detector's hyperparameters, for the record.
	Params map[string]float64 `yaml:"params,omitempty"`
}

// Evaluation is one measured result of the model (or of its recipe) on labelled data.
type Evaluation struct {
	Protocol string             `yaml:"protocol"` // skab or nab
	Data     string             `yaml:"data"`
	Metrics  map[string]float64 `yaml:"metrics"` // f1, far, mar, nab_standard, ...
}

// Inputs is the width of one input row: len(Features) × Window.
func (c *Card) Inputs() int { return len(c.Features) * c.Window }

// Validate reports every problem with the card at once, each naming its field.
func (c *Card) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Name == "" {
		bad("name", "missing")
	}
	if c.Model == "" {
		bad("model", "missing")
	} else if filepath.IsAbs(c.Model) || strings.Contains(filepath.ToSlash(c.Model), "/") {
		bad("model", "%q must be a file name beside the card", c.Model)
	}
	if len(c.SHA256) != 64 {
		bad("sha256", "want 64 hex digits, got %q", c.SHA256)
	} else if _, err := hex.DecodeString(c.SHA256); err != nil {
		bad("sha256", "not hex: %q", c.SHA256)
	}
	if c.Precision != FP32 && c.Precision != Int8 {
		bad("precision", "%q is not fp32 or int8", c.Precision)
	}
	if len(c.Features) == 0 {
		bad("features", "missing")
	}
	seen := map[string]bool{}
	for i, f := range c.Features {
		if f == "" {
			bad(fmt.Sprintf("features[%d]", i), "empty")
		} else if seen[f] {
			bad(fmt.Sprintf("features[%d]", i), "%q repeated", f)
		}
		seen[f] = true
	}
	if c.Window < 1 {
		bad("window", "%d: must be at least 1", c.Window)
	}
	n := len(c.Features)
	if len(c.Normalization.Mean) != n || len(c.Normalization.Std) != n {
		bad("normalization", "want %d means and stds (one per feature), got %d and %d", n, len(c.Normalization.Mean), len(c.Normalization.Std))
	}
	for i, v := range c.Normalization.Mean {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad(fmt.Sprintf("normalization.mean[%d]", i), "%v is not finite", v)
		}
	}
	for i, v := range c.Normalization.Std {
		if !(v > 0) || math.IsInf(v, 0) {
			bad(fmt.Sprintf("normalization.std[%d]", i), "%v: must be finite and > 0", v)
		}
	}
	s := c.Score
	if s.Smooth < 1 {
		bad("score.smooth", "%d: must be at least 1", s.Smooth)
	}
	if s.Consecutive < 1 {
		bad("score.consecutive", "%d: must be at least 1", s.Consecutive)
	}
	if s.Likelihood != nil {
		if err := s.Likelihood.withDefaults().validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if math.IsNaN(s.Threshold) || math.IsInf(s.Threshold, 0) {
		bad("score.threshold", "%v is not finite", s.Threshold)
	}
	if math.IsNaN(s.Clear) || s.Clear > s.Threshold {
		bad("score.clear", "%v: must be ≤ threshold %v", s.Clear, s.Threshold)
	}
	return errors.Join(errs...)
}

// Load reads the card at path, validates it and checks that the model file beside it has the
// card's digest. Errors name the card's path.
func Load(path string) (*Card, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model card: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("model card %s: %w", path, err)
	}
	model, err := os.ReadFile(c.ModelPath(path))
	if err != nil {
		return nil, fmt.Errorf("model card %s: model: %w", path, err)
	}
	if got := Digest(model); got != c.SHA256 {
		return nil, fmt.Errorf("model card %s: model %s has sha256 %s, the card says %s", path, c.Model, got, c.SHA256)
	}
	return c, nil
}

// Parse decodes and validates a card; unknown fields are errors.
func Parse(data []byte) (*Card, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Card
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// ModelPath is the path of the card's model file, given the card's own path.
func (c *Card) ModelPath(cardPath string) string {
	return filepath.Join(filepath.Dir(cardPath), c.Model)
}

// Marshal encodes the card as YAML after validating it.
func (c *Card) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return yaml.Marshal(c)
}

// Write writes model as dir/NAME.onnx and the card (with Model and SHA256 set from it) as
// dir/NAME.card.yaml, each through a temporary file and a rename. It returns the card's path.
func Write(dir string, c *Card, model []byte) (string, error) {
	c.Model = c.Name + ".onnx"
	c.SHA256 = Digest(model)
	data, err := c.Marshal()
	if err != nil {
		return "", err
	}
	if err := writeFile(filepath.Join(dir, c.Model), model); err != nil {
		return "", err
	}
	path := filepath.Join(dir, c.Name+Suffix)
	return path, writeFile(path, data)
}

// Digest is the hex SHA-256 of data.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
