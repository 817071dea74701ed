package plugin

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os/exec"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

// inProcess serves hp over a real gRPC connection in this process (go-plugin's test helper) and
// returns a host Provider on it, without a child process or supervision.
func inProcess(t *testing.T, hp hal.Provider) *Provider {
	t.Helper()
	client, _ := goplugin.TestPluginGRPCConn(t, false, map[string]goplugin.Plugin{PluginName: &GRPCPlugin{Impl: hp}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	life, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p := &Provider{opts: Options{Command: "in-process"}, log: slog.New(slog.DiscardHandler)}
	p.cur = &instance{conn: raw.(*grpc.ClientConn), life: life, cancel: cancel}
	return p
}

// faulty is a provider whose devices fail with a given error, and that records the deadline
// its calls saw.
type faulty struct {
	err error

	mu       sync.Mutex
	deadline time.Time
	hasDL    bool
	block    bool // I2C calls wait for their context to end
}

func (f *faulty) Tx(ctx context.Context, _ uint16, _, _ []byte) error {
	f.mu.Lock()
	f.deadline, f.hasDL = ctx.Deadline()
	block := f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.err
}
func (f *faulty) I2CBus(int) (hal.I2C, error)       { return f, nil }
func (f *faulty) SPIPort(int, int) (hal.SPI, error) { return nil, fmt.Errorf("no SPI here: %w", f.err) }
func (f *faulty) GPIOLine(int) (hal.GPIO, error)    { return nil, fmt.Errorf("no GPIO here: %w", f.err) }
func (f *faulty) UARTPort(string) (hal.UART, error) {
	return nil, fmt.Errorf("no UART here: %w", f.err)
}

func TestErrorMapping(t *testing.T) {
	for _, want := range []error{
		hal.ErrNACK, hal.ErrTimeout, hal.ErrNoDevice, hal.ErrIO, hal.ErrCorrupt, hal.ErrInvalid,
		context.DeadlineExceeded, errors.New("some other failure"),
	} {
		t.Run(want.Error(), func(t *testing.T) {
			p := inProcess(t, &faulty{err: fmt.Errorf("bus 1 address 0x76: %w", want)})
			bus, _ := p.I2CBus(1)
			err := bus.Tx(context.Background(), 0x76, []byte{0xd0}, make([]byte, 1))
			sentinel := want
			if kindOf(want) == "io" {
				sentinel = hal.ErrIO
			}
			if !errors.Is(err, sentinel) {
				t.Errorf("I2C Tx: %v, want errors.Is %v", err, sentinel)
			}
			if want := "bus 1 address 0x76"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
				t.Errorf("error %q lost the provider's message %q", err, want)
			}
			sp, _ := p.SPIPort(0, 0)
			if err := sp.Tx(context.Background(), []byte{1}, make([]byte, 1)); !errors.Is(err, sentinel) {
				t.Errorf("SPI Tx: %v, want errors.Is %v", err, sentinel)
			}
			l, _ := p.GPIOLine(3)
			if _, err := l.Read(context.Background()); !errors.Is(err, sentinel) {
				t.Errorf("GPIO Read: %v, want errors.Is %v", err, sentinel)
			}
			u, _ := p.UARTPort("/dev/ttyS0")
			if _, err := u.Write(context.Background(), []byte("x")); !errors.Is(err, sentinel) {
				t.Errorf("UART Write: %v, want errors.Is %v", err, sentinel)
			}
		})
	}
}

func TestDeadlinePropagation(t *testing.T) {
	f := &faulty{block: true}
	p := inProcess(t, f)
	bus, _ := p.I2CBus(1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	want, _ := ctx.Deadline()
	start := time.Now()
	err := bus.Tx(ctx, 0x76, []byte{0xd0}, make([]byte, 1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Tx past the deadline: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Tx took %v past a 200ms deadline", d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.hasDL {
		t.Fatal("the provider's context had no deadline")
	}
	if diff := f.deadline.Sub(want).Abs(); diff > 100*time.Millisecond {
		t.Errorf("provider saw deadline %v, caller's was %v (off by %v)", f.deadline, want, diff)
	}
}

func TestSimOverRPC(t *testing.T) {
	var sp sim.Provider
	relay := sim.NewRelay(time.Now)
	if err := sp.AttachGPIO(17, relay); err != nil {
		t.Fatal(err)
	}
	pms := sim.NewPMS5003(sim.PMS5003Signals{}, time.Now)
	if err := sp.AttachUART("/dev/ttyS1", pms); err != nil {
		t.Fatal(err)
	}
	p := inProcess(t, WithFingerprint(&sp, Fingerprint{GPIO: []int{17}, UART: []string{"/dev/ttyS1"}}))
	ctx := context.Background()
	l, _ := p.GPIOLine(17)
	if err := l.Write(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !relay.Level() {
		t.Error("relay not driven high over RPC")
	}
	if lv, err := l.Read(ctx); err != nil || !lv {
		t.Errorf("GPIO Read = %v, %v; want true", lv, err)
	}
	u, _ := p.UARTPort("/dev/ttyS1")
	if _, err := u.Read(ctx, make([]byte, 64)); err != nil {
		t.Errorf("UART Read: %v", err)
	}
	if _, err := u.Write(ctx, []byte{0x42, 0x4d, 0xe1, 0x00, 0x00, 0x01, 0x70}); err != nil {
		t.Errorf("UART Write: %v", err)
	}
	if err := p.fingerprint(ctx, p.cur); err != nil {
		t.Fatal(err)
	}
	if got, want := p.Fingerprint(), (Fingerprint{GPIO: []int{17}, UART: []string{"/dev/ttyS1"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("fingerprint %+v, want %+v", got, want)
	}
}

// buildExample builds the example provider into a temporary directory.
func buildExample(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "simprovider")
	out, err := exec.Command("go", "build", "-o", bin, "./example/simprovider").CombinedOutput()
	if err != nil {
		t.Fatalf("building the example provider: %v\n%s", err, out)
	}
	return bin
}

func startExample(t *testing.T, args ...string) *Provider {
	t.Helper()
	p, err := Start(context.Background(), Options{
		Command: buildExample(t), Args: args, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		FingerprintInterval: 200 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(b, "\n"))
	return len(b), nil
}

// readTemp reads the BME280's chip id and a forced-mode temperature, compensated as the
// datasheet says.
func readTemp(ctx context.Context, bus hal.I2C) (float64, error) {
	id := make([]byte, 1)
	if err := bus.Tx(ctx, 0x76, []byte{0xd0}, id); err != nil {
		return 0, err
	}
	if id[0] != 0x60 {
		return 0, fmt.Errorf("chip id %#x, want 0x60", id[0])
	}
	cal := make([]byte, 6)
	if err := bus.Tx(ctx, 0x76, []byte{0x88}, cal); err != nil {
		return 0, err
	}
	if err := bus.Tx(ctx, 0x76, []byte{0xf2, 0x01, 0xf4, 0x25}, nil); err != nil {
		return 0, err
	}
	d := make([]byte, 8)
	if err := bus.Tx(ctx, 0x76, []byte{0xf7}, d); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	t1, t2, t3 := float64(le.Uint16(cal)), float64(int16(le.Uint16(cal[2:]))), float64(int16(le.Uint16(cal[4:])))
	adc := float64(uint32(d[3])<<12 | uint32(d[4])<<4 | uint32(d[5])>>4)
	v1 := (adc/16384 - t1/1024) * t2
	v2 := (adc/131072 - t1/8192) * (adc/131072 - t1/8192) * t3
	return (v1 + v2) / 5120, nil
}

func TestIntegrationExampleProvider(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example provider")
	}
	p := startExample(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bus, _ := p.I2CBus(1)
	temp, err := readTemp(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(temp-21.5) > 0.01 {
		t.Errorf("temperature %.3f °C, want 21.5", temp)
	}
	want := Fingerprint{I2C: []I2CAddr{{Bus: 1, Addr: 0x76}}, GPIO: []int{17}}
	if got := p.Fingerprint(); !reflect.DeepEqual(got, want) {
		t.Errorf("fingerprint %+v, want %+v", got, want)
	}
	st := p.Status()
	if !st.Up || st.PID == 0 || st.FingerprintAt.IsZero() {
		t.Errorf("status %+v, want up with a pid and a fingerprint time", st)
	}
	time.Sleep(500 * time.Millisecond) // the fingerprint is taken again periodically
	if at := p.Status().FingerprintAt; !at.After(st.FingerprintAt) {
		t.Errorf("fingerprint not refreshed: still from %v", at)
	}
	// Errors keep their sentinels across the process boundary.
	if err := bus.Tx(ctx, 0x77, []byte{0xd0}, make([]byte, 1)); !errors.Is(err, hal.ErrNACK) {
		t.Errorf("Tx to an empty address: %v, want hal.ErrNACK", err)
	}
	sp, _ := p.SPIPort(0, 0)
	if err := sp.Tx(ctx, []byte{0}, []byte{0}); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("SPI Tx with no SPI device: %v, want hal.ErrNoDevice", err)
	}
	l, _ := p.GPIOLine(17)
	if err := l.Write(ctx, true); err != nil {
		t.Fatal(err)
	}
	if lv, err := l.Read(ctx); err != nil || !lv {
		t.Errorf("relay read back %v, %v; want true", lv, err)
	}
}

func TestIntegrationKill9Provider(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example provider")
	}
	const delay = time.Second // every transaction takes this long in the provider
	p := startExample(t, "-i2c-delay", delay.String())
	bus, _ := p.I2CBus(1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid := p.Status().PID

	// Kill the provider while a read is in the provider.
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- bus.Tx(ctx, 0x76, []byte{0xd0}, make([]byte, 1)) }()
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, hal.ErrNoDevice) {
		t.Fatalf("read in flight at kill -9: %v, want hal.ErrNoDevice", err)
	}
	if d := time.Since(start); d >= delay {
		t.Errorf("the read in flight took %v to fail, as long as the read itself", d)
	}
	t.Logf("in-flight read failed after %v: %v", time.Since(start), err)

	// New calls fail at once until the provider is back, then work again.
	deadline := time.Now().Add(40 * time.Second)
	var downErrs int
	for {
		temp, err := readTemp(ctx, bus)
		if err == nil {
			if math.Abs(temp-21.5) > 0.01 {
				t.Errorf("temperature after restart %.3f, want 21.5", temp)
			}
			break
		}
		if !errors.Is(err, hal.ErrNoDevice) {
			t.Fatalf("read while the provider is down: %v, want hal.ErrNoDevice", err)
		}
		downErrs++
		if time.Now().After(deadline) {
			t.Fatal("the provider did not come back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := p.Status()
	if !st.Up || st.PID == pid || st.Restarts != 1 {
		t.Errorf("after the restart: %+v, want up with a new pid (not %d) and 1 restart", st, pid)
	}
	t.Logf("%d reads failed with ENODEV while the provider was down", downErrs)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := readTemp(ctx, bus); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("read after Close: %v, want hal.ErrNoDevice", err)
	}
}

func TestStartFailures(t *testing.T) {
	if _, err := Start(context.Background(), Options{}); err == nil {
		t.Error("Start without a command succeeded")
	}
	if _, err := Start(context.Background(), Options{Command: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("Start of a missing binary succeeded")
	}
	if _, err := Start(context.Background(), Options{Command: "/bin/true", StartTimeout: 2 * time.Second}); err == nil {
		t.Error("Start of a binary that is not a provider succeeded")
	}
}
