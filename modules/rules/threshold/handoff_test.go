package threshold_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The hot swap state handoff (perch_snapshot, perch_restore): the C module is swapped for a
// fresh instance of itself with its snapshot while the Go reference runs on without a swap;
// every call's output must still be the same.

// TestHandoffAlerts: an alert raised before a swap is not raised again after it and is cleared
// when the value comes back (with hysteresis), and a hold-off that started before a swap ends
// on time after it.
func TestHandoffAlerts(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		before    []rec
		after     []rec
		want      []string // the states of the alerts after the swap
	}{
		{"raised stays raised, then clears", `{"field":"temp","above":30,"hysteresis":2}`,
			[]rec{r(1, 20), r(2, 31)}, []rec{r(3, 35), r(4, 29), r(5, 27.9)}, []string{"cleared"}},
		{"below, raised, clears", `{"field":"temp","below":5,"hysteresis":1}`,
			[]rec{r(1, 4)}, []rec{r(2, 3), r(3, 5.5), r(4, 6.5)}, []string{"cleared"}},
		{"a hold-off across the swap", `{"field":"temp","above":30,"hold_off":"10s"}`,
			[]rec{r(0, 31), r(5, 32)}, []rec{r(9, 33), r(10, 34), r(11, 35)}, []string{"raised"}},
		{"pending then back inside", `{"field":"temp","above":30,"hold_off":"10s"}`,
			[]rec{r(0, 31)}, []rec{r(5, 29), r(12, 31), r(21, 31), r(22, 31)}, []string{"raised"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.cfg)
			p.Process(t, "before", encode(tc.before...))
			if n := p.Swap(t); n == 0 {
				t.Fatal("nothing handed over")
			}
			out := p.Process(t, "after", encode(tc.after...))
			var states []string
			for _, rec := range perchtest.Decode(out) {
				states = append(states, rec.Tags["state"])
			}
			if strings.Join(states, " ") != strings.Join(tc.want, " ") {
				t.Errorf("alerts after the swap %v, want %v", states, tc.want)
			}
		})
	}
}

// TestHandoffRandom swaps between the halves of random batches, split at a random record, under
// several configs: the alerts are the reference's.
func TestHandoffRandom(t *testing.T) {
	for i, tc := range []struct {
		cfg    string
		field  string
		lo, hi float64
	}{
		{`{"field":"temp","above":30,"hysteresis":2,"hold_off":"5s"}`, "temp", -1e300, 30},
		{`{"field":"temperature_c","above":30,"below":10,"hysteresis":1,"hold_off":"2s","series":"env"}`, "temperature_c", 10, 30},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, tc.cfg)
			g := newGen(uint64(100+i), tc.field, tc.lo, tc.hi)
			for b := range 25 {
				var recs []rec
				for range 1 + g.r.IntN(150) {
					recs = append(recs, g.record())
				}
				cut := g.r.IntN(len(recs) + 1)
				p.Process(t, fmt.Sprintf("batch %d, first part", b), encode(recs[:cut]...))
				p.Swap(t)
				p.Process(t, fmt.Sprintf("batch %d, second part", b), encode(recs[cut:]...))
			}
			if p.Records < 20 {
				t.Errorf("only %d alerts compared", p.Records)
			}
			t.Logf("%d alerts compared through 25 swaps", p.Records)
		})
	}
}

// TestHandoffRefused: the module refuses, with EINVAL and a log line saying why, every snapshot
// it cannot take, and then carries on as a fresh instance.
func TestHandoffRefused(t *testing.T) {
	const cfg = `{"field":"temp","above":30}`
	src, _ := perchtest.MustLoadBuilt(t, moduleName, cfg)
	if _, err := src.Process(context.Background(), encode(r(1, 31))); err != nil {
		t.Fatal(err)
	}
	good, err := src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(good) < 16 || string(good[:4]) != "PTHR" || good[4] != 1 {
		t.Fatalf("snapshot %q: want the PTHR header, version 1", good)
	}
	other, _ := perchtest.MustLoadBuilt(t, "window", `{"window":"10s"}`)
	win, err := other.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	badSide := append([]byte(nil), good...)
	badSide[len(badSide)-10] = 7 // the raised side of the only state
	badKey := append([]byte(nil), good...)
	k := bytes.Index(badKey, []byte("\x01a\x03env"))
	if k < 0 {
		t.Fatalf("no key a/env in the snapshot %q", good)
	}
	badKey[k] = 200 // the source's length runs past the key
	for _, tc := range []struct {
		name, cfg string
		snap      []byte
		used      bool
		why       string
	}{
		{"another module's", cfg, win, false, "unknown magic"},
		{"another config", `{"field":"temp","above":31}`, good, false, "another config"},
		{"truncated", cfg, good[:len(good)-1], false, "truncated"},
		{"trailing bytes", cfg, append(append([]byte(nil), good...), 1, 2), false, "bytes after its end"},
		{"a side out of range", cfg, badSide, false, "side"},
		{"malformed key", cfg, badKey, false, "key is malformed"},
		{"into a used instance", cfg, good, true, "state already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.cfg)
			if tc.used {
				p.Process(t, "before", encode(r(1, 20)))
			}
			if err := p.C.Restore(context.Background(), tc.snap); perchtest.Errno(err) != abi.EINVAL {
				t.Fatalf("restore: %v, want EINVAL", err)
			}
			if !strings.Contains(p.Logs.String(), "WARN perch_restore: refused: ") || !strings.Contains(p.Logs.String(), tc.why) {
				t.Errorf("log %q, want a refusal saying %q", p.Logs.String(), tc.why)
			}
			// Nothing was taken: the module raises its alert afresh, as the reference does.
			p.Process(t, "after", encode(r(2, 40), r(3, 10)))
			if p.Records != 2 {
				t.Errorf("%d alerts after the refusal, want raised and cleared", p.Records)
			}
		})
	}
}

// FuzzRestore hands a fresh module arbitrary snapshots: it takes them or refuses them (EINVAL),
// never faults, and carries on processing either way.
func FuzzRestore(f *testing.F) {
	const cfg = `{"field":"temp","above":30,"hold_off":"1s"}`
	src, _ := perchtest.MustLoadBuilt(f, moduleName, cfg)
	if _, err := src.Process(context.Background(), encode(r(1, 31), rk(abi.KindReading, 1, "b", "env", "temp", 35))); err != nil {
		f.Fatal(err)
	}
	good, err := src.Snapshot(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:30])
	f.Add([]byte("PTHR\x01\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, snap []byte) {
		m, l := perchtest.MustLoadBuilt(t, moduleName, cfg)
		if len(snap) >= 16 && string(snap[:4]) == "PTHR" {
			copy(snap[8:16], good[8:16]) // the config's hash, so that the fuzzer reaches the body
		}
		if err := m.Restore(context.Background(), snap); err != nil && perchtest.Errno(err) != abi.EINVAL {
			t.Fatalf("restore: %v\n%s", err, l)
		}
		if _, err := m.Process(context.Background(), encode(r(5, 40), r(25, 2))); err != nil {
			t.Fatalf("process after the restore: %v\n%s", err, l)
		}
	})
}
