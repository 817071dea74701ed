//go:build linux && (ppc64 || ppc64le)

package linux

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/perch-edge/perch/hal"
)

// haveBOTHER tells whether rates without a Bnnn code can be set.
const haveBOTHER = false

// setOtherBaud fails: golang.org/x/sys has no termios2 for powerpc, so only the standard rates
// work there.
func setOtherBaud(fd int, t *unix.Termios, baud int) error {
	return fmt.Errorf("%d baud is not a standard rate: %w", baud, hal.ErrInvalid)
}

// outputSpeed is not available without termios2.
func outputSpeed(fd int) (uint32, error) { return 0, unix.ENOTTY }
