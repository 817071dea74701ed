package window_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perch-edge/perch/sdk/abi"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// The hot swap state handoff (perch_snapshot, perch_restore): the C module is swapped for a
// fresh instance of itself with its snapshot, again and again, in the middle of windows, while
// the Go reference runs on without a swap; every call's output must still be the same.

// TestHandoffGolden swaps after every batch of the golden inputs (each batch ends in the middle
// of the 1m window of its last readings, and of a 5m window): the summaries equal the
// reference's, and for 1m, testdata/summaries.golden, byte for byte.
func TestHandoffGolden(t *testing.T) {
	for _, cfg := range []string{`{"window":"1m"}`, `{"window":"5m"}`} {
		t.Run(cfg, func(t *testing.T) {
			p := newPair(t, cfg)
			var all []byte
			sizes := 0
			batches := append(goldenBatches(), encode(reading(7200, "bme280-0", "env", "temp", 0.0)))
			for i, b := range batches {
				got := p.Process(t, fmt.Sprintf("batch %d", i), b)
				all = append(all, got...)
				if i%2 == 0 {
					// Half the swaps are in the middle of a batch's records: split it.
					sizes += p.Swap(t)
				}
			}
			if p.Records == 0 || sizes == 0 {
				t.Fatalf("%d summaries compared, %d bytes handed over", p.Records, sizes)
			}
			if cfg != `{"window":"1m"}` {
				return
			}
			golden, err := os.ReadFile(filepath.Join("testdata", "summaries.golden"))
			if err != nil {
				t.Fatal(err)
			}
			if got := perchtest.Render(all, moduleName, "%.6g") + "\n"; got != string(golden) {
				t.Errorf("the summaries through swaps differ from testdata/summaries.golden:\n%s", got[:min(len(got), 2000)])
			}
		})
	}
}

// TestHandoffMidBatch splits batches at random records and swaps between the halves, so that
// windows, groups and fields are handed over in every state, under random inputs (many groups,
// fields beyond the first four, late readings, NaN, signed zeros, empty names).
func TestHandoffMidBatch(t *testing.T) {
	for i, cfg := range []string{`{"window":"10s"}`, `{"window":"7ns"}`, `{"window":"3s","series":"env"}`} {
		t.Run(cfg, func(t *testing.T) {
			p := newPair(t, cfg)
			g := newGen(uint64(i)*977+5, []int64{10e9, 7, 3e9}[i])
			swaps := 0
			for b := range 30 {
				var recs []rec
				for range 1 + g.r.IntN(200) {
					recs = append(recs, g.record())
				}
				cut := g.r.IntN(len(recs) + 1)
				p.Process(t, fmt.Sprintf("batch %d, first part", b), encode(recs[:cut]...))
				p.Swap(t)
				swaps++
				p.Process(t, fmt.Sprintf("batch %d, second part", b), encode(recs[cut:]...))
			}
			if p.Records == 0 {
				t.Error("no summaries compared")
			}
			t.Logf("%d summaries compared through %d swaps", p.Records, swaps)
		})
	}
}

// TestHandoffSnapshot checks the snapshot's header and that an idle module hands over only its
// (empty) window.
func TestHandoffSnapshot(t *testing.T) {
	m, l := perchtest.MustLoadBuilt(t, moduleName, `{"window":"10s"}`)
	snap, err := m.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("%v\n%s", err, l)
	}
	if len(snap) < 16 || string(snap[:4]) != "PWIN" || snap[4] != 1 {
		t.Fatalf("snapshot %q: want the PWIN header, version 1", snap)
	}
	empty := len(snap)
	if _, err := m.Process(context.Background(), encode(reading(1, "a", "env", "temp", 1.0, "hum", 2.0))); err != nil {
		t.Fatal(err)
	}
	if snap, _ = m.Snapshot(context.Background()); len(snap) <= empty {
		t.Fatalf("a snapshot with one group is %d bytes, an empty one %d", len(snap), empty)
	}
}

// TestHandoffRefused: the module refuses, with EINVAL and a log line saying why, every snapshot
// it cannot take, and then carries on as a fresh instance.
func TestHandoffRefused(t *testing.T) {
	const cfg = `{"window":"10s"}`
	src, _ := perchtest.MustLoadBuilt(t, moduleName, cfg)
	if _, err := src.Process(context.Background(), encode(reading(1, "a", "env", "temp", 1.0))); err != nil {
		t.Fatal(err)
	}
	good, err := src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := perchtest.MustLoadBuilt(t, "threshold", `{"field":"temp","above":1}`)
	thr, err := other.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	version2 := append([]byte(nil), good...)
	version2[4] = 2
	badKey := append([]byte(nil), good...)
	k := bytes.Index(badKey, []byte("\x01a\x03env"))
	if k < 0 {
		t.Fatalf("no key a/env in the snapshot %q", good)
	}
	badKey[k+2] = 9 // the series' length runs past the key
	for _, tc := range []struct {
		name, cfg string
		snap      []byte
		used      bool // restore into an instance that has processed records
		why       string
	}{
		{"another module's", cfg, thr, false, "unknown magic"},
		{"another format version", cfg, version2, false, "format version"},
		{"another config", `{"window":"20s"}`, good, false, "another config"},
		{"truncated", cfg, good[:len(good)-3], false, "truncated"},
		{"trailing bytes", cfg, append(append([]byte(nil), good...), 0), false, "bytes after its end"},
		{"garbage", cfg, []byte("garbage"), false, "unknown magic"},
		{"empty", cfg, nil, false, "truncated"},
		{"malformed key", cfg, badKey, false, "key is malformed"},
		{"into a used instance", cfg, good, true, "state already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.cfg)
			if tc.used {
				p.Process(t, "before", encode(reading(3, "b", "env", "temp", 5.0)))
			}
			err := p.C.Restore(context.Background(), tc.snap)
			if perchtest.Errno(err) != abi.EINVAL {
				t.Fatalf("restore: %v, want EINVAL", err)
			}
			if !strings.Contains(p.Logs.String(), "WARN perch_restore: refused: ") || !strings.Contains(p.Logs.String(), tc.why) {
				t.Errorf("log %q, want a refusal saying %q", p.Logs.String(), tc.why)
			}
			// Nothing was taken: the module goes on as the reference does.
			p.Process(t, "after", encode(reading(12, "b", "env", "temp", 1.0), reading(25, "b", "env", "temp", 1.0)))
			if p.Records == 0 {
				t.Error("no summary after the refusal")
			}
		})
	}
}

// FuzzRestore hands a fresh module arbitrary snapshots: it takes them (EINVAL) or refuses them,
// never faults, and carries on processing either way.
func FuzzRestore(f *testing.F) {
	const cfg = `{"window":"10s"}`
	src, _ := perchtest.MustLoadBuilt(f, moduleName, cfg)
	if _, err := src.Process(context.Background(), encode(reading(1, "a", "env", "temp", 1.0, "hum", 2.0),
		reading(2, "b", "power", "watts", 3.0))); err != nil {
		f.Fatal(err)
	}
	good, err := src.Snapshot(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte("PWIN\x01\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, snap []byte) {
		m, l := perchtest.MustLoadBuilt(t, moduleName, cfg)
		if len(snap) >= 16 && string(snap[:4]) == "PWIN" {
			copy(snap[8:16], good[8:16]) // the config's hash, so that the fuzzer reaches the body
		}
		if err := m.Restore(context.Background(), snap); err != nil && perchtest.Errno(err) != abi.EINVAL {
			t.Fatalf("restore: %v\n%s", err, l)
		}
		if _, err := m.Process(context.Background(), encode(reading(5, "a", "env", "temp", 1.0), reading(25, "a", "env", "temp", 2.0))); err != nil {
			t.Fatalf("process after the restore: %v\n%s", err, l)
		}
	})
}
