package plugin

import (
	"context"
	"fmt"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/perch-edge/perch/hal"
)

// Serve serves p as a HAL provider to the host that started this process, and returns when the
// host is done with it. It is all a provider's main needs to call. p must be safe for concurrent
// use (as every [hal.Provider] is); if it implements [Fingerprinter], that reports its devices.
//
// Run by hand (without the host's handshake in its environment), the binary prints a message
// and exits with status 1: that is go-plugin's doing, and the only place it exits.
func Serve(p hal.Provider) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         map[string]goplugin.Plugin{PluginName: &GRPCPlugin{Impl: p}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}

// server is the provider side of the service.
type server struct{ p hal.Provider }

// dispatch runs one call with the caller's context (its deadline came over the wire) and puts
// any error in the reply.
func (s *server) dispatch(ctx context.Context, method string, q *request) *reply {
	rep := new(reply)
	if err := s.do(ctx, method, q, rep); err != nil {
		*rep = reply{Err: kindOf(err), Msg: err.Error()}
	}
	return rep
}

func (s *server) do(ctx context.Context, method string, q *request, rep *reply) error {
	if q.N < 0 || q.N > maxTransfer {
		return fmt.Errorf("read length %d out of range: %w", q.N, hal.ErrInvalid)
	}
	switch method {
	case mI2CTx:
		b, err := s.p.I2CBus(q.Bus)
		if err != nil {
			return err
		}
		r := make([]byte, q.N)
		if err := b.Tx(ctx, q.Addr, q.W, r); err != nil {
			return err
		}
		rep.R = r
	case mSPITx:
		sp, err := s.p.SPIPort(q.Bus, q.CS)
		if err != nil {
			return err
		}
		r := make([]byte, q.N)
		if err := sp.Tx(ctx, q.W, r); err != nil {
			return err
		}
		rep.R = r
	case mGPIORead, mGPIOWrite:
		l, err := s.p.GPIOLine(q.Line)
		if err != nil {
			return err
		}
		if method == mGPIOWrite {
			return l.Write(ctx, q.Level)
		}
		rep.Level, err = l.Read(ctx)
		return err
	case mUARTRead, mUARTWrite:
		u, err := s.p.UARTPort(q.Port)
		if err != nil {
			return err
		}
		if method == mUARTWrite {
			rep.N, err = u.Write(ctx, q.W)
			return err
		}
		buf := make([]byte, q.N)
		n, err := u.Read(ctx, buf)
		rep.N, rep.R = n, buf[:n]
		return err
	case mFingerprint:
		fp := Fingerprint{}
		if f, ok := s.p.(Fingerprinter); ok {
			var err error
			if fp, err = f.Fingerprint(ctx); err != nil {
				return err
			}
		}
		rep.FP = &fp
	default:
		return fmt.Errorf("unknown method %q: %w", method, hal.ErrInvalid)
	}
	return nil
}
