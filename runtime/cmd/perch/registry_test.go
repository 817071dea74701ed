package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRegistryDispatch(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string // "" for success
		wantOut string // on stdout
	}{
		{nil, "no subcommand", ""},
		{[]string{"frobnicate"}, `unknown subcommand "frobnicate"`, ""},
		{[]string{"help"}, "", "perch registry serve --root DIR"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := cmdRegistry(context.Background(), tt.args, &stdout, &stderr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tt.wantOut)
			}
		})
	}
}

// registryBinary builds perch-registry into the shared folder, once, and points
// $PERCH_REGISTRY_BIN at it for the test.
func registryBinaryForTest(t *testing.T) {
	t.Helper()
	registryBuilt.once.Do(func() {
		path := filepath.Join(shared, "perch-registry")
		out, err := exec.Command("go", "build", "-o", path, "../perch-registry").CombinedOutput()
		if err != nil {
			registryBuilt.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
		registryBuilt.path = path
	})
	if registryBuilt.err != nil {
		t.Fatal(registryBuilt.err)
	}
	t.Setenv(RegistryBinaryEnv, registryBuilt.path)
}

var registryBuilt struct {
	once sync.Once
	path string
	err  error
}

// perch registry serve runs perch-registry, which answers the OCI API and the TUF folder; it
// stops when the context ends. Its flag errors come back through its exit status and stderr.
func TestIntegrationRegistryServe(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	registryBinaryForTest(t)
	var stderr bytes.Buffer
	if err := cmdRegistry(context.Background(), []string{"serve", "--root", "x", "extra"}, io.Discard, &stderr); err == nil ||
		!strings.Contains(stderr.String(), `unexpected argument "extra"`) {
		t.Errorf("a bad flag: %v, %q", err, stderr.String())
	}
	t.Setenv(RegistryBinaryEnv, filepath.Join(t.TempDir(), "nothing"))
	if err := cmdRegistry(context.Background(), []string{"serve", "--root", "x"}, io.Discard, io.Discard); err == nil {
		t.Error("no perch-registry binary: no error")
	}
	registryBinaryForTest(t)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "tuf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tuf", "1.root.json"), []byte(`{"signed":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cmdRegistry(ctx, []string{"serve", "--root", root, "--listen", "127.0.0.1:0", "--log-level", "error"}, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the serving line: %v (serve: %v)", err, <-done)
	}
	go io.Copy(io.Discard, pr)
	// "perch registry: serving http://127.0.0.1:PORT (root DIR)"
	fields := strings.Fields(line)
	if len(fields) < 4 || !strings.HasPrefix(fields[3], "http://127.0.0.1:") {
		t.Fatalf("serving line %q", line)
	}
	url := fields[3]
	for path, want := range map[string]string{"/v2/": "{}", "/tuf/1.root.json": `{"signed":{}}`} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("GET %s: %s %q, want 200 %q", path, resp.Status, body, want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
}
