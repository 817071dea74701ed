package plugin

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/perch-edge/perch/hal/sim"
)

// FuzzReply decodes what a provider might send back: no input may panic the host, and a reply
// with the wrong number of bytes is an error.
func FuzzReply(f *testing.F) {
	f.Add([]byte(`{"r":"YA=="}`), 1)
	f.Add([]byte(`{"err":"nack","msg":"bus 1: no ack"}`), 0)
	f.Add([]byte(`{"err":"weird"}`), 4)
	f.Add([]byte(`{"fp":{"i2c":[{"bus":1,"addr":118}],"gpio":[17]}}`), 0)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		var rep reply
		if err := json.Unmarshal(data, &rep); err != nil {
			return
		}
		if err := rep.err(); err != nil {
			_ = err.Error()
			return
		}
		if n < 0 || n > 4096 {
			return
		}
		if err := copyReply(make([]byte, n), rep.R); err == nil && len(rep.R) != n {
			t.Errorf("copyReply accepted %d bytes for %d", len(rep.R), n)
		}
	})
}

// FuzzRequest dispatches what a host might send to a provider: no input may panic it.
func FuzzRequest(f *testing.F) {
	var p sim.Provider
	_ = p.AttachI2C(1, 0x76, sim.NewBME280(sim.Signals{}, time.Now))
	_ = p.AttachGPIO(17, sim.NewRelay(time.Now))
	s := &server{p: WithFingerprint(&p, Fingerprint{GPIO: []int{17}})}
	f.Add(mI2CTx, []byte(`{"bus":1,"addr":118,"w":"0A==","n":1}`))
	f.Add(mGPIOWrite, []byte(`{"line":17,"level":true}`))
	f.Add(mUARTRead, []byte(`{"port":"x","n":-1}`))
	f.Add(mSPITx, []byte(`{"n":100000000}`))
	f.Add(mFingerprint, []byte(`{}`))
	f.Fuzz(func(t *testing.T, method string, data []byte) {
		var q request
		if err := json.Unmarshal(data, &q); err != nil {
			return
		}
		rep := s.dispatch(context.Background(), method, &q)
		if rep.Err == "" && (method == mI2CTx || method == mSPITx) && len(rep.R) != q.N {
			t.Errorf("%s returned %d bytes for %d", method, len(rep.R), q.N)
		}
	})
}
