package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
)

// TLS configures the connection to a tls:// broker or an https:// registry. Relative paths are
// from the config file.
type TLS struct {
	CAFile   string `yaml:"ca_file"`   // PEM CA bundle of the server; default the system's
	CertFile string `yaml:"cert_file"` // PEM client certificate, for mutual TLS
	KeyFile  string `yaml:"key_file"`  // its PEM private key
}

// ClientConfig loads the CA and the client certificate into a TLS client configuration (TLS 1.2
// or later; the server name is left for the dialer to set from the broker's host).
func (c TLS) ClientConfig() (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// TLSBroker reports whether a broker URL asks for TLS (tls://, ssl:// or mqtts://).
func TLSBroker(broker string) bool {
	b, err := url.Parse(broker)
	return err == nil && isTLSScheme(b.Scheme)
}

func isTLSScheme(s string) bool { return s == "tls" || s == "ssl" || s == "mqtts" }

// broker validates an MQTT broker URL and its TLS settings, at field (such as "uplink" or
// "sources[0]"), and makes the TLS files' paths absolute.
func (p *parser) broker(at, broker string, t *TLS) {
	if broker == "" {
		p.errf(at+".broker", "required")
	} else if b, err := url.Parse(broker); err != nil {
		p.errf(at+".broker", "%v", err)
	} else {
		switch {
		case b.Scheme != "tcp" && b.Scheme != "mqtt" && !isTLSScheme(b.Scheme):
			p.errf(at+".broker", "want tcp://, mqtt://, tls://, ssl:// or mqtts://, got %q", broker)
		case b.Hostname() == "" || b.Port() == "":
			p.errf(at+".broker", "want a host and a port, such as tcp://127.0.0.1:1883, got %q", broker)
		case !isTLSScheme(b.Scheme) && *t != (TLS{}):
			p.errf(at+".tls", "the broker %q is not a tls:// URL", broker)
		}
	}
	p.tlsFiles(at+".tls", t)
}

// tlsFiles checks the files of a TLS section at field at (such as "uplink.tls") and makes their
// paths absolute.
func (p *parser) tlsFiles(at string, t *TLS) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.errf(at, "cert_file and key_file go together")
	}
	for _, f := range []struct {
		field string
		path  *string
	}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
		if *f.path == "" {
			continue
		}
		*f.path = p.abs(*f.path)
		if _, err := os.Stat(*f.path); err != nil {
			p.errf(at+"."+f.field, "%v", err)
		}
	}
}
