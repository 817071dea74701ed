package runtime

import (
	"context"
	"strings"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/plugin"
	"github.com/perch-edge/perch/runtime/config"
)

// Devices on real buses (backend linux) and on plugin providers (backend plugin) are routed by a
// plugin.Mux in front of the simulated provider.

// routePlugin routes a plugin device to its provider, starting the provider first if no earlier
// device named the same command and args (those share one process).
func (r *Runtime) routePlugin(ctx context.Context, mux *plugin.Mux, d *config.Device) error {
	key := strings.Join(append([]string{d.Command}, d.Args...), "\x00")
	prov := r.plugs[key]
	if prov == nil {
		var err error
		prov, err = plugin.Start(ctx, plugin.Options{
			Command: d.Command, Args: d.Args,
			Logger: r.log.With("component", "hal-plugin", "device", d.Name),
		})
		if err != nil {
			return err
		}
		if r.plugs == nil {
			r.plugs = map[string]*plugin.Provider{}
		}
		r.plugs[key] = prov
	}
	route(mux, d, prov)
	return nil
}

// route sends the device's bus, line or port to prov.
func route(mux *plugin.Mux, d *config.Device, prov hal.Provider) {
	switch {
	case d.Line != nil:
		mux.RouteGPIO(*d.Line, prov)
	case d.Port != "":
		mux.RouteUART(d.Port, prov)
	case d.CS != nil:
		mux.RouteSPI(d.Bus, *d.CS, prov)
	default:
		mux.RouteI2C(d.Bus, uint16(d.Address), prov)
	}
}
