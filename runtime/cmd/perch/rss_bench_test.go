package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkDemoRSS runs the demo pipeline (examples/demo/perch.yaml, with its recorder in a
// temporary folder; anomaly model and ONNX Runtime included) in the perch binary, and reports
// the process's peak resident memory (VmHWM from /proc) after 10 s, in MB. A first 1 s run
// warms the compile cache, as a box's is after its first start (or by the update agent before a
// swap): compiling adds a one-off peak of about 15 MB. One run takes 12 s, so `go test -bench`
// runs it once.
func BenchmarkDemoRSS(b *testing.B) {
	bin := perchBinary(b)
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		b.Fatal(err)
	}
	demo, err := os.ReadFile(filepath.Join(root, "examples", "demo", "perch.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	text := strings.ReplaceAll(string(demo), "../../build/", filepath.Join(root, "build")+"/")
	text = strings.ReplaceAll(text, "../../var/perch.db", filepath.Join(dir, "perch.db"))
	cfg := filepath.Join(dir, "perch.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(bin, "run", "--config", cfg, "--for", "1s", "--quiet").CombinedOutput(); err != nil {
		b.Fatalf("perch run: %v\n%s", err, out)
	}
	var peak float64
	for range b.N {
		cmd := exec.Command(bin, "run", "--config", cfg, "--for", "12s", "--quiet")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		kb, err := vmHWM(cmd.Process.Pid)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("perch run: %v", err)
		}
		peak = max(peak, float64(kb)/1024)
	}
	b.ReportMetric(peak, "MB_peak_rss")
}

// vmHWM reads a process's peak resident set size in kB.
func vmHWM(pid int) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, os.ErrNotExist
}
