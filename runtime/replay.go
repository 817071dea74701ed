package runtime

import (
	"github.com/perch-edge/perch/hal/replay"
	"github.com/perch-edge/perch/hal/sim"
	"github.com/perch-edge/perch/runtime/config"
)

// attachReplay reads a replay device's recording and attaches the device that plays it to its
// UART port on p. The replay starts with Run, as the simulated devices' scripts do; SimDevice
// returns the *replay.Device.
func (r *Runtime) attachReplay(p *sim.Provider, d *config.Device) error {
	dev, err := replay.Open(d.File, replay.Format(d.Format), replay.ReadOptions{Columns: d.Columns, Labels: d.Labels},
		replay.Options{Speed: d.ReplaySpeed(), Loop: d.Loop})
	if err != nil {
		return err
	}
	if err := p.AttachUART(d.Port, dev); err != nil {
		return err
	}
	r.sims = append(r.sims, dev)
	r.simDev[d.Name] = dev
	return nil
}
