//go:build !linux

package runtime

import (
	"errors"

	"github.com/perch-edge/perch/hal/plugin"
	"github.com/perch-edge/perch/runtime/config"
)

// routeLinux refuses: the box's own buses are reached through Linux device files.
func (r *Runtime) routeLinux(*plugin.Mux, *config.Device) error {
	return errors.New("backend linux needs Linux")
}
