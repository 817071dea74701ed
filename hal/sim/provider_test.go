package sim_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/sim"
)

// TestProviderAttach checks the SPI, GPIO and UART sides of the Provider: what is attached is
// found where it was attached and nowhere else, and bad attachments are refused.
func TestProviderAttach(t *testing.T) {
	ctx := context.Background()
	var p sim.Provider
	acc := sim.NewADXL345(sim.ADXL345Signals{}, nil)
	btn := sim.NewButton(sim.Signal{Value: 1}, nil)
	air := sim.NewPMS5003(sim.PMS5003Signals{}, nil)
	for _, err := range []error{
		p.AttachSPI(0, 0, acc.SPI()), p.AttachGPIO(17, btn), p.AttachUART("/dev/ttyS0", air),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	spi, err := p.SPIPort(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := p.SPIPort(0, 0); again != spi {
		t.Error("SPIPort(0, 0) twice returned different ports")
	}
	r := make([]byte, 2)
	if err := spi.Tx(ctx, []byte{0x80, 0}, r); err != nil || r[1] != 0xE5 {
		t.Errorf("DEVID over the port: % x, %v", r, err)
	}
	line, _ := p.GPIOLine(17)
	if v, err := line.Read(ctx); err != nil || !v {
		t.Errorf("button: %v, %v", v, err)
	}
	port, _ := p.UARTPort("/dev/ttyS0")
	if n, err := port.Read(ctx, make([]byte, 8)); err != nil || n != 0 {
		t.Errorf("uart at the start: %d, %v", n, err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, spiOther := p.SPIPort(0, 1)
	_, spiBus := p.SPIPort(1, 0)
	_, gpioOther := p.GPIOLine(18)
	_, uartOther := p.UARTPort("/dev/ttyS1")
	_, gpioCanceled := line.Read(canceled)
	_, uartCanceled := port.Read(canceled, make([]byte, 1))
	_, uartWCanceled := port.Write(canceled, []byte{1})
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"spi other chip select", spiOther, hal.ErrNoDevice},
		{"spi other bus", spiBus, hal.ErrNoDevice},
		{"gpio other line", gpioOther, hal.ErrNoDevice},
		{"uart other port", uartOther, hal.ErrNoDevice},
		{"spi canceled", spi.Tx(canceled, []byte{0x80, 0}, make([]byte, 2)), context.Canceled},
		{"gpio read canceled", gpioCanceled, context.Canceled},
		{"gpio write canceled", line.Write(canceled, true), context.Canceled},
		{"uart read canceled", uartCanceled, context.Canceled},
		{"uart write canceled", uartWCanceled, context.Canceled},
		{"spi duplicate", p.AttachSPI(0, 0, acc.SPI()), sim.ErrAddrInUse},
		{"gpio duplicate", p.AttachGPIO(17, btn), sim.ErrAddrInUse},
		{"uart duplicate", p.AttachUART("/dev/ttyS0", air), sim.ErrAddrInUse},
		{"spi negative cs", p.AttachSPI(0, -1, acc.SPI()), hal.ErrInvalid},
		{"spi nil", p.AttachSPI(0, 2, nil), hal.ErrInvalid},
		{"gpio negative line", p.AttachGPIO(-1, btn), hal.ErrInvalid},
		{"gpio nil", p.AttachGPIO(3, nil), hal.ErrInvalid},
		{"uart empty name", p.AttachUART("", air), hal.ErrInvalid},
		{"uart nil", p.AttachUART("x", nil), hal.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("got %v, want an error matching %v", tt.err, tt.want)
			}
		})
	}
	if got, want := tests[0].err.Error(), "sim: spi 0.1: hal: no such device"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
}

// TestProviderConcurrentDevices uses every device model from several goroutines at once, with
// faults going on and off; run it with -race.
func TestProviderConcurrentDevices(t *testing.T) {
	ctx := context.Background()
	var p sim.Provider
	acc := sim.NewADXL345(sim.ADXL345Signals{X: sim.Signal{Shape: "noise", Sigma: 1}}, nil)
	air := sim.NewPMS5003(sim.PMS5003Signals{PM25: sim.Signal{Value: 9}}, nil)
	btn := sim.NewButton(sim.Signal{Shape: "sine", Mean: 0.5, Amplitude: 1, Period: sim.Duration(1e6)}, nil)
	rel := sim.NewRelay(nil)
	for _, err := range []error{
		p.AttachSPI(0, 0, acc.SPI()), p.AttachI2C(1, 0x53, acc.I2C()), p.AttachUART("u", air),
		p.AttachGPIO(1, btn), p.AttachGPIO(2, rel),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	spi, _ := p.SPIPort(0, 0)
	bus, _ := p.I2CBus(1)
	port, _ := p.UARTPort("u")
	in, _ := p.GPIOLine(1)
	out, _ := p.GPIOLine(2)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 64)
			cmd := sim.PMS5003Command(sim.PMS5003CmdRead, 0)
			for i := range 300 {
				_ = spi.Tx(ctx, []byte{0xF0, 0, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 9))
				_ = bus.Tx(ctx, 0x53, []byte{0x2D, 0x08}, nil)
				_ = bus.Tx(ctx, 0x53, []byte{0x32}, buf[:6])
				_, _ = port.Read(ctx, buf)
				_, _ = port.Write(ctx, cmd[:])
				_, _ = in.Read(ctx)
				_ = out.Write(ctx, i%2 == 0)
				_ = rel.Changes()
				k := sim.FaultKinds[(g+i)%len(sim.FaultKinds)]
				for _, f := range []*sim.Faults{acc.Faults(), air.Faults(), btn.Faults(), rel.Faults()} {
					f.Inject(k, i%3 == 0)
				}
			}
		})
	}
	wg.Wait()
}
