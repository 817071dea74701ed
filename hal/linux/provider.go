//go:build linux

package linux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/perch-edge/perch/hal"
)

// Options configures a [Provider]. The zero value is usable: devices under /dev, GPIO line
// numbers as offsets on gpiochip0, SPI mode 0 at 1 MHz with 8-bit words, UARTs at 9600 8N1.
type Options struct {
	// DevDir is the directory that holds the device files; "" means "/dev".
	DevDir string

	// GPIOChip is the GPIO character device whose line offsets [Provider.GPIOLine] numbers
	// (on a Raspberry Pi, gpiochip0's offsets are the BCM GPIO numbers). A name without a "/"
	// is looked up in DevDir. "" means "gpiochip0".
	GPIOChip string
	// GPIO configures lines by number; a line that is not listed gets the zero LineOptions
	// (input, bias as found, no edge detection until the first [Line.WaitEdge]).
	GPIO map[int]LineOptions
	// Consumer labels the lines this Provider requests (gpioinfo shows it); "" means "perch".
	// At most 31 bytes.
	Consumer string

	// SPI is the configuration of every SPI port not listed in SPIPorts.
	SPI SPIOptions
	// SPIPorts configures SPI ports by bus and chip select.
	SPIPorts map[SPIPortID]SPIOptions

	// UART is the configuration of every UART not listed in UARTPorts.
	UART UARTOptions
	// UARTPorts configures UARTs by the name given to [Provider.UARTPort] ("ttyAMA0",
	// "/dev/ttyUSB0", "serial/by-id/...") or by the resolved path.
	UARTPorts map[string]UARTOptions
}

// SPIPortID names the SPI port /dev/spidevBus.CS.
type SPIPortID struct{ Bus, CS int }

// validate reports every problem in o at once.
func (o *Options) validate() error {
	var errs []error
	if len(o.Consumer) > gpioMaxNameSize-1 {
		errs = append(errs, fmt.Errorf("linux: consumer %q: longer than %d bytes: %w", o.Consumer, gpioMaxNameSize-1, hal.ErrInvalid))
	}
	for n, lo := range o.GPIO {
		if err := lo.validate(); err != nil {
			errs = append(errs, fmt.Errorf("linux: gpio line %d: %w", n, err))
		}
	}
	if err := o.SPI.validate(); err != nil {
		errs = append(errs, fmt.Errorf("linux: spi: %w", err))
	}
	for id, so := range o.SPIPorts {
		if err := so.validate(); err != nil {
			errs = append(errs, fmt.Errorf("linux: spi %d.%d: %w", id.Bus, id.CS, err))
		}
	}
	if err := o.UART.validate(); err != nil {
		errs = append(errs, fmt.Errorf("linux: uart: %w", err))
	}
	for name, uo := range o.UARTPorts {
		if err := uo.validate(); err != nil {
			errs = append(errs, fmt.Errorf("linux: uart %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (o *Options) devDir() string {
	if o.DevDir == "" {
		return "/dev"
	}
	return o.DevDir
}

func (o *Options) consumer() string {
	if o.Consumer == "" {
		return "perch"
	}
	return o.Consumer
}

// devPath resolves a device name: an absolute path stays as it is, anything else is looked up
// in DevDir and must not climb out of it.
func (o *Options) devPath(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", hal.ErrInvalid
	}
	if filepath.IsAbs(name) {
		return filepath.Clean(name), nil
	}
	if !filepath.IsLocal(name) {
		return "", hal.ErrInvalid
	}
	return filepath.Join(o.devDir(), name), nil
}

// Provider is the [hal.Provider] over Linux device files. Handles are opened on first use and
// cached: asking twice for the same bus, port or line returns the same handle. A Provider and
// its handles are safe for concurrent use. [Provider.Close] closes every handle it opened.
//
// The zero value is a Provider with the zero [Options].
type Provider struct {
	opts Options
	k    kernel

	mu     sync.Mutex
	closed bool
	i2c    map[int]*I2C
	spi    map[SPIPortID]*SPI
	chips  map[string]*gpioChip
	lines  map[int]*Line
	uarts  map[string]*UART
}

// New returns a Provider configured by opts. It opens nothing; a bad option is reported with
// every other bad option, each wrapping [hal.ErrInvalid].
func New(opts Options) (*Provider, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Provider{opts: opts}, nil
}

func (p *Provider) kernel() kernel {
	if p.k == nil {
		return sysKernel{}
	}
	return p.k
}

// lockOpen locks p and fails if it is closed. The caller unlocks p.mu.
func (p *Provider) lockOpen() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errClosed
	}
	return nil
}

// Close closes every device the Provider opened. Calls on its handles then fail with an error
// wrapping [ErrClosed] and [hal.ErrNoDevice]; a [Line.WaitEdge] or [UART.Write] blocked at the
// time returns with such an error. Close is idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, b := range p.i2c {
		add(b.dev.f.Close())
	}
	for _, s := range p.spi {
		add(s.dev.f.Close())
	}
	for _, l := range p.lines {
		add(l.f.Close())
	}
	for _, c := range p.chips {
		add(c.dev.f.Close())
	}
	for _, u := range p.uarts {
		add(u.f.Close())
	}
	return errors.Join(errs...)
}

// I2CBus returns /dev/i2c-n. Errors wrap [hal.ErrNoDevice] when the bus does not exist (or is
// not an I2C adapter) and [hal.ErrIO] otherwise (permission denied, for one).
func (p *Provider) I2CBus(n int) (hal.I2C, error) {
	if n < 0 {
		return nil, fmt.Errorf("linux: i2c bus %d: %w", n, hal.ErrNoDevice)
	}
	if err := p.lockOpen(); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	if b := p.i2c[n]; b != nil {
		return b, nil
	}
	b, err := openI2C(p.kernel(), filepath.Join(p.opts.devDir(), fmt.Sprintf("i2c-%d", n)), n)
	if err != nil {
		return nil, err
	}
	if p.i2c == nil {
		p.i2c = make(map[int]*I2C)
	}
	p.i2c[n] = b
	return b, nil
}

// SPIPort returns /dev/spidevBus.CS, configured by [Options.SPIPorts] or [Options.SPI].
// Errors wrap [hal.ErrNoDevice] when the port does not exist and [hal.ErrInvalid] when the
// driver refuses the mode, word size or speed.
func (p *Provider) SPIPort(bus, cs int) (hal.SPI, error) {
	if bus < 0 || cs < 0 {
		return nil, fmt.Errorf("linux: spi %d.%d: %w", bus, cs, hal.ErrNoDevice)
	}
	if err := p.lockOpen(); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	id := SPIPortID{bus, cs}
	if s := p.spi[id]; s != nil {
		return s, nil
	}
	o, ok := p.opts.SPIPorts[id]
	if !ok {
		o = p.opts.SPI
	}
	s, err := openSPI(p.kernel(), filepath.Join(p.opts.devDir(), fmt.Sprintf("spidev%d.%d", bus, cs)), id, o)
	if err != nil {
		return nil, err
	}
	if p.spi == nil {
		p.spi = make(map[SPIPortID]*SPI)
	}
	p.spi[id] = s
	return s, nil
}

// GPIOLine returns line n of [Options.GPIOChip] (or of the chip its [LineOptions] names); its
// dynamic type is *[Line], which adds [Line.WaitEdge]. See [Provider.Line].
func (p *Provider) GPIOLine(n int) (hal.GPIO, error) {
	l, err := p.Line(n)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Line requests GPIO line n (an offset on its chip) from the kernel, configured by
// [Options.GPIO], and returns it. Errors wrap [hal.ErrNoDevice] when the chip or the line does
// not exist, [hal.ErrInvalid] when the chip refuses the configuration, and [hal.ErrIO] otherwise
// (a line already requested by a kernel driver or another process fails with EBUSY).
func (p *Provider) Line(n int) (*Line, error) {
	if n < 0 {
		return nil, fmt.Errorf("linux: gpio line %d: %w", n, hal.ErrNoDevice)
	}
	if err := p.lockOpen(); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	if l := p.lines[n]; l != nil {
		return l, nil
	}
	o := p.opts.GPIO[n]
	name := o.Chip
	if name == "" {
		name = p.opts.GPIOChip
	}
	if name == "" {
		name = "gpiochip0"
	}
	path, err := p.opts.devPath(name)
	if err != nil {
		return nil, fmt.Errorf("linux: gpio chip %q: %w", name, err)
	}
	c := p.chips[path]
	if c == nil {
		if c, err = openChip(p.kernel(), path); err != nil {
			return nil, err
		}
		if p.chips == nil {
			p.chips = make(map[string]*gpioChip)
		}
		p.chips[path] = c
	}
	l, err := c.request(n, o, p.opts.consumer())
	if err != nil {
		return nil, err
	}
	if p.lines == nil {
		p.lines = make(map[int]*Line)
	}
	p.lines[n] = l
	return l, nil
}

// UARTPort opens the serial port name: a path ("/dev/ttyUSB0") or a name in DevDir ("ttyAMA0",
// "serial/by-id/usb-..."), in raw mode with the settings of [Options.UARTPorts] or
// [Options.UART]. Errors wrap [hal.ErrNoDevice] when there is no such tty and [hal.ErrInvalid]
// for a bad name or a baud rate the driver refuses.
func (p *Provider) UARTPort(name string) (hal.UART, error) {
	path, err := p.opts.devPath(name)
	if err != nil {
		return nil, fmt.Errorf("linux: uart %q: %w", name, err)
	}
	if err := p.lockOpen(); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	if u := p.uarts[path]; u != nil {
		return u, nil
	}
	o, ok := p.opts.UARTPorts[name]
	if !ok {
		o, ok = p.opts.UARTPorts[path]
	}
	if !ok {
		o = p.opts.UART
	}
	u, err := openUART(path, o)
	if err != nil {
		return nil, err
	}
	if p.uarts == nil {
		p.uarts = make(map[string]*UART)
	}
	p.uarts[path] = u
	return u, nil
}

// openFile opens a device file for reading and writing, mapping open errors.
func openFile(path string, flag int, what string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|flag, 0)
	if err != nil {
		return nil, wrap(err, opening, "%s", what)
	}
	return f, nil
}

// Interface guards.
var (
	_ hal.Provider = (*Provider)(nil)
	_ hal.I2C      = (*I2C)(nil)
	_ hal.SPI      = (*SPI)(nil)
	_ hal.GPIO     = (*Line)(nil)
	_ hal.UART     = (*UART)(nil)
)
