package replay_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/perch-edge/perch/hal/replay"
)

// fuzzRead checks that any input either reads into a well-formed table or fails with
// ErrFormat, and that a table that reads plays back through a Device to the same values.
func fuzzRead(f *testing.F, format replay.Format, seeds ...string) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.csv"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b, false)
		}
	}
	for _, s := range seeds {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, labels bool) {
		tab, err := replay.Read(bytes.NewReader(data), format, replay.ReadOptions{Labels: labels})
		if err != nil {
			if !errors.Is(err, replay.ErrFormat) {
				t.Fatalf("%v does not match ErrFormat", err)
			}
			return
		}
		if len(tab.Columns) == 0 || len(tab.Columns) > replay.MaxColumns {
			t.Fatalf("%d columns", len(tab.Columns))
		}
		for _, r := range tab.Rows {
			if len(r.Values) != len(tab.Columns) {
				t.Fatalf("row %+v for columns %q", r, tab.Columns)
			}
		}
		d, err := replay.NewDevice(tab, replay.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		p := make([]byte, 4096)
		for {
			n, err := d.Read(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			out.Write(p[:n])
		}
		back, eof := decode(t, out.String())
		if !eof || !same(back, tab) {
			t.Fatalf("played back %+v, eof %v; want %+v", back, eof, tab)
		}
	})
}

func FuzzReadSKAB(f *testing.F) {
	fuzzRead(f, replay.FormatSKAB, "datetime;a;anomaly\n2020-01-01 00:00:00;1;0\n", "datetime;a\n\"2020-01-01 00:00:00\";\"1e400\"\n")
}

func FuzzReadNAB(f *testing.F) {
	fuzzRead(f, replay.FormatNAB, "timestamp,value\n2020-01-01 00:00:00.25,-0\n", "timestamp,value\n  \n")
}

func FuzzReadPerch(f *testing.F) {
	fuzzRead(f, replay.FormatPerch, "time_ns,x,y\n-5,nan,\n", "time_ns,x\n9223372036854775807,Inf\n")
}
