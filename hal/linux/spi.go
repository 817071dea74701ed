//go:build linux

package linux

import (
	"context"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/perch-edge/perch/hal"
)

// spidev ioctls (include/uapi/linux/spi/spidev.h): type 'k'.
const (
	spiIOCType         = 'k'
	spiIOCTransferSize = 32 // sizeof(struct spi_ioc_transfer)

	// SPI_IOC_MESSAGE(1) = _IOW('k', 0, char[SPI_MSGSIZE(1)])
	spiIOCMessage1 = iocWrite<<iocDirShift | spiIOCTransferSize<<iocSizeShift | spiIOCType<<iocTypeShift | 0
	// SPI_IOC_WR_MODE = _IOW('k', 1, __u8)
	spiIOCWrMode = iocWrite<<iocDirShift | 1<<iocSizeShift | spiIOCType<<iocTypeShift | 1
	// SPI_IOC_WR_BITS_PER_WORD = _IOW('k', 3, __u8)
	spiIOCWrBitsPerWord = iocWrite<<iocDirShift | 1<<iocSizeShift | spiIOCType<<iocTypeShift | 3
	// SPI_IOC_WR_MAX_SPEED_HZ = _IOW('k', 4, __u32)
	spiIOCWrMaxSpeedHz = iocWrite<<iocDirShift | 4<<iocSizeShift | spiIOCType<<iocTypeShift | 4
	// SPI_IOC_WR_MODE32 = _IOW('k', 5, __u32)
	spiIOCWrMode32 = iocWrite<<iocDirShift | 4<<iocSizeShift | spiIOCType<<iocTypeShift | 5
)

// SPI mode bits (include/uapi/linux/spi/spi.h). [SPIOptions.Mode] is one of SPIMode0..3 ORed
// with any of the flags.
const (
	SPIMode0    uint32 = 0x00 // CPOL=0 CPHA=0
	SPIMode1    uint32 = 0x01 // CPOL=0 CPHA=1
	SPIMode2    uint32 = 0x02 // CPOL=1 CPHA=0
	SPIMode3    uint32 = 0x03 // CPOL=1 CPHA=1
	SPICSHigh   uint32 = 0x04 // chip select active high
	SPILSBFirst uint32 = 0x08 // least significant bit first
	SPI3Wire    uint32 = 0x10 // MOSI and MISO shared
	SPINoCS     uint32 = 0x40 // no chip select

	spiModeMask = SPIMode3 | SPICSHigh | SPILSBFirst | SPI3Wire | SPINoCS
)

// DefaultSPISpeedHz is the clock of an SPI port whose [SPIOptions.SpeedHz] is 0.
const DefaultSPISpeedHz = 1_000_000

// SPIOptions configures one SPI port. The zero value is mode 0, 8-bit words, 1 MHz.
type SPIOptions struct {
	Mode        uint32 // SPIMode0..3 ORed with SPICSHigh, SPILSBFirst, SPI3Wire, SPINoCS
	SpeedHz     uint32 // clock in Hz; 0 means DefaultSPISpeedHz
	BitsPerWord uint8  // word size in bits; 0 means 8
}

func (o SPIOptions) validate() error {
	if o.Mode&^spiModeMask != 0 {
		return fmt.Errorf("mode 0x%x has unknown bits: %w", o.Mode, hal.ErrInvalid)
	}
	if o.BitsPerWord > 32 {
		return fmt.Errorf("%d bits per word: %w", o.BitsPerWord, hal.ErrInvalid)
	}
	return nil
}

func (o SPIOptions) speed() uint32 {
	if o.SpeedHz == 0 {
		return DefaultSPISpeedHz
	}
	return o.SpeedHz
}

func (o SPIOptions) bits() uint8 {
	if o.BitsPerWord == 0 {
		return 8
	}
	return o.BitsPerWord
}

// spiIOCTransfer is struct spi_ioc_transfer, 32 bytes on every architecture.
type spiIOCTransfer struct {
	txBuf          uint64
	rxBuf          uint64
	len            uint32
	speedHz        uint32
	delayUsecs     uint16
	bitsPerWord    uint8
	csChange       uint8
	txNbits        uint8
	rxNbits        uint8
	wordDelayUsecs uint8
	_              uint8
}

// SPI is one SPI port, /dev/spidevB.C. Get it from [Provider.SPIPort]. It is safe for concurrent
// use: transfers on one port run one at a time, and waiting for the port honours the context.
type SPI struct {
	id   SPIPortID
	dev  device
	opts SPIOptions
	mu   ctxLock
}

func openSPI(k kernel, path string, id SPIPortID, o SPIOptions) (*SPI, error) {
	what := fmt.Sprintf("spi %d.%d (%s)", id.Bus, id.CS, path)
	f, err := openFile(path, 0, what)
	if err != nil {
		return nil, err
	}
	dev, err := newDevice(f, k)
	if err != nil {
		return nil, wrap(err, opening, "%s", what)
	}
	s := &SPI{id: id, dev: dev, opts: o, mu: newCtxLock()}
	if err := s.configure(); err != nil {
		f.Close()
		return nil, wrap(err, opening, "%s", what) // ENOTTY: not spidev; EINVAL: refused
	}
	return s, nil
}

// configure sets the port's mode, word size and clock. A driver that refuses one answers EINVAL,
// which maps to hal.ErrInvalid.
func (s *SPI) configure() error {
	if s.opts.Mode <= 0xff {
		m := uint8(s.opts.Mode)
		if err := s.dev.ioctl(spiIOCWrMode, unsafe.Pointer(&m)); err != nil {
			return fmt.Errorf("set mode 0x%x: %w", s.opts.Mode, err)
		}
	} else {
		m := s.opts.Mode
		if err := s.dev.ioctl(spiIOCWrMode32, unsafe.Pointer(&m)); err != nil {
			return fmt.Errorf("set mode 0x%x: %w", s.opts.Mode, err)
		}
	}
	bits := s.opts.bits()
	if err := s.dev.ioctl(spiIOCWrBitsPerWord, unsafe.Pointer(&bits)); err != nil {
		return fmt.Errorf("set %d bits per word: %w", bits, err)
	}
	speed := s.opts.speed()
	if err := s.dev.ioctl(spiIOCWrMaxSpeedHz, unsafe.Pointer(&speed)); err != nil {
		return fmt.Errorf("set %d Hz: %w", speed, err)
	}
	return nil
}

// Tx implements [hal.SPI]: one full-duplex transfer (one SPI_IOC_MESSAGE) that clocks out w and
// clocks in r with chip select held; len(w) must equal len(r), and spidev limits a transfer to
// its bufsiz parameter (4096 bytes by default). The transfer cannot be interrupted once the
// kernel has it. Errors wrap [hal.ErrInvalid] (lengths, or a transfer the driver refuses),
// [hal.ErrNoDevice] or [hal.ErrIO], and also the errno itself.
func (s *SPI) Tx(ctx context.Context, w, r []byte) error {
	if len(w) != len(r) {
		return fmt.Errorf("linux: spi %d.%d: %d bytes out, %d in: %w", s.id.Bus, s.id.CS, len(w), len(r), hal.ErrInvalid)
	}
	if err := s.mu.lock(ctx); err != nil {
		return fmt.Errorf("linux: spi %d.%d: %w", s.id.Bus, s.id.CS, err)
	}
	defer s.mu.unlock()
	if len(w) == 0 {
		return nil
	}
	// The kernel reads the buffer addresses out of a __u64, where the garbage collector cannot
	// see them: pin the buffers for the call.
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&w[0])
	pin.Pin(&r[0])
	t := spiIOCTransfer{
		txBuf:       uint64(uintptr(unsafe.Pointer(&w[0]))),
		rxBuf:       uint64(uintptr(unsafe.Pointer(&r[0]))),
		len:         uint32(len(w)),
		speedHz:     s.opts.speed(),
		bitsPerWord: s.opts.bits(),
	}
	return wrap(s.dev.ioctl(spiIOCMessage1, unsafe.Pointer(&t)), transfer, "spi %d.%d", s.id.Bus, s.id.CS)
}
