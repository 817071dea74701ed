//go:build linux

package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal"
)

// modprobe loads a kernel module if the machine lets it; the tests skip when it does not.
func modprobe(args ...string) {
	if path, err := exec.LookPath("modprobe"); err == nil {
		exec.Command(path, args...).Run()
	}
}

// TestIntegrationGPIOSim drives the real GPIO character device against the kernel's gpio-sim
// module: a chip made through configfs whose inputs the test pulls up and down through sysfs.
func TestIntegrationGPIOSim(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test skipped under -short")
	}
	const cfg = "/sys/kernel/config/gpio-sim"
	if _, err := os.Stat(cfg); err != nil {
		modprobe("gpio-sim")
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Skipf("gpio-sim is not available (%v): it needs CONFIG_GPIO_SIM (modprobe gpio-sim), configfs mounted on /sys/kernel/config, and root", err)
	}
	group := filepath.Join(cfg, fmt.Sprintf("perch-test-%d", os.Getpid()))
	bank := filepath.Join(group, "bank0")
	write := func(path, v string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if err := os.Mkdir(group, 0o755); err != nil {
		t.Skipf("cannot make a gpio-sim chip: %v", err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(group, "live"), []byte("0"), 0o644)
		os.Remove(bank)
		os.Remove(group)
	})
	if err := os.Mkdir(bank, 0o755); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(bank, "num_lines"), "8")
	write(filepath.Join(group, "live"), "1")
	chip := read(filepath.Join(bank, "chip_name"))
	sim := filepath.Join("/sys/devices/platform", read(filepath.Join(group, "dev_name")), chip)

	p, err := New(Options{GPIOChip: chip, GPIO: map[int]LineOptions{0: {Edges: EdgeBoth}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	in, err := p.Line(0)
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(sim, "sim_gpio0", "pull"), "pull-up")
	e, err := in.WaitEdge(ctx)
	if err != nil || !e.Rising {
		t.Fatalf("WaitEdge after pull-up = %+v, %v; want a rising edge", e, err)
	}
	if v, err := in.Read(ctx); err != nil || !v {
		t.Errorf("Read after pull-up = %v, %v; want true", v, err)
	}
	write(filepath.Join(sim, "sim_gpio0", "pull"), "pull-down")
	if e, err := in.WaitEdge(ctx); err != nil || e.Rising {
		t.Fatalf("WaitEdge after pull-down = %+v, %v; want a falling edge", e, err)
	}

	out, err := p.GPIOLine(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []bool{true, false, true} {
		if err := out.Write(ctx, level); err != nil {
			t.Fatal(err)
		}
		want := "0"
		if level {
			want = "1"
		}
		if got := read(filepath.Join(sim, "sim_gpio1", "value")); got != want {
			t.Errorf("after Write(%v) the simulated line reads %s, want %s", level, got, want)
		}
	}
	if _, err := p.GPIOLine(8); !errors.Is(err, hal.ErrNoDevice) {
		t.Errorf("GPIOLine(8) on an 8-line chip = %v, want hal.ErrNoDevice", err)
	}
}

// TestIntegrationI2CStub talks to the kernel's i2c-stub module (an SMBus-only adapter with a
// register file at each chip_addr) through /dev/i2c-N.
func TestIntegrationI2CStub(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test skipped under -short")
	}
	find := func() (int, bool) {
		names, _ := filepath.Glob("/sys/class/i2c-dev/i2c-*/name")
		for _, name := range names {
			if b, err := os.ReadFile(name); err == nil && strings.TrimSpace(string(b)) == "SMBus stub driver" {
				n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(filepath.Dir(name)), "i2c-"))
				return n, err == nil
			}
		}
		return 0, false
	}
	bus, ok := find()
	if !ok {
		modprobe("i2c-dev")
		modprobe("i2c-stub", "chip_addr=0x76")
		bus, ok = find()
	}
	if !ok {
		t.Skip("i2c-stub is not available: it needs CONFIG_I2C_STUB and CONFIG_I2C_CHARDEV (modprobe i2c-dev; modprobe i2c-stub chip_addr=0x76) and root")
	}
	b, err := os.ReadFile("/sys/module/i2c_stub/parameters/chip_addr")
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[uint16]bool{}
	var addr uint16
	for i, f := range strings.Split(strings.TrimSpace(string(b)), ",") {
		v, err := strconv.ParseUint(f, 0, 16)
		if err != nil {
			t.Fatalf("chip_addr %q: %v", b, err)
		}
		addrs[uint16(v)] = true
		if i == 0 {
			addr = uint16(v)
		}
	}

	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	i2c, err := p.I2CBus(bus)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := i2c.Tx(ctx, addr, []byte{0x10, 0xde, 0xad, 0xbe, 0xef}, nil); err != nil {
		t.Fatalf("block write: %v", err)
	}
	r := make([]byte, 4)
	if err := i2c.Tx(ctx, addr, []byte{0x10}, r); err != nil {
		t.Fatalf("block read: %v", err)
	}
	if !bytes.Equal(r, []byte{0xde, 0xad, 0xbe, 0xef}) {
		t.Errorf("read back % x, want de ad be ef", r)
	}
	if err := i2c.Tx(ctx, addr, []byte{0x12}, r[:1]); err != nil || r[0] != 0xbe {
		t.Errorf("byte read = %#x, %v; want 0xbe", r[0], err)
	}
	absent := uint16(0x08)
	for addrs[absent] {
		absent++
	}
	// i2c-stub answers ENODEV for an address without a chip; a real adapter answers ENXIO or
	// EREMOTEIO (hal.ErrNACK).
	if err := i2c.Tx(ctx, absent, []byte{0}, r[:1]); !errors.Is(err, hal.ErrNoDevice) && !errors.Is(err, hal.ErrNACK) {
		t.Errorf("Tx to absent 0x%02x = %v, want hal.ErrNACK or hal.ErrNoDevice", absent, err)
	}
}
