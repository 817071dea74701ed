// Package runtime is the Perch host: it loads a pipeline config, compiles and runs its Wasm
// modules under supervision, moves records between them in batches over bounded queues, and
// writes everything to the SQLite flight recorder.
//
// # Overview
//
// [New] checks the config, opens the recorder, builds the HAL devices and compiles every module
// into the on-disk compilation cache. [Runtime.Run] starts one goroutine per module: drivers are
// polled on their schedule; filters and rules take batches from their inputs. A module that
// faults (trap, deadline, memory, bad pointer, quota) is closed, recorded as an event and
// restarted with exponential backoff; after repeated faults it is quarantined and an alert is
// recorded. Every other module keeps running.
//
// Model nodes (model.go, the config's models section) score the records of their inputs with an
// ONNX model through ONNX Runtime, in batches, and pass on score records and alerts like a
// module; modules granted a model score rows of their own through perch:infer/v1. A model that
// cannot be loaded (no ONNX Runtime library, a bad model) fails alone: a model.failed event, its
// input dropped, the rest of the pipeline running.
//
// # Usage
//
//	cfg, err := config.Load("perch.yaml")
//	rt, err := runtime.New(ctx, cfg, runtime.Options{Logger: log})
//	defer rt.Close()
//	err = rt.Run(ctx) // until ctx is canceled; then drains and flushes
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/plugin"
	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/wasm"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/uplink"
)

// Options tune a Runtime. The zero value is usable.
type Options struct {
	Logger *slog.Logger // nil: discard
	// OnRecords, if set, is called with every batch a module emits (after it is recorded). It is
	// called from several goroutines at once and must not keep the slice.
	OnRecords func(module string, batch []byte)
	// Interpreter runs modules on wazero's interpreter instead of its compiler.
	Interpreter bool
	// Supervision; zero values take the defaults.
	BackoffMin       time.Duration // first restart delay; default 100ms
	BackoffMax       time.Duration // longest restart delay; default 30s
	QuarantineAfter  int           // faults within QuarantineWindow that quarantine; default 5
	QuarantineWindow time.Duration // default 10m
	QueueBatches     int           // bounded queue length per module, in batches; default 8
	// Uplink tunes the MQTT uplink, if the config has one (version, log level, backoff); a nil
	// Logger takes Logger.
	Uplink uplink.Options
	// OnStarted, if set, is called once by [Runtime.Run] after every module's goroutine and
	// source has started (a service manager's readiness). It must not block.
	OnStarted func()
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.QuarantineAfter <= 0 {
		o.QuarantineAfter = 5
	}
	if o.QuarantineWindow <= 0 {
		o.QuarantineWindow = 10 * time.Minute
	}
	if o.QueueBatches <= 0 {
		o.QueueBatches = 8
	}
}

// Runtime is a loaded pipeline. Create it with [New], run it with [Runtime.Run] once, then
// Close it.
type Runtime struct {
	cfg    *config.Config
	opts   Options
	log    *slog.Logger
	engine *wasm.Engine
	store  *store.Store
	hal    hal.Provider
	sims   []interface{ SetStart(time.Time) } // simulated devices and faults, whose scripts start with Run
	simDev map[string]any                     // simulated device models by device name
	plugs  map[string]*plugin.Provider        // out-of-process providers by command and args
	linux  interface {                        // the box's own buses (hal/linux), if a device uses them
		hal.Provider
		Close() error
	}
	nodes  []*node
	srcs   []*source      // southbound MQTT sources (source.go)
	models []*modelNode   // model nodes (model.go)
	uplink *uplink.Uplink // nil: no uplink
	live   liveness       // readiness and uptime (metrics.go)
}

// New loads everything the config names: it opens the recorder, builds the HAL devices and
// compiles every module (warming the compilation cache). It returns every problem found.
func New(ctx context.Context, cfg *config.Config, opts Options) (rt *Runtime, err error) {
	opts.defaults()
	r := &Runtime{cfg: cfg, opts: opts, log: opts.Logger}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if err := r.buildHAL(ctx); err != nil {
		return nil, err
	}
	if r.engine, err = wasm.NewEngine(cfg.Engine.CacheDir, opts.Interpreter); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dirOf(cfg.Store.Path), 0o755); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	r.store, err = store.Open(ctx, store.Options{
		Path: cfg.Store.Path, ReadingsMaxRows: cfg.Store.ReadingsMaxRows,
		MaxAge: cfg.Store.MaxAge.D(), MaxBytes: cfg.Store.MaxBytes,
		Upstream: uplink.Upstream(cfg), OutboxMaxBytes: cfg.Uplink.OutboxMaxBytes,
	})
	if err != nil {
		return nil, err
	}
	if opts.Uplink.Logger == nil {
		opts.Uplink.Logger = r.log.With("component", "uplink")
	}
	if opts.Uplink.Inject == nil {
		// The actuate command reaches the modules of uplink.commands.actuate through Inject
		// (r.nodes is complete before Run starts the uplink).
		opts.Uplink.Inject = r.Inject
	}
	if r.uplink, err = uplink.New(cfg, r.store, opts.Uplink); err != nil {
		return nil, err
	}
	// Read every module, then compile the distinct binaries in parallel: compiling (or loading
	// from the on-disk cache) is most of a start's time.
	bins := make([][]byte, len(cfg.Modules))
	errs := make([]error, len(cfg.Modules))
	var wg sync.WaitGroup
	seen := map[string]bool{} // path and memory limit: each pair is checked once
	for i := range cfg.Modules {
		m := &cfg.Modules[i]
		if bins[i], errs[i] = os.ReadFile(m.Wasm); errs[i] != nil {
			errs[i] = fmt.Errorf("runtime: module %s: %w", m.Name, errs[i])
			continue
		}
		key := fmt.Sprintf("%s\x00%d", m.Wasm, m.MemoryPages)
		if seen[key] {
			continue
		}
		seen[key] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.engine.Compile(ctx, bins[i], m.Manifest.Kind, m.MemoryPages); err != nil {
				errs[i] = fmt.Errorf("runtime: module %s (%s): %w", m.Name, m.Wasm, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	byName := map[string]*node{}
	for i := range cfg.Modules {
		m := &cfg.Modules[i]
		n := newNode(r, m, specOf(m, bins[i], r.hal, r.store, r.log), opts.QueueBatches)
		r.nodes = append(r.nodes, n)
		byName[m.Name] = n
	}
	r.srcs = newSources(r)
	r.newModels(byName) // model.go: a model that fails to load fails alone, when Run starts
	r.grantModels()
	linked := r.nodes[:len(r.nodes):len(r.nodes)]
	for _, m := range r.models {
		linked = append(linked, m.n)
	}
	for _, n := range linked {
		for _, in := range n.mod.Inputs {
			if r.linkSource(in, n) {
				continue
			}
			up := byName[in]
			up.down = append(up.down, n)
			n.upstream++
		}
	}
	return r, nil
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i]
		}
	}
	return "."
}

// buildHAL makes the simulated devices the config lists, with their scripted faults, and starts
// the providers of its plugin devices.
func (r *Runtime) buildHAL(ctx context.Context) error {
	p := sim.NewProvider()
	r.simDev = map[string]any{}
	mux := &plugin.Mux{Fallback: p}
	for i := range r.cfg.Devices {
		d := &r.cfg.Devices[i]
		if d.Backend == config.BackendPlugin {
			if err := r.routePlugin(ctx, mux, d); err != nil {
				return fmt.Errorf("runtime: device %s: %w", d.Name, err)
			}
			continue
		}
		if d.Backend == config.BackendLinux {
			if err := r.routeLinux(mux, d); err != nil {
				return fmt.Errorf("runtime: device %s: %w", d.Name, err)
			}
			continue
		}
		if d.Backend == config.BackendReplay { // replay.go
			if err := r.attachReplay(p, d); err != nil {
				return fmt.Errorf("runtime: device %s: %w", d.Name, err)
			}
			continue
		}
		var (
			model  any
			faults *sim.Faults
			err    error
		)
		switch d.Type {
		case config.DeviceBME280:
			// The BME280 model has no faults of its own: they sit in front of it, and a stuck
			// fault stops the clock it measures by.
			faults = sim.NewFaults(time.Now)
			dev := sim.NewBME280(d.BME280Signals(), faults.SignalClock)
			err = p.AttachI2C(d.Bus, uint16(d.Address), sim.FaultyI2C(dev, faults))
			model = dev
			r.sims = append(r.sims, dev, faults)
		case config.DeviceADXL345:
			dev := sim.NewADXL345(d.ADXL345Signals(), time.Now)
			if d.OnSPI() {
				err = p.AttachSPI(d.Bus, *d.CS, dev.SPI())
			} else {
				err = p.AttachI2C(d.Bus, uint16(d.Address), dev.I2C())
			}
			model, faults = dev, dev.Faults()
			r.sims = append(r.sims, dev)
		case config.DeviceButton:
			dev := sim.NewButton(d.ButtonLevel(), time.Now)
			err = p.AttachGPIO(*d.Line, dev)
			model, faults = dev, dev.Faults()
			r.sims = append(r.sims, dev)
		case config.DeviceRelay:
			dev := sim.NewRelay(time.Now)
			err = p.AttachGPIO(*d.Line, dev)
			model, faults = dev, dev.Faults()
			r.sims = append(r.sims, dev)
		case config.DevicePMS5003:
			dev := sim.NewPMS5003(d.PMS5003Signals(), time.Now)
			err = p.AttachUART(d.Port, dev)
			model, faults = dev, dev.Faults()
			r.sims = append(r.sims, dev)
		default: // config validation refuses it
			err = fmt.Errorf("unknown device type %q", d.Type)
		}
		if err != nil {
			return fmt.Errorf("runtime: device %s: %w", d.Name, err)
		}
		faults.Script(d.Faults)
		r.simDev[d.Name] = model
	}
	r.hal = p
	if len(r.plugs) > 0 || r.linux != nil {
		r.hal = mux
	}
	return nil
}

// SimDevice returns the model of the simulated device named name in the config (a *sim.BME280,
// *sim.ADXL345, *sim.Button, *sim.Relay, *sim.PMS5003 or *replay.Device), or nil: for tests, to watch a relay
// or inject faults while the pipeline runs.
func (r *Runtime) SimDevice(name string) any { return r.simDev[name] }

// specOf turns a module's config into the engine's instance spec.
func specOf(m *config.Module, bin []byte, h hal.Provider, st wasm.StateStore, log *slog.Logger) wasm.Spec {
	var g wasm.Grants
	for _, x := range m.Grants.I2C {
		g.I2C = append(g.I2C, wasm.I2CAddr{Bus: x.Bus, Addr: uint16(x.Address)})
	}
	for _, x := range m.Grants.SPI {
		g.SPI = append(g.SPI, wasm.SPIDev{Bus: x.Bus, CS: x.CS})
	}
	for _, x := range m.Grants.GPIO {
		g.GPIO = append(g.GPIO, wasm.GPIOLine{Line: x.Line, Out: x.Mode == "out"})
	}
	for _, x := range m.Grants.UART {
		g.UART = append(g.UART, x.Port)
	}
	g.State = m.Grants.State
	for _, name := range m.Grants.Models {
		// The scorer is the model node's session (Runtime.grantModels); without one, ENODEV.
		g.Models = append(g.Models, wasm.Model{Name: name})
	}
	return wasm.Spec{
		Name: m.Name, Kind: m.Manifest.Kind, Binary: bin,
		MemoryPages: m.MemoryPages, Deadline: m.Deadline.D(),
		EmitRecords: m.Limits.EmitRecords, EmitBytes: m.Limits.EmitBytes, LogBytes: m.Limits.LogBytes,
		Emits: m.Manifest.Emits, Grants: g, Config: m.ConfigJSON, HAL: h, State: st,
		Logger: log.With("module", m.Name),
	}
}

// Store returns the flight recorder.
func (r *Runtime) Store() *store.Store { return r.store }

// Run runs the pipeline until ctx is canceled. Then it stops polling drivers, lets every queued
// batch drain through the pipeline, flushes the recorder and returns nil. It may be called once.
func (r *Runtime) Run(ctx context.Context) error {
	// Lifecycle events are recorded even when ctx is already canceled.
	r.event(context.WithoutCancel(ctx), "runtime.started", "", fmt.Sprintf("site %s device %s, %d modules", r.cfg.Site, r.cfg.Device, len(r.nodes)), nil)
	now := time.Now()
	for _, d := range r.sims {
		d.SetStart(now)
	}
	// The uplink runs until the pipeline has drained and the recorder is flushed.
	upCtx, stopUplink := context.WithCancel(context.WithoutCancel(ctx))
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		if r.uplink != nil {
			r.uplink.Run(upCtx)
		}
	}()
	defer func() { stopUplink(); <-upDone }()
	var wg sync.WaitGroup
	for _, n := range r.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.run(ctx)
		}()
	}
	r.startSources(ctx, &wg)
	r.startModels(ctx, &wg)
	r.live.startedNS.Store(time.Now().UnixNano())
	if r.opts.OnStarted != nil {
		r.opts.OnStarted()
	}
	wg.Wait()
	// Guest calls after this point are over; the store drains what was queued.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	r.event(flushCtx, "runtime.stopped", "", "drained and stopped", nil)
	return r.store.Flush(flushCtx)
}

// Close closes the recorder and the engine. It is safe after a failed New.
func (r *Runtime) Close() error {
	var errs []error
	for _, p := range r.plugs {
		errs = append(errs, p.Close())
	}
	if r.linux != nil {
		errs = append(errs, r.linux.Close())
	}
	if r.store != nil {
		errs = append(errs, r.store.Close())
	}
	if r.engine != nil {
		errs = append(errs, r.engine.Close(context.Background()))
	}
	for _, m := range r.models { // after the engine: modules share the sessions
		errs = append(errs, m.close())
	}
	return errors.Join(errs...)
}

// event records a lifecycle event and logs it.
func (r *Runtime) event(ctx context.Context, kind, module, msg string, fields map[string]any) {
	r.log.Info(msg, "event", kind, "module", module)
	err := r.store.Event(ctx, store.Event{TimeNS: time.Now().UnixNano(), Kind: kind, Module: module, Message: msg, Fields: fields})
	if err != nil {
		r.log.Error("recording an event failed", "event", kind, "err", err)
	}
}
