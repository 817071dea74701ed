package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
		{[]string{"serve"}, "--root is required", ""},
		{[]string{"serve", "--root", "x", "extra"}, `unexpected argument "extra"`, ""},
		{[]string{"serve", "--root", "x", "--log-level", "loud"}, "--log-level", ""},
		{[]string{"serve", "--root", t.TempDir(), "--listen", "127.0.0.1:0", "--tls-cert", "c.pem"}, "TLS needs both a cert and a key", ""},
		{[]string{"serve", "--root", t.TempDir(), "--listen", "nowhere"}, `listen address "nowhere"`, ""},
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

// perch registry serve answers the OCI API and the TUF folder, and stops when its context ends.
func TestIntegrationRegistryServe(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
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
