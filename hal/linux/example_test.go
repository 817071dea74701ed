//go:build linux

package linux_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/hal/linux"
)

// Read a BME280's chip id over I2C and count button presses on GPIO 17, on a Raspberry Pi.
func Example() {
	p, err := linux.New(linux.Options{
		GPIO: map[int]linux.LineOptions{
			17: {Bias: linux.BiasPullUp, ActiveLow: true, Edges: linux.EdgeRising, Debounce: 5 * time.Millisecond},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	bus, err := p.I2CBus(1)
	if err != nil {
		fmt.Println(err) // wraps hal.ErrNoDevice where there is no /dev/i2c-1
		return
	}
	id := make([]byte, 1)
	switch err := bus.Tx(ctx, 0x76, []byte{0xd0}, id); {
	case errors.Is(err, hal.ErrNACK):
		fmt.Println("nothing at 0x76")
	case err != nil:
		fmt.Println(err)
	default:
		fmt.Printf("chip id 0x%02x\n", id[0])
	}

	button, err := p.Line(17)
	if err != nil {
		fmt.Println(err)
		return
	}
	for presses := 0; ; presses++ {
		e, err := button.WaitEdge(ctx) // sleeps until the kernel reports a press
		if err != nil {
			fmt.Println(presses, "presses")
			return
		}
		fmt.Println("pressed at", e.Time)
	}
}
