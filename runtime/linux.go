//go:build linux

package runtime

import (
	"github.com/perch-edge/perch/hal/linux"
	"github.com/perch-edge/perch/hal/plugin"
	"github.com/perch-edge/perch/runtime/config"
)

// routeLinux routes a device on the box's own buses to the Linux provider, made on first use.
func (r *Runtime) routeLinux(mux *plugin.Mux, d *config.Device) error {
	if r.linux == nil {
		p, err := linux.New(linux.Options{})
		if err != nil {
			return err
		}
		r.linux = p
	}
	route(mux, d, r.linux)
	return nil
}
