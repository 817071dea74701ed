//go:build wasip1

// Command wasm is the bme280 driver module: it reads a Bosch BME280 over I2C through
// perch:hal/v1 and emits one reading per poll with temperature_c, pressure_hpa and humidity_pct.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o bme280.wasm ./modules/drivers/bme280/wasm
package main

import (
	"fmt"

	"github.com/perch-edge/perch/modules/drivers/bme280"
	"github.com/perch-edge/perch/sdk/abi"
	perch "github.com/perch-edge/perch/sdk/go"
)

// config is the module's config section.
type config struct {
	Bus     int    `json:"bus"`     // I2C bus number; default 1
	Address int    `json:"address"` // 0x76 (default) or 0x77
	Series  string `json:"series"`  // series name of the readings; default "environment"
}

var (
	cfg   = config{Bus: 1, Address: 0x76, Series: "environment"}
	chip  bme280.Chip
	ready bool
)

func init() {
	perch.Register(perch.Module{Init: start, Poll: poll})
}

// tx binds the chip's transactions to the configured bus and address.
func tx(w, r []byte) error {
	switch {
	case len(r) == 0:
		return perch.I2CWrite(cfg.Bus, cfg.Address, w)
	case len(w) == 1:
		return perch.I2CRead(cfg.Bus, cfg.Address, int(w[0]), r)
	default:
		return fmt.Errorf("bme280: unsupported transaction (%d bytes out, %d in)", len(w), len(r))
	}
}

func start() error {
	if err := perch.Config(&cfg); err != nil {
		return err
	}
	if cfg.Address != 0x76 && cfg.Address != 0x77 {
		return fmt.Errorf("config: address: want 0x76 or 0x77, got %#x", cfg.Address)
	}
	if cfg.Series == "" {
		cfg.Series = "environment"
	}
	return setup()
}

// setup initialises the chip; it runs again on the next poll after a failed read, in case the
// chip was power-cycled.
func setup() error {
	if err := chip.Init(tx); err != nil {
		ready = false
		return err
	}
	ready = true
	return nil
}

func poll(max int, out *perch.Out) error {
	if !ready {
		if err := setup(); err != nil {
			return err
		}
	}
	for range max {
		r, err := chip.Read(tx)
		if err != nil {
			ready = false
			return err
		}
		out.Begin(abi.KindReading, 0, cfg.Series) // time 0: the host stamps it
		out.Field("temperature_c", r.TemperatureC)
		out.Field("pressure_hpa", r.PressureHPa)
		out.Field("humidity_pct", r.HumidityPct)
		out.End()
	}
	return nil
}

// main is required by the toolchain but never runs: a reactor's host calls the exports.
func main() {}
