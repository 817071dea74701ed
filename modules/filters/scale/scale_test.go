package scale_test

import (
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// TestScale runs the C module, built by make modules from wasm/scale.c, in the real engine. The
// readings it re-emits have the filter as their source (the host fills in the emitting module).
func TestScale(t *testing.T) {
	m := perchtest.Load(t, perchtest.Options{
		Wasm:   perchtest.Built(t, "scale"),
		Config: map[string]any{"factor": 1.8, "offset": 32},
	})
	out := m.Process(t,
		perchtest.Reading(1000, "env", "environment", "temperature_c", 20.0, "humidity_pct", 50.0, "unit", "c"),
		perchtest.Encode(abi.KindAlert, 2000, "env-hot", "environment", "value", 31.0),
		perchtest.Reading(3000, "env", "environment", "temperature_c", -40.0),
	)
	if len(out) != 2 {
		t.Fatalf("got %d records, want the 2 readings: %+v", len(out), out)
	}
	want := []map[string]float64{{"temperature_c": 68, "humidity_pct": 122}, {"temperature_c": -40}}
	for i, r := range out {
		if r.Kind != abi.KindReading || r.Source != "scale" || r.Series != "environment" || r.TimeNS != int64(1000+2000*i) {
			t.Errorf("record %d: %+v", i, r)
		}
		for k, v := range want[i] {
			if got := r.Fields[k]; got < v-1e-9 || got > v+1e-9 {
				t.Errorf("record %d: %s = %v, want %v", i, k, got, v)
			}
		}
	}
	if out[0].Tags["unit"] != "c" {
		t.Errorf("tags not kept: %v", out[0].Tags)
	}
}

// TestScaleBadConfig checks that a config the module cannot parse fails its init.
func TestScaleBadConfig(t *testing.T) {
	_, err := perchtest.Open(perchtest.Options{Wasm: perchtest.Built(t, "scale"), Config: map[string]any{"factor": "big"}})
	if err == nil {
		t.Fatal("loaded with factor \"big\"")
	}
	t.Log(err)
}
