//go:build linux && !ppc64 && !ppc64le

package linux

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// haveBOTHER tells whether rates without a Bnnn code can be set.
const haveBOTHER = true

// setOtherBaud sets a rate that has no Bnnn code through termios2 and BOTHER.
func setOtherBaud(fd int, t *unix.Termios, baud int) error {
	t.Cflag &^= unix.CBAUD | unix.CIBAUD
	t.Cflag |= unix.BOTHER
	t.Ispeed, t.Ospeed = uint32(baud), uint32(baud)
	if err := unix.IoctlSetTermios(fd, unix.TCSETS2, t); err != nil {
		return fmt.Errorf("set %d baud: %w", baud, err)
	}
	got, err := outputSpeed(fd)
	if err != nil {
		return fmt.Errorf("get termios2: %w", err)
	}
	if got != uint32(baud) {
		return fmt.Errorf("the driver does not do %d baud (got %d): %w", baud, got, hal.ErrInvalid)
	}
	return nil
}

// outputSpeed reads the tty's output rate in bits per second (termios2 c_ospeed).
func outputSpeed(fd int) (uint32, error) {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
	if err != nil {
		return 0, err
	}
	return t.Ospeed, nil
}
