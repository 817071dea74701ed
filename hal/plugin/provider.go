package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"reflect"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/perch-edge/perch/hal"
)

// Options configure a [Provider]. Command is required; zero values of the rest take defaults.
type Options struct {
	Command string   // the provider binary
	Args    []string // its arguments
	Logger  *slog.Logger
	// FingerprintInterval is how often the provider is asked for its fingerprint after the
	// first time (at start); default 30s.
	FingerprintInterval time.Duration
	// BackoffMin and BackoffMax bound the delay between restarts of a dead provider; it doubles
	// after each failed start. Defaults 100ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// StartTimeout bounds how long a start may take (the provider's handshake); default 10s.
	StartTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FingerprintInterval <= 0 {
		o.FingerprintInterval = 30 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
	}
}

// exitPoll is how often the host checks that the provider process is alive (go-plugin offers no
// channel for it). A call in flight when the process dies fails earlier than that, as soon as
// its connection breaks.
const exitPoll = 50 * time.Millisecond

// Provider is the host side of an out-of-process HAL provider: a [hal.Provider] whose devices
// live in a child process started with go-plugin. It is safe for concurrent use. Create it with
// [Start]; the caller must Close it.
//
// While the provider process is down, every call fails at once with an error wrapping
// [hal.ErrNoDevice]; a background goroutine restarts it with exponential backoff. Handles
// (from I2CBus and the rest) hold no connection: the same handle works again after a restart.
type Provider struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	cur      *instance // nil while the provider is down
	fp       Fingerprint
	fpAt     time.Time
	restarts int

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// instance is one run of the provider process.
type instance struct {
	client *goplugin.Client
	conn   *grpc.ClientConn
	pid    int
	// life is canceled when the process has exited: calls in flight on this instance end at
	// once. It is the instance's lifetime, not a caller's context.
	life   context.Context
	cancel context.CancelFunc
}

// Status is a snapshot of a [Provider].
type Status struct {
	Up            bool        // the provider process is running
	PID           int         // its process id, 0 while down
	Restarts      int         // how many times it was restarted after dying
	Fingerprint   Fingerprint // the last fingerprint taken
	FingerprintAt time.Time   // when; zero if never
}

// Start launches the provider binary, takes its fingerprint and starts supervising it. It fails
// if the first start or fingerprint fails (a wrong path, a binary that is not a provider): that
// is a configuration error, not a crash to recover from. ctx bounds the first fingerprint.
func Start(ctx context.Context, opts Options) (*Provider, error) {
	if opts.Command == "" {
		return nil, errors.New("plugin: no command")
	}
	opts.defaults()
	p := &Provider{
		opts: opts, log: opts.Logger.With("provider", opts.Command),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	inst, err := p.launch()
	if err != nil {
		return nil, err
	}
	p.cur = inst
	if err := p.fingerprint(ctx, inst); err != nil {
		inst.kill()
		return nil, fmt.Errorf("plugin: %s: first fingerprint: %w", opts.Command, err)
	}
	go p.supervise()
	return p, nil
}

// launch starts one provider process and connects to it.
func (p *Provider) launch() (*instance, error) {
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          PluginMap,
		Cmd:              exec.Command(p.opts.Command, p.opts.Args...),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           newHCLogger(p.log, "go-plugin"),
		StartTimeout:     p.opts.StartTimeout,
	})
	fail := func(err error) (*instance, error) {
		client.Kill()
		return nil, fmt.Errorf("plugin: starting %s: %w", p.opts.Command, err)
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(err)
	}
	raw, err := rpc.Dispense(PluginName)
	if err != nil {
		return fail(err)
	}
	conn, ok := raw.(*grpc.ClientConn)
	if !ok {
		return fail(fmt.Errorf("dispensed %T, want a gRPC connection", raw))
	}
	inst := &instance{client: client, conn: conn}
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	}
	inst.life, inst.cancel = context.WithCancel(context.Background())
	go func() { // go-plugin has no exit channel: watch its flag
		t := time.NewTicker(exitPoll)
		defer t.Stop()
		for range t.C {
			if client.Exited() {
				inst.cancel()
				return
			}
			if inst.life.Err() != nil {
				return
			}
		}
	}()
	p.log.Info("provider started", "pid", inst.pid)
	return inst, nil
}

func (i *instance) kill() {
	i.client.Kill()
	i.cancel()
}

// supervise takes fingerprints periodically and restarts the provider when it dies, until
// Close.
func (p *Provider) supervise() {
	defer close(p.done)
	tick := time.NewTicker(p.opts.FingerprintInterval)
	defer tick.Stop()
	for {
		p.mu.Lock()
		inst := p.cur
		p.mu.Unlock()
		select {
		case <-p.stop:
			inst.kill()
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(inst.life, p.opts.FingerprintInterval)
			err := p.fingerprint(ctx, inst)
			cancel()
			if err != nil && inst.life.Err() == nil {
				// A live process that cannot answer is as good as dead: restart it.
				p.log.Warn("fingerprint failed; killing the provider", "pid", inst.pid, "err", err)
				inst.kill()
			}
			continue
		case <-inst.life.Done():
		}
		p.mu.Lock()
		p.cur = nil
		p.mu.Unlock()
		inst.kill() // reap and release its resources
		p.log.Error("provider exited; restarting", "pid", inst.pid)
		if !p.restart() {
			return
		}
	}
}

// restart starts the provider again with exponential backoff; it reports false if Close came
// first.
func (p *Provider) restart() bool {
	delay := p.opts.BackoffMin
	for {
		t := time.NewTimer(delay)
		select {
		case <-p.stop:
			t.Stop()
			return false
		case <-t.C:
		}
		inst, err := p.launch()
		if err == nil {
			ctx, cancel := context.WithTimeout(inst.life, p.opts.StartTimeout)
			err = p.fingerprint(ctx, inst)
			cancel()
			if err == nil {
				p.mu.Lock()
				p.cur = inst
				p.restarts++
				p.mu.Unlock()
				p.log.Info("provider restarted", "pid", inst.pid)
				return true
			}
			inst.kill()
		}
		p.log.Warn("provider restart failed", "err", err, "retry_in", delay*2)
		delay = min(delay*2, p.opts.BackoffMax)
	}
}

// fingerprint asks inst for its fingerprint and keeps it.
func (p *Provider) fingerprint(ctx context.Context, inst *instance) error {
	rep, err := p.invoke(ctx, inst, mFingerprint, &request{})
	if err != nil {
		return err
	}
	fp := Fingerprint{}
	if rep.FP != nil {
		fp = *rep.FP
	}
	p.mu.Lock()
	changed := !p.fpAt.IsZero() && !reflect.DeepEqual(fp, p.fp)
	p.fp, p.fpAt = fp, time.Now()
	p.mu.Unlock()
	if changed {
		p.log.Info("provider devices changed", "i2c", fp.I2C, "spi", fp.SPI, "gpio", fp.GPIO, "uart", fp.UART)
	}
	return nil
}

// Status returns the provider's state and last fingerprint.
func (p *Provider) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{Restarts: p.restarts, Fingerprint: p.fp, FingerprintAt: p.fpAt}
	if p.cur != nil && p.cur.life.Err() == nil {
		s.Up, s.PID = true, p.cur.pid
	}
	return s
}

// Fingerprint returns the last fingerprint taken (at start, then every FingerprintInterval).
func (p *Provider) Fingerprint() Fingerprint { return p.Status().Fingerprint }

// Close stops supervising and kills the provider process. It is safe to call more than once.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		close(p.stop)
		<-p.done
	})
	return nil
}

// call makes one call on the current instance.
func (p *Provider) call(ctx context.Context, method string, q *request) (*reply, error) {
	p.mu.Lock()
	inst := p.cur
	p.mu.Unlock()
	if inst == nil || inst.life.Err() != nil {
		return nil, fmt.Errorf("plugin: provider %s is down: %w", p.opts.Command, hal.ErrNoDevice)
	}
	return p.invoke(ctx, inst, method, q)
}

// invoke makes one call on inst with the caller's ctx, and ends it at once if the process dies.
func (p *Provider) invoke(ctx context.Context, inst *instance, method string, q *request) (*reply, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(inst.life, cancel)()
	rep := new(reply)
	err := inst.conn.Invoke(cctx, fullMethodStart+method, q, rep, grpc.CallContentSubtype(codecName))
	if err == nil {
		return rep, rep.err()
	}
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("plugin: %s: %w", method, ctx.Err())
	case inst.life.Err() != nil:
		return nil, fmt.Errorf("plugin: %s: provider exited: %w", method, hal.ErrNoDevice)
	case status.Code(err) == codes.DeadlineExceeded:
		return nil, fmt.Errorf("plugin: %s: %w", method, context.DeadlineExceeded)
	default:
		return nil, fmt.Errorf("plugin: %s: provider unavailable: %v: %w", method, err, hal.ErrNoDevice)
	}
}

// I2CBus implements [hal.Provider]. It does not reach the provider: a bus it does not have
// fails its calls with an error wrapping [hal.ErrNoDevice].
func (p *Provider) I2CBus(bus int) (hal.I2C, error) { return i2cBus{p, bus}, nil }

// SPIPort implements [hal.Provider], as I2CBus.
func (p *Provider) SPIPort(bus, cs int) (hal.SPI, error) { return spiPort{p, bus, cs}, nil }

// GPIOLine implements [hal.Provider], as I2CBus.
func (p *Provider) GPIOLine(line int) (hal.GPIO, error) { return gpioLine{p, line}, nil }

// UARTPort implements [hal.Provider], as I2CBus.
func (p *Provider) UARTPort(name string) (hal.UART, error) { return uartPort{p, name}, nil }

type i2cBus struct {
	p   *Provider
	bus int
}

func (b i2cBus) Tx(ctx context.Context, addr uint16, w, r []byte) error {
	rep, err := b.p.call(ctx, mI2CTx, &request{Bus: b.bus, Addr: addr, W: w, N: len(r)})
	if err != nil {
		return err
	}
	return copyReply(r, rep.R)
}

type spiPort struct {
	p       *Provider
	bus, cs int
}

func (s spiPort) Tx(ctx context.Context, w, r []byte) error {
	rep, err := s.p.call(ctx, mSPITx, &request{Bus: s.bus, CS: s.cs, W: w, N: len(r)})
	if err != nil {
		return err
	}
	return copyReply(r, rep.R)
}

type gpioLine struct {
	p    *Provider
	line int
}

func (l gpioLine) Read(ctx context.Context) (bool, error) {
	rep, err := l.p.call(ctx, mGPIORead, &request{Line: l.line})
	if err != nil {
		return false, err
	}
	return rep.Level, nil
}

func (l gpioLine) Write(ctx context.Context, level bool) error {
	_, err := l.p.call(ctx, mGPIOWrite, &request{Line: l.line, Level: level})
	return err
}

type uartPort struct {
	p    *Provider
	name string
}

func (u uartPort) Read(ctx context.Context, b []byte) (int, error) {
	rep, err := u.p.call(ctx, mUARTRead, &request{Port: u.name, N: len(b)})
	if err != nil {
		return 0, err
	}
	if len(rep.R) > len(b) {
		return 0, fmt.Errorf("plugin: UARTRead: %d bytes for a %d-byte buffer: %w", len(rep.R), len(b), hal.ErrIO)
	}
	return copy(b, rep.R), nil
}

func (u uartPort) Write(ctx context.Context, b []byte) (int, error) {
	rep, err := u.p.call(ctx, mUARTWrite, &request{Port: u.name, W: b})
	if err != nil {
		return 0, err
	}
	return rep.N, nil
}

// copyReply copies the bytes read into r; a provider that sent the wrong number is faulty.
func copyReply(r, got []byte) error {
	if len(got) != len(r) {
		return fmt.Errorf("plugin: provider sent %d bytes, want %d: %w", len(got), len(r), hal.ErrIO)
	}
	copy(r, got)
	return nil
}

// Interface guards.
var (
	_ hal.Provider        = (*Provider)(nil)
	_ Fingerprinter       = fixed{}
	_ goplugin.GRPCPlugin = (*GRPCPlugin)(nil)
)
