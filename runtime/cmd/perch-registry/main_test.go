package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestServeFlags(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{nil, "no subcommand"},
		{[]string{"frobnicate"}, `unknown subcommand "frobnicate"`},
		{[]string{"serve"}, "--root is required"},
		{[]string{"serve", "--root", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"serve", "--root", "x", "--log-level", "loud"}, "--log-level"},
		{[]string{"serve", "--root", t.TempDir(), "--listen", "127.0.0.1:0", "--tls-cert", "c.pem"}, "TLS needs both a cert and a key"},
		{[]string{"serve", "--root", t.TempDir(), "--listen", "nowhere"}, `listen address "nowhere"`},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
