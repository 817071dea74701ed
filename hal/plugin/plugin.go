// Package plugin runs HAL providers out of process, over hashicorp/go-plugin and gRPC, so that a
// provider for some vendor's hardware can crash without taking the runtime with it.
//
// # Overview
//
// This package is shared by both sides, as go-plugin wants: the [Handshake], the plugin map
// ([PluginMap]) and the wire protocol live here.
//
//   - The host starts a provider binary with [Start] and gets a [Provider], a [hal.Provider] whose
//     every call goes over gRPC with the caller's context (its deadline travels with the call).
//   - The provider's main calls [Serve] with any [hal.Provider]; it reports the devices it offers
//     (a [Fingerprint]) if it implements [Fingerprinter], for which [WithFingerprint] is the
//     short way.
//
// Errors cross the boundary as the sentinels of package hal: a NACK in the provider is an error
// for which errors.Is(err, hal.ErrNACK) holds on the host. When the provider process dies, calls in
// flight and new calls fail at once with an error wrapping [hal.ErrNoDevice] (ENODEV in a module),
// and the host restarts the provider with exponential backoff; when it is back, calls work
// again.
//
// # Usage
//
// The provider (see example/simprovider):
//
//	func main() {
//		var p sim.Provider
//		_ = p.AttachI2C(1, 0x76, sim.NewBME280(signals, time.Now))
//		plugin.Serve(plugin.WithFingerprint(&p, plugin.Fingerprint{I2C: []plugin.I2CAddr{{Bus: 1, Addr: 0x76}}}))
//	}
//
// The host:
//
//	p, err := plugin.Start(ctx, plugin.Options{Command: "/usr/lib/perch/simprovider", Logger: log})
//	defer p.Close()
//	bus, _ := p.I2CBus(1)
//	err = bus.Tx(ctx, 0x76, []byte{0xd0}, id[:])
//
// # Wire protocol
//
// The service perch.hal.v1.HAL is a hand-written [grpc.ServiceDesc] whose messages are encoded
// as JSON by a codec registered under the content subtype "perch-hal-json" (see the design
// notes in the README for why not protoc).
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/perch-edge/perch/hal"
)

// Handshake is the go-plugin handshake both sides must agree on. A binary started without the
// magic cookie in its environment refuses to run as a provider; a provider of another protocol
// version is refused by the host.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "PERCH_HAL_PLUGIN",
	MagicCookieValue: "b1f0c6d7e2a54e0b9c1f3a8d6e4b2c70",
}

// PluginName is the name of the HAL plugin in [PluginMap].
const PluginName = "hal"

// PluginMap is the go-plugin plugin map of the host side: one plugin, [PluginName].
var PluginMap = map[string]goplugin.Plugin{PluginName: &GRPCPlugin{}}

// GRPCPlugin is the go-plugin [goplugin.GRPCPlugin] of a HAL provider. On the provider side
// Impl is the provider served; on the host side it is nil and the dispensed value is a
// *grpc.ClientConn for the service.
type GRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl hal.Provider
}

// GRPCServer registers the HAL service for Impl.
func (g *GRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&serviceDesc, &server{p: g.Impl})
	return nil
}

// GRPCClient returns the connection; [Provider] makes the calls on it.
func (g *GRPCPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

// Fingerprint lists the devices a provider offers. Slices are sorted by the provider as it likes;
// the host compares them as given.
type Fingerprint struct {
	I2C  []I2CAddr `json:"i2c,omitempty"`  // devices on I2C buses
	SPI  []SPIPort `json:"spi,omitempty"`  // SPI buses and chip selects
	GPIO []int     `json:"gpio,omitempty"` // GPIO lines
	UART []string  `json:"uart,omitempty"` // UART port names
}

// I2CAddr is a device on an I2C bus: the bus number and the 7-bit address.
type I2CAddr struct {
	Bus  int    `json:"bus"`
	Addr uint16 `json:"addr"`
}

// SPIPort is an SPI bus and chip select.
type SPIPort struct {
	Bus int `json:"bus"`
	CS  int `json:"cs"`
}

// Fingerprinter is implemented by providers that report the devices they offer. [Serve] asks it
// when the host asks (at start and periodically); a provider that does not implement it reports
// an empty fingerprint.
type Fingerprinter interface {
	Fingerprint(ctx context.Context) (Fingerprint, error)
}

// WithFingerprint returns p with a fixed fingerprint: for providers whose devices do not change.
func WithFingerprint(p hal.Provider, fp Fingerprint) hal.Provider {
	return fixed{p, fp}
}

type fixed struct {
	hal.Provider
	fp Fingerprint
}

func (f fixed) Fingerprint(context.Context) (Fingerprint, error) { return f.fp, nil }

// maxTransfer bounds a read length on the wire, as the ABI bounds a transfer.
const maxTransfer = 1 << 16

// Wire messages. One request and one reply type serve every method; unused fields are empty.
type request struct {
	Bus   int    `json:"bus,omitempty"`
	Addr  uint16 `json:"addr,omitempty"`
	CS    int    `json:"cs,omitempty"`
	Line  int    `json:"line,omitempty"`
	Port  string `json:"port,omitempty"`
	W     []byte `json:"w,omitempty"`     // bytes to write
	N     int    `json:"n,omitempty"`     // bytes to read
	Level bool   `json:"level,omitempty"` // GPIO level to drive
}

type reply struct {
	R     []byte       `json:"r,omitempty"`     // bytes read
	N     int          `json:"n,omitempty"`     // UART: bytes read or written
	Level bool         `json:"level,omitempty"` // GPIO level read
	FP    *Fingerprint `json:"fp,omitempty"`
	Err   string       `json:"err,omitempty"` // error kind (see kinds); "" for none
	Msg   string       `json:"msg,omitempty"` // the provider's error message
}

// Error kinds on the wire, and the errors they stand for on the host.
var kinds = []struct {
	kind string
	err  error
}{
	{"nack", hal.ErrNACK},
	{"timeout", hal.ErrTimeout},
	{"nodev", hal.ErrNoDevice},
	{"corrupt", hal.ErrCorrupt},
	{"invalid", hal.ErrInvalid},
	{"io", hal.ErrIO},
	{"deadline", context.DeadlineExceeded},
	{"canceled", context.Canceled},
}

// kindOf returns the wire kind of a provider's error; anything unknown is "io".
func kindOf(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	return "io"
}

// remoteError is a provider's error on the host: the provider's message, wrapping the sentinel
// of its kind.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string { return "plugin: " + e.msg }
func (e *remoteError) Unwrap() error { return e.err }

// err returns the reply's error, or nil.
func (r *reply) err() error {
	if r.Err == "" {
		return nil
	}
	for _, k := range kinds {
		if k.kind == r.Err {
			return &remoteError{r.Msg, k.err}
		}
	}
	return &remoteError{fmt.Sprintf("%s (unknown error kind %q)", r.Msg, r.Err), hal.ErrIO}
}

// codecName is the gRPC content subtype of the HAL service's messages.
const codecName = "perch-hal-json"

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return codecName }

func init() { encoding.RegisterCodec(jsonCodec{}) }

// Methods of the service.
const (
	serviceName     = "perch.hal.v1.HAL"
	mI2CTx          = "I2CTx"
	mSPITx          = "SPITx"
	mGPIORead       = "GPIORead"
	mGPIOWrite      = "GPIOWrite"
	mUARTRead       = "UARTRead"
	mUARTWrite      = "UARTWrite"
	mFingerprint    = "Fingerprint"
	fullMethodStart = "/" + serviceName + "/"
)

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		method(mI2CTx), method(mSPITx), method(mGPIORead), method(mGPIOWrite),
		method(mUARTRead), method(mUARTWrite), method(mFingerprint),
	},
	Metadata: "hal/plugin/plugin.go",
}

// method returns the descriptor of a unary method that decodes a request and hands it to the
// server's dispatch.
func method(name string) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			q := new(request)
			if err := dec(q); err != nil {
				return nil, err
			}
			s := srv.(*server)
			if icpt == nil {
				return s.dispatch(ctx, name, q), nil
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethodStart + name}
			return icpt(ctx, q, info, func(ctx context.Context, req any) (any, error) {
				return s.dispatch(ctx, name, req.(*request)), nil
			})
		},
	}
}
