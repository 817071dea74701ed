// Command simprovider is an example out-of-process HAL provider: a simulated BME280 on I2C bus 1
// at address 0x76 and a relay on GPIO line 17, served with [plugin.Serve]. The host starts it;
// run by hand, it says so and exits.
//
// The flag -i2c-delay makes every BME280 transaction take that long (as a slow bus would), so
// that a test can kill the provider in the middle of a read.
package main

import (
	"context"
	"flag"
	"time"

	"github.com/perch-edge/perch/hal/plugin"
	"github.com/perch-edge/perch/hal/sim"
)

func main() {
	delay := flag.Duration("i2c-delay", 0, "time every BME280 transaction takes")
	flag.Parse()
	var p sim.Provider
	bme := sim.NewBME280(sim.Signals{
		Temperature: sim.Signal{Value: 21.5},
		Pressure:    sim.Signal{Value: 1013.25},
		Humidity:    sim.Signal{Value: 45},
	}, time.Now)
	_ = p.AttachI2C(1, 0x76, slow{bme, *delay}) // cannot fail: the bus is empty
	_ = p.AttachGPIO(17, sim.NewRelay(time.Now))
	plugin.Serve(plugin.WithFingerprint(&p, plugin.Fingerprint{
		I2C:  []plugin.I2CAddr{{Bus: 1, Addr: 0x76}},
		GPIO: []int{17},
	}))
}

// slow delays a device's transactions.
type slow struct {
	sim.I2CDevice
	d time.Duration
}

func (s slow) Tx(ctx context.Context, w, r []byte) error {
	if s.d > 0 {
		t := time.NewTimer(s.d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return s.I2CDevice.Tx(ctx, w, r)
}
