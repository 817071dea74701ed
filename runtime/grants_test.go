package runtime_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The grant-escape tests load the test-only probe module (runtime/testdata/probe, C), grant it
// one device of a kind and have it call perch:hal/v1 on another, at run time: every escape is
// denied with EPERM, and the device it aimed at is never reached. A device sits at every target,
// so a denial cannot be a mere "nothing there" (ENACK, ENODEV), and each case's twin on the
// granted device succeeds.

// touches counts the calls that reach a device.
type touches struct{ n atomic.Int64 }

type i2cSpy struct {
	sim.I2CDevice
	c *touches
}

func (s i2cSpy) Tx(ctx context.Context, w, r []byte) error {
	s.c.n.Add(1)
	return s.I2CDevice.Tx(ctx, w, r)
}

type spiSpy struct {
	sim.SPIDevice
	c *touches
}

func (s spiSpy) Tx(ctx context.Context, w, r []byte) error {
	s.c.n.Add(1)
	return s.SPIDevice.Tx(ctx, w, r)
}

type gpioSpy struct {
	sim.GPIODevice
	c *touches
}

func (s gpioSpy) Read(ctx context.Context) (bool, error) { s.c.n.Add(1); return s.GPIODevice.Read(ctx) }
func (s gpioSpy) Write(ctx context.Context, v bool) error {
	s.c.n.Add(1)
	return s.GPIODevice.Write(ctx, v)
}

type uartSpy struct {
	sim.UARTDevice
	c *touches
}

func (s uartSpy) Read(ctx context.Context, p []byte) (int, error) {
	s.c.n.Add(1)
	return s.UARTDevice.Read(ctx, p)
}
func (s uartSpy) Write(ctx context.Context, p []byte) (int, error) {
	s.c.n.Add(1)
	return s.UARTDevice.Write(ctx, p)
}

// escapeBench has a device at every place the probe is pointed at, each counting its calls.
type escapeBench struct {
	p      *sim.Provider
	counts map[string]*touches
	relays map[int]*sim.Relay
}

const portA, portB = "/dev/ttyS0", "/dev/ttyS1"

func newEscapeBench(t *testing.T) *escapeBench {
	t.Helper()
	b := &escapeBench{p: sim.NewProvider(), counts: map[string]*touches{}, relays: map[int]*sim.Relay{}}
	count := func(name string) *touches {
		c := &touches{}
		b.counts[name] = c
		return c
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, at := range []struct {
		bus  int
		addr uint16
		name string
	}{{1, 0x76, "i2c 1/0x76"}, {1, 0x77, "i2c 1/0x77"}, {2, 0x76, "i2c 2/0x76"}} {
		must(b.p.AttachI2C(at.bus, at.addr, i2cSpy{sim.NewBME280(sim.Signals{}, nil), count(at.name)}))
	}
	for _, at := range []struct {
		bus, cs int
		name    string
	}{{0, 0, "spi 0.0"}, {0, 1, "spi 0.1"}, {1, 0, "spi 1.0"}} {
		must(b.p.AttachSPI(at.bus, at.cs, spiSpy{sim.NewADXL345(sim.ADXL345Signals{}, nil).SPI(), count(at.name)}))
	}
	for _, line := range []int{17, 18} {
		r := sim.NewRelay(nil)
		b.relays[line] = r
		must(b.p.AttachGPIO(line, gpioSpy{r, count(fmt.Sprintf("gpio %d", line))}))
	}
	for _, port := range []string{portA, portB, portA + "0", "/dev/ttyS"} {
		must(b.p.AttachUART(port, uartSpy{sim.NewPMS5003(sim.PMS5003Signals{}, nil), count("uart " + port)}))
	}
	return b
}

// grants returns the probe's grants: one device of each kind (the manifest declares all four
// kinds, and the runtime wants each granted), with the kind under test replaced.
func grants(with config.Grants) config.Grants {
	g := config.Grants{
		I2C:  []config.I2CGrant{{Bus: 1, Address: 0x76}},
		SPI:  []config.SPIGrant{{Bus: 0, CS: 0}},
		GPIO: []config.GPIOGrant{{Line: 17, Mode: "in"}},
		UART: []config.UARTGrant{{Port: portA}},
	}
	if with.I2C != nil {
		g.I2C = with.I2C
	}
	if with.SPI != nil {
		g.SPI = with.SPI
	}
	if with.GPIO != nil {
		g.GPIO = with.GPIO
	}
	if with.UART != nil {
		g.UART = with.UART
	}
	return g
}

// probe loads the probe with the config and grants, polls it once and returns the errno of its
// host call and the value it got.
func probe(t *testing.T, b *escapeBench, cfg map[string]any, g config.Grants) (abi.Errno, float64) {
	t.Helper()
	m := perchtest.Load(t, perchtest.Options{Wasm: perchtest.Built(t, "probe"), Config: cfg, Grants: g, HAL: b.p})
	out := m.Poll(t, 1)
	if len(out) != 1 || out[0].Series != "probe" {
		t.Fatalf("probe emitted %+v", out)
	}
	return abi.Errno(out[0].Fields["errno"]), out[0].Fields["value"]
}

func TestGrantEscapes(t *testing.T) {
	i2c76 := config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x76}}}
	spi00 := config.Grants{SPI: []config.SPIGrant{{Bus: 0, CS: 0}}}
	out17 := config.Grants{GPIO: []config.GPIOGrant{{Line: 17, Mode: "out"}}}
	in17 := config.Grants{GPIO: []config.GPIOGrant{{Line: 17, Mode: "in"}}}
	uartA := config.Grants{UART: []config.UARTGrant{{Port: portA}}}
	tests := []struct {
		name    string
		grants  config.Grants
		cfg     map[string]any
		want    abi.Errno
		value   float64 // when want is OK
		reaches string  // the device the call reaches (when allowed) or must not reach
	}{
		// I2C: bus 1, address 0x76 granted.
		{"i2c granted address", i2c76, map[string]any{"call": "i2c_read", "bus": 1, "address": 0x76, "reg": 0xD0}, abi.OK, 0x60, "i2c 1/0x76"},
		{"i2c read other address", i2c76, map[string]any{"call": "i2c_read", "bus": 1, "address": 0x77, "reg": 0xD0}, abi.EPERM, 0, "i2c 1/0x77"},
		{"i2c write other address", i2c76, map[string]any{"call": "i2c_write", "bus": 1, "address": 0x77, "reg": 0xE0}, abi.EPERM, 0, "i2c 1/0x77"},
		{"i2c same address other bus", i2c76, map[string]any{"call": "i2c_read", "bus": 2, "address": 0x76, "reg": 0xD0}, abi.EPERM, 0, "i2c 2/0x76"},
		{"i2c address alias above 7 bits", i2c76, map[string]any{"call": "i2c_read", "bus": 1, "address": 0x176, "reg": 0xD0}, abi.EPERM, 0, "i2c 1/0x76"},
		{"i2c negative bus", i2c76, map[string]any{"call": "i2c_read", "bus": -1, "address": 0x76, "reg": 0xD0}, abi.EPERM, 0, "i2c 1/0x76"},
		// GPIO: line 17 granted as an output, or as an input.
		{"gpio drive granted line", out17, map[string]any{"call": "gpio_write", "line": 17, "level": 1}, abi.OK, 0, "gpio 17"},
		{"gpio drive other line", out17, map[string]any{"call": "gpio_write", "line": 18, "level": 1}, abi.EPERM, 0, "gpio 18"},
		{"gpio read other line", out17, map[string]any{"call": "gpio_read", "line": 18}, abi.EPERM, 0, "gpio 18"},
		{"gpio read input line", in17, map[string]any{"call": "gpio_read", "line": 17}, abi.OK, 0, "gpio 17"},
		{"gpio drive input line", in17, map[string]any{"call": "gpio_write", "line": 17, "level": 1}, abi.EPERM, 0, "gpio 17"},
		// SPI: bus 0, chip select 0 granted.
		{"spi granted chip select", spi00, map[string]any{"call": "spi_transfer", "bus": 0, "cs": 0, "reg": 0x80}, abi.OK, 0xE5, "spi 0.0"},
		{"spi other chip select", spi00, map[string]any{"call": "spi_transfer", "bus": 0, "cs": 1, "reg": 0x80}, abi.EPERM, 0, "spi 0.1"},
		{"spi same chip select other bus", spi00, map[string]any{"call": "spi_transfer", "bus": 1, "cs": 0, "reg": 0x80}, abi.EPERM, 0, "spi 1.0"},
		// UART: port A granted.
		{"uart granted port", uartA, map[string]any{"call": "uart_write", "port": portA, "reg": 0x42}, abi.OK, 1, "uart " + portA},
		{"uart read other port", uartA, map[string]any{"call": "uart_read", "port": portB}, abi.EPERM, 0, "uart " + portB},
		{"uart write other port", uartA, map[string]any{"call": "uart_write", "port": portB, "reg": 0x42}, abi.EPERM, 0, "uart " + portB},
		{"uart port with a suffix", uartA, map[string]any{"call": "uart_read", "port": portA + "0"}, abi.EPERM, 0, "uart " + portA + "0"},
		{"uart port prefix", uartA, map[string]any{"call": "uart_read", "port": "/dev/ttyS"}, abi.EPERM, 0, "uart /dev/ttyS"},
		{"uart port with a NUL", uartA, map[string]any{"call": "uart_read", "port": portA + "\x00"}, abi.EPERM, 0, "uart " + portA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newEscapeBench(t)
			errno, value := probe(t, b, tt.cfg, grants(tt.grants))
			if errno != tt.want {
				t.Fatalf("errno %v, want %v", errno, tt.want)
			}
			c, ok := b.counts[tt.reaches]
			if !ok {
				t.Fatalf("no device %q", tt.reaches)
			}
			if reached := c.n.Load() > 0; reached != (tt.want == abi.OK) {
				t.Errorf("device %s reached: %v", tt.reaches, reached)
			}
			if tt.want == abi.OK && value != tt.value {
				t.Errorf("value %v, want %v", value, tt.value)
			}
			for name, c := range b.counts {
				if name != tt.reaches && c.n.Load() > 0 {
					t.Errorf("device %s reached (%d calls)", name, c.n.Load())
				}
			}
		})
	}
}

// TestGrantEscapeRelay: the relay on the ungranted line, and on the line granted only as an
// input, never moves; the one on the granted output does.
func TestGrantEscapeRelay(t *testing.T) {
	b := newEscapeBench(t)
	if e, _ := probe(t, b, map[string]any{"call": "gpio_write", "line": 18, "level": 1}, grants(config.Grants{GPIO: []config.GPIOGrant{{Line: 17, Mode: "out"}}})); e != abi.EPERM {
		t.Errorf("drive 18 with 17 granted: %v", e)
	}
	if e, _ := probe(t, b, map[string]any{"call": "gpio_write", "line": 17, "level": 1}, grants(config.Grants{GPIO: []config.GPIOGrant{{Line: 17, Mode: "in"}}})); e != abi.EPERM {
		t.Errorf("drive 17 granted as an input: %v", e)
	}
	if b.relays[17].Writes() != 0 || b.relays[18].Writes() != 0 || b.relays[17].Level() || b.relays[18].Level() {
		t.Fatal("a relay was driven")
	}
	if e, _ := probe(t, b, map[string]any{"call": "gpio_write", "line": 17, "level": 1}, grants(config.Grants{GPIO: []config.GPIOGrant{{Line: 17, Mode: "out"}}})); e != abi.OK {
		t.Errorf("drive 17 granted as an output: %v", e)
	}
	if !b.relays[17].Level() || len(b.relays[17].Changes()) != 1 || b.relays[18].Writes() != 0 {
		t.Error("the granted relay did not move, or the other one did")
	}
}
