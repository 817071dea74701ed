package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/api"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/internal/logx"
	"github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/runtime/uplink"
	"github.com/perch-edge/perch/sdk/abi"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/perch/perch.yaml", "the pipeline config `file`")
	dur := fs.Duration("for", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	quiet := fs.Bool("quiet", false, "do not print summaries and alerts")
	level := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	interp := fs.Bool("interpreter", false, "run modules on wazero's interpreter instead of its compiler")
	apiListen := fs.String("api-listen", "", "the local API's `address` (default: the config's api.listen, else 127.0.0.1:8686)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// A LevelVar, so that the uplink's state/desired {"log_level": ...} changes it at run time.
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("perch run: --log-level: %w", err)
	}
	log := slog.New(logx.Handler(stderr, lv))
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	// Modules the update agent installed and committed run in place of the config's binaries,
	// once each is re-verified by its hash.
	if err := update.ApplyInstalled(cfg, log); err != nil {
		return err
	}
	var agent atomic.Pointer[update.Agent] // set below, once the runtime exists
	opts := runtime.Options{Logger: log, Interpreter: *interp,
		Uplink: uplink.Options{Version: Version, LogLevel: lv}}
	if cfg.Update.Enabled() {
		opts.Uplink.Nudge = func() {
			if a := agent.Load(); a != nil {
				a.Nudge()
			}
		}
	}
	// Every batch goes to the local API's live stream (which never blocks) and, unless --quiet,
	// summaries and alerts to stdout.
	hub := api.NewHub(api.HubOptions{})
	opts.OnRecords = hub.Publish
	if !*quiet {
		p := &printer{w: stdout}
		opts.OnRecords = func(module string, batch []byte) {
			hub.Publish(module, batch)
			p.print(module, batch)
		}
	}
	// READY=1, WATCHDOG=1 and STOPPING=1 to systemd, if it gave us a NOTIFY_SOCKET (notify.go).
	sd, err := newNotifier(os.Getenv, os.Getpid(), log)
	if err != nil {
		return err
	}
	defer sd.Close()
	var rt *runtime.Runtime
	opts.OnStarted = func() {
		sd.started(ctx, fmt.Sprintf("running %d modules", len(cfg.Modules)), rt.Store().Flush)
	}
	rt, err = runtime.New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	defer rt.Close()
	// The facts `perch status` reads from the recorder alone.
	for _, kv := range [][2]string{{"runtime_version", Version}, {"site", cfg.Site}, {"device", cfg.Device}} {
		if err := rt.Store().SetMeta(ctx, kv[0], kv[1]); err != nil {
			log.Warn("recording a fact in the meta table failed", "key", kv[0], "err", err)
		}
	}
	// The local API (runtime/api) serves until the runtime has stopped; failing to listen is
	// logged, not fatal.
	if *apiListen != "" {
		if err := config.CheckAPIListen(*apiListen, cfg.API.Token); err != nil {
			return fmt.Errorf("perch run: --api-listen: %w", err)
		}
		cfg.API.Listen = *apiListen
	}
	apiCtx, stopAPI := context.WithCancel(context.WithoutCancel(ctx))
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		if err := api.Serve(apiCtx, cfg.API, rt, hub); err != nil {
			log.Error("local API failed", "listen", cfg.API.Listen, "err", err)
		}
	}()
	defer func() { stopAPI(); <-apiDone }()
	// The update agent's runtime slots ask for a restart by cancelling the run with a
	// *restartError: a clean shutdown, then exit status ExitRestart.
	ctx, restart := context.WithCancelCause(ctx)
	defer restart(nil)
	if cfg.Update.Enabled() {
		a, err := newAgent(cfg, rt, log, func(reason string) { restart(&restartError{reason: reason}) })
		if err != nil {
			return err
		}
		agent.Store(a)
		agentCtx, stopAgent := context.WithCancel(ctx)
		agentDone := make(chan struct{})
		go func() {
			defer close(agentDone)
			a.Run(agentCtx)
		}()
		defer func() { stopAgent(); <-agentDone }()
	}
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	fmt.Fprintf(stdout, "perch %s: running %s (%d modules), recording to %s\n", Version, cfg.File, len(cfg.Modules), cfg.Store.Path)
	err = rt.Run(ctx)
	sd.Close() // before the recorder closes: the watchdog's health check uses it
	var re *restartError
	if errors.As(context.Cause(ctx), &re) {
		fmt.Fprintln(stdout, "perch: stopped for a restart into the A/B slot the loader chooses:", re.reason)
		return re
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "perch: stopped; the recorder is at", cfg.Store.Path)
	return nil
}

// ExitRestart is perch run's exit status after a clean shutdown the update agent asked for: a
// new perch binary is staged in the idle A/B slot, or the binary on trial was judged
// unhealthy. perch-boot's systemd service (Restart=always) starts perch-boot again, which
// boots the slot its boot environment chooses. 75 is EX_TEMPFAIL (sysexits.h).
const ExitRestart = 75

// restartError ends perch run for a restart into the slots; main exits with ExitCode.
type restartError struct{ reason string }

func (e *restartError) Error() string {
	return "perch run: restarting for the update agent: " + e.reason
}
func (e *restartError) ExitCode() int { return ExitRestart }

// newAgent makes the update agent of cfg's update section for rt. restart ends perch run for a
// restart into the runtime's slots (update.runtime); the firmware's (update.firmware) run its
// reboot command.
func newAgent(cfg *config.Config, rt *runtime.Runtime, log *slog.Logger, restart func(reason string)) (*update.Agent, error) {
	u := &cfg.Update
	root, err := os.ReadFile(u.Root)
	if err != nil {
		return nil, fmt.Errorf("perch run: update.root: %w", err)
	}
	log = log.With("component", "update")
	ac := update.Config{Device: cfg.Device, Group: u.Group, Hardware: u.Hardware, Registry: u.Registry,
		Dir: u.Dir, Root: root, Poll: u.Poll.D(), HealthWindow: u.HealthWindow.D(), Logger: log}
	if u.TLS != (config.TLS{}) {
		tc, err := u.TLS.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("perch run: update.tls: %w", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		ac.HTTP = &http.Client{Transport: tr}
	}
	if r := u.Runtime; r != nil {
		// perch-boot says which slot it exec'd; without it, the agent refuses runtime updates.
		running, err := boot.ParseSlot(os.Getenv("PERCH_SLOT"))
		if err != nil && os.Getenv("PERCH_SLOT") != "" {
			log.Warn("PERCH_SLOT is not a slot; runtime updates are refused", "err", err)
		}
		ac.Runtime = &update.Slots{Loader: boot.NewFileLoader(boot.OSFS{}, r.Slots), Dir: r.Slots, File: "perch", Perm: 0o755,
			Tries: r.Tries, Running: running, Restart: func(_ context.Context, reason string) error {
				restart(reason)
				return nil
			}}
	}
	if f := u.Firmware; f != nil {
		var l boot.Loader
		switch f.Loader {
		case config.FirmwareLoaderFile:
			l = boot.NewFileLoader(boot.OSFS{}, f.Slots)
		case config.FirmwareLoaderUBoot:
			l = &boot.UBoot{}
		case config.FirmwareLoaderRPiTryboot:
			l = &boot.RPiTryboot{}
		default:
			return nil, fmt.Errorf("perch run: update.firmware.loader: %q", f.Loader)
		}
		reboot := f.Reboot
		ac.Firmware = &update.Slots{Loader: l, Dir: f.Slots, Tries: f.Tries, Restart: func(ctx context.Context, reason string) error {
			return runReboot(ctx, reboot)
		}}
	}
	return update.New(ac, cfg, rt, rt.Store())
}

// runReboot runs the firmware's reboot command (argv, no shell) and waits for it: systemd
// then stops perch like any service.
func runReboot(ctx context.Context, argv []string) error {
	out, err := exec.CommandContext(context.WithoutCancel(ctx), argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("update.firmware.reboot %q: %w: %s", argv, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// printer prints summaries and alerts as they happen.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) print(module string, batch []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	it := abi.Iter{Buf: batch}
	for it.Next() {
		r := &it.Rec
		if r.Kind != abi.KindSummary && r.Kind != abi.KindAlert {
			continue
		}
		var b strings.Builder
		ts := time.Unix(0, r.TimeNS).Format("15:04:05")
		// Filters and rules name the source of the readings they judged in a source tag.
		from := r.Source
		if src, ok := r.Tag("source"); ok {
			from = src
		}
		if r.Kind == abi.KindAlert {
			state, _ := r.Tag("state")
			sev, _ := r.Tag("severity")
			msg, _ := r.Tag("message")
			fmt.Fprintf(&b, "%s ALERT %-7s %s: %s/%s [%s] %s", ts, state, module, from, r.Series, sev, msg)
		} else {
			fmt.Fprintf(&b, "%s summary %s: %s/%s", ts, module, from, r.Series)
		}
		r.Fields(func(name []byte, v float64) {
			if r.Kind == abi.KindSummary && !strings.HasSuffix(string(name), "_mean") {
				return
			}
			fmt.Fprintf(&b, " %s=%.2f", name, v)
		})
		fmt.Fprintln(p.w, b.String())
	}
}

func cmdValidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("perch validate: want one config file, got %d arguments", fs.NArg())
	}
	cfg, err := config.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := runtime.Validate(ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d devices, %d modules)\n", cfg.File, len(cfg.Devices), len(cfg.Modules))
	return nil
}
