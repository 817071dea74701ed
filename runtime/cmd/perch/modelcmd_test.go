package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/models/ort"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// TestModelTrainCSV trains on a recording in the recorder's CSV layout and writes an artifact
// whose card loads and whose model runs in ONNX Runtime.
func TestModelTrainCSV(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("time_ns,temperature_c,humidity_pct\n")
	for i := range 600 {
		fmt.Fprintf(&b, "%d,%g,%g\n", int64(i)*1e9, 22+math.Sin(float64(i)/20), 45+math.Cos(float64(i)/15))
	}
	csv := filepath.Join(dir, "normal.csv")
	if err := os.WriteFile(csv, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"model", "train", "--csv", csv, "--name", "env", "--out", dir, "--window", "4"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	c, err := card.Load(filepath.Join(dir, "env.card.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Window != 4 || len(c.Features) != 2 || c.Training.Rows != 600 || c.Training.Data != "normal.csv" {
		t.Errorf("card %+v", c)
	}
	if err := ort.Init(""); err == nil {
		s, err := ort.NewSessionFromFile(c.ModelPath(filepath.Join(dir, "env.card.yaml")), ort.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	// Bad input is refused with a reason.
	for _, args := range [][]string{
		{"model", "train", "--name", "x"},
		{"model", "train", "--csv", filepath.Join(dir, "missing.csv"), "--name", "x"},
		{"model", "eval", "--protocol", "kdd", "--data", dir},
		{"model", "frobnicate"},
	} {
		if err := run(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// TestModelEvalJSON runs `perch model eval --protocol skab --json` on the SKAB files and checks
// the object it prints.
func TestModelEvalJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("plays 23 files through the runtime")
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "..", "shared", "datasets", "skab", "data"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no SKAB data: %v", err)
	}
	if err := ort.Init(""); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	perchtest.Built(t, "replay")
	replay, _ := filepath.Abs(filepath.Join("..", "..", "..", "build", "modules", "replay.wasm"))
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"model", "eval", "--protocol", "skab", "--data", dir, "--replay", replay, "--json"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	for _, k := range []string{"f1", "far", "mar", "nab_standard"} {
		if _, ok := got[k].(float64); !ok {
			t.Errorf("no %s in %s", k, stdout.String())
		}
	}
	if f1 := got["f1"].(float64); f1 < 0.75 {
		t.Errorf("f1 %v", f1)
	}
}

// TestModelTrainRecorder trains on the readings a recorder holds (one source's fields), as an
// operator would on a box's own history.
func TestModelTrainRecorder(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "perch.db")
	st, err := store.Open(context.Background(), store.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	var batch []byte
	for i := range 500 {
		batch = abi.Append(batch, abi.KindReading, int64(i+1)*1e9, "env", "environment",
			[]abi.Field{{Name: "temperature_c", Value: 22 + math.Sin(float64(i)/10)}, {Name: "humidity_pct", Value: 45 + math.Cos(float64(i)/7)}}, nil)
		if i%100 == 99 {
			if err := st.Write(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"model", "train", "--db", db, "--source", "env", "--series", "environment",
		"--name", "env", "--out", dir}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	c, err := card.Load(filepath.Join(dir, "env.card.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Training.Rows != 500 || strings.Join(c.Features, ",") != "humidity_pct,temperature_c" {
		t.Errorf("card: %d rows, features %q", c.Training.Rows, c.Features)
	}
	if err := run(context.Background(), []string{"model", "train", "--db", db, "--source", "nobody", "--name", "x", "--out", dir}, &stdout, &stderr); err == nil ||
		!strings.Contains(err.Error(), `no readings of source "nobody"`) {
		t.Errorf("an unknown source: %v", err)
	}
}
