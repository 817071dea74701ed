// Package server is Perch's embedded OCI registry: the reference distribution/distribution v3
// registry library on a filesystem store, with the TUF metadata served beside it.
//
// # Overview
//
// A [Server] owns one storage root folder:
//
//	ROOT/oci/   the registry's blobs, manifests and tags (distribution's filesystem driver)
//	ROOT/tuf/   TUF metadata, served read-only under /tuf/ (written by registry/trust)
//
// It speaks the OCI distribution API under /v2/ (pull, push, tag listing, delete, cross-repository
// mount). It has no referrers API: distribution v3.1.2 does not implement one, so cosign, notation
// and oras fall back to sha256-DIGEST tags. See registry/CONFORMANCE.md for the conformance result
// and every feature that is switched off.
//
// There is no authentication: the registry listens on loopback by default and is meant to sit
// behind the operator's network controls (or TLS with a reverse proxy in front). Integrity of what
// devices install comes from TUF, not from the transport.
//
// # Usage
//
//	srv, err := server.New(server.Config{Root: "/var/lib/perch-registry", Logger: log})
//	if err != nil { ... }
//	defer srv.Close()
//	err = srv.Serve(ctx) // returns after ctx is done and in-flight requests have drained
//
// # Logging and process-wide state
//
// distribution logs through the process-wide logrus standard logger. The first [New] in a process
// silences that logger's own output and installs one hook that forwards each entry to the
// [Config.Logger] of the server it came from (entries carry the server's instance id); entries
// from no known server go to [slog.Default]. distribution's info level (one line per request) maps
// to slog's debug level; its debug level is dropped. Prometheus metrics, health checks and
// tracing, which distribution registers globally, are left switched off, so any number of servers
// can run in one process.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"

	// The filesystem storage driver registers itself with distribution's driver factory.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// DefaultAddr is the listen address when [Config.Addr] is empty: loopback only.
const DefaultAddr = "127.0.0.1:5000"

// DefaultDrainTimeout is how long [Server.Serve] waits for in-flight requests after its context
// is done when [Config.DrainTimeout] is zero.
const DefaultDrainTimeout = 10 * time.Second

// Config says where a [Server] keeps its data and where it listens. The zero value is not usable:
// Root is required.
type Config struct {
	// Root is the storage root folder; it is created (0755) if missing. The registry's data goes
	// to Root/oci, TUF metadata is served from Root/tuf.
	Root string
	// Addr is the TCP listen address, host:port; empty means [DefaultAddr]. Port 0 picks a free
	// port ([Server.Addr] reports it).
	Addr string
	// TLSCert and TLSKey are PEM files; both set serves HTTPS (TLS 1.2 or later), both empty
	// serves plain HTTP.
	TLSCert string
	TLSKey  string
	// DrainTimeout bounds the graceful shutdown in [Server.Serve]; 0 means [DefaultDrainTimeout].
	DrainTimeout time.Duration
	// Logger receives the server's and distribution's log records; nil discards them.
	Logger *slog.Logger
}

// Server is one embedded registry. Its methods are safe for concurrent use; call [Server.Close]
// when done, whether or not [Server.Serve] ran.
type Server struct {
	cfg        Config
	log        *slog.Logger
	instanceID string
	ln         net.Listener
	tls        bool
	app        *handlers.App
	tuf        *os.Root
	http       *http.Server

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg, creates the storage folders, builds the registry and binds the listen
// address (so [Server.Addr] is known before [Server.Serve]). Every problem with cfg is reported
// at once.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("registry server: root %q: %w", cfg.Root, err)
	}
	ociDir, tufDir := filepath.Join(root, "oci"), filepath.Join(root, "tuf")
	for _, dir := range []string{ociDir, tufDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("registry server: root: %w", err)
		}
	}

	var tlsConf *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("registry server: TLS cert %q / key %q: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}

	s := &Server{cfg: cfg, log: log, instanceID: newInstanceID(), tls: tlsConf != nil}
	s.tuf, err = os.OpenRoot(tufDir)
	if err != nil {
		return nil, fmt.Errorf("registry server: %w", err)
	}
	installLogBridge()
	registerLogger(s.instanceID, log)

	// distribution reads the instance id from this plain string key (it must be a string) to tag
	// its log entries; the log bridge uses it to find this server's logger.
	baseCtx := context.WithValue(context.Background(), "instance.id", s.instanceID)
	s.app, err = newApp(baseCtx, ociDir)
	if err != nil {
		s.release()
		return nil, err
	}

	s.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		s.release()
		return nil, fmt.Errorf("registry server: listen on %s: %w", cfg.Addr, err)
	}

	mux := http.NewServeMux()
	mux.Handle("/tuf/", http.StripPrefix("/tuf/", tufHandler(s.tuf)))
	mux.Handle("/", s.app)
	s.http = &http.Server{
		Handler:           mux,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	return s, nil
}

func (c Config) validate() error {
	var errs []error
	if c.Root == "" {
		errs = append(errs, errors.New("registry server: root folder is required"))
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("registry server: listen address %q: %w", c.Addr, err))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, fmt.Errorf("registry server: TLS needs both a cert and a key (cert %q, key %q)", c.TLSCert, c.TLSKey))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("registry server: drain timeout %s is negative", c.DrainTimeout))
	}
	return errors.Join(errs...)
}

// newApp builds distribution's handler app. NewApp panics on a bad configuration; the panic
// becomes an error.
func newApp(ctx context.Context, ociDir string) (app *handlers.App, err error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("registry server: upload secret: %w", err)
	}
	conf := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": ociDir},
			// Delete is on: manifests, tags and blobs can be removed (the conformance suite's
			// content-management tests need it; garbage collection is offline, as in distribution).
			"delete": configuration.Parameters{"enabled": true},
			"cache":  configuration.Parameters{"blobdescriptor": "inmemory"},
			// The filesystem driver cannot redirect to another URL; blobs are served directly.
			"redirect": configuration.Parameters{"disable": true},
			"maintenance": configuration.Parameters{
				"uploadpurging": map[any]any{"enabled": true, "age": "168h", "interval": "24h", "dryrun": false},
			},
		},
	}
	conf.HTTP.Secret = hex.EncodeToString(secret)
	defer func() {
		if r := recover(); r != nil {
			app, err = nil, fmt.Errorf("registry server: distribution: %v", r)
		}
	}()
	return handlers.NewApp(ctx, conf), nil
}

// Addr is the address the server listens on (with the real port when [Config.Addr] had port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL, http:// or https:// and [Server.Addr].
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// Serve answers requests until ctx is done, then stops accepting connections, waits up to the
// drain timeout for in-flight requests and returns nil. It returns early with an error if the
// listener fails. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	s.log.Info("registry listening", "addr", s.Addr(), "tls", s.tls, "root", s.cfg.Root)
	errc := make(chan error, 1)
	go func() {
		if s.tls {
			errc <- s.http.ServeTLS(s.ln, "", "")
		} else {
			errc <- s.http.Serve(s.ln)
		}
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("registry server: serve: %w", err)
	case <-ctx.Done():
	}
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
	defer cancel()
	err := s.http.Shutdown(drainCtx)
	<-errc
	if err != nil {
		s.log.Warn("registry drain cut short", "timeout", s.cfg.DrainTimeout, "err", err)
	}
	s.log.Info("registry stopped", "addr", s.Addr())
	return s.Close()
}

// Close stops the server at once (open connections are closed) and releases its resources. It is
// safe to call more than once and after [Server.Serve] returned.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		err := s.http.Close()
		if lerr := s.ln.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) {
			err = errors.Join(err, lerr)
		}
		s.closeErr = errors.Join(err, s.release())
	})
	return s.closeErr
}

// release frees what New acquired before the listener.
func (s *Server) release() error {
	var err error
	if s.app != nil {
		err = s.app.Shutdown()
	}
	if s.tuf != nil {
		err = errors.Join(err, s.tuf.Close())
	}
	unregisterLogger(s.instanceID)
	return err
}

func newInstanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return "perch-registry-" + hex.EncodeToString(b)
}
