package config

import "net"

// DefaultAPIListen is where the local API listens when the config names no address.
const DefaultAPIListen = "127.0.0.1:8686"

// API configures the local HTTP API (/healthz, /readyz, /metrics, /api/v1/...).
//
//	api:
//	  listen: 127.0.0.1:8686   # default; a non-loopback address requires a token
//	  token: s3cret            # clients send Authorization: Bearer <token>
type API struct {
	Listen string `yaml:"listen"` // host:port; default 127.0.0.1:8686
	Token  string `yaml:"token"`  // bearer token; required when Listen is not loopback
}

// api defaults and validates the api section.
func (p *parser) api(c *Config) {
	a := &c.API
	if a.Listen == "" {
		a.Listen = DefaultAPIListen
	}
	if err := CheckAPIListen(a.Listen, a.Token); err != nil {
		p.errf("api.listen", "%v", err)
	}
}

// CheckAPIListen reports whether the API may listen on addr with token: the address must be
// host:port, and a host that is not loopback (an empty host or a name other than localhost
// included) requires a token.
func CheckAPIListen(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if token != "" || IsLoopback(host) {
		return nil
	}
	return errNeedsToken(addr)
}

type errNeedsToken string

func (e errNeedsToken) Error() string {
	return "listening on " + string(e) + " (beyond loopback) requires api.token"
}

// IsLoopback reports whether host (an IP address or localhost) is a loopback address.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
