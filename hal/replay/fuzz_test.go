package replay_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
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

// FuzzDeviceCommands writes arbitrary command bytes (what a driver module may send) between
// reads of arbitrary sizes: whatever they are, the device sends only whole lines of its
// protocol, and after each header the rows of one run in order (row k, k+1, ... of the table),
// then at most one "#eof".
func FuzzDeviceCommands(f *testing.F) {
	f.Add([]byte("#seek 1\n"), []byte("header\n"), uint8(7))
	f.Add([]byte("#seek 0\r\n#seek 2\n"), []byte("#seek 9999\n"), uint8(1))
	f.Add([]byte("#seek -1\nhead"), []byte("er\n#seek 1"), uint8(200))
	f.Fuzz(func(t *testing.T, cmd1, cmd2 []byte, size uint8) {
		d, err := replay.NewDevice(table, replay.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var out bytes.Buffer
		p := make([]byte, int(size)+1)
		read := func(times int) {
			for range times {
				n, err := d.Read(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				out.Write(p[:n])
			}
		}
		read(2)
		d.Write(ctx, cmd1)
		read(3)
		d.Write(ctx, cmd2)
		read(1 << 10)
		rows := []string{row0, row1, row2}
		next := -1 // the row index expected next; -1: none before a header
		prev := ""
		for _, line := range bytes.SplitAfter(out.Bytes(), []byte("\n")) {
			l := string(line)
			switch {
			case l == "":
			case l == header:
			case l == "#eof\n":
				next = len(rows) + 1
			default:
				k := slices.Index(rows, l)
				// Right after a header (a seek) a run may start at any row; a header sent
				// again in the middle of a run ("header") does not break it.
				if k < 0 || (prev != header && k != next) || (prev == header && next < 0 && k != 0 && !seeks(cmd1, cmd2)) {
					t.Fatalf("line %q (expected row %d) in %q", l, next, out.String())
				}
				next = k + 1
			}
			if l != "" && l[len(l)-1] != '\n' {
				t.Fatalf("a partial line %q at the end of %q", l, out.String())
			}
			prev = l
		}
	})
}

func seeks(cmds ...[]byte) bool {
	for _, c := range cmds {
		if bytes.Contains(c, []byte("#seek")) {
			return true
		}
	}
	return false
}
