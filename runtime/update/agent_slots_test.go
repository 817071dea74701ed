package update_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perch-edge/perch/registry/artifact"
	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/update"
	"github.com/perch-edge/perch/runtime/update/boot"
	"github.com/perch-edge/perch/sdk/perchtest"
)

// stagedRuntime pushes release 1 of the perch binary (version, data, for amd64) and runs a box
// on slot A (perch 0.1.0) whose first poll stages it into slot B and asks for one restart; the
// box is stopped then, as the restart would. It returns the registry, the box's folder, the
// slots folder and its loader.
func stagedRuntime(t *testing.T, version string, data []byte) (*registryFixture, string, string, *boot.FileLoader) {
	t.Helper()
	reg := newRegistry(t)
	reg.pushRuntimeRelease(version, []string{"amd64"}, data)
	dir := t.TempDir()
	slotDir, fl := newSlots(t, []byte("perch 0.1.0\n"))
	b := startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotA, "amd64", true)
	if err := b.agent.Once(context.Background()); err != nil || len(b.restarts) != 1 {
		t.Fatalf("stage: %v, restarts %q", err, b.restarts)
	}
	b.stop()
	return reg, dir, slotDir, fl
}

// pushRuntimeRelease pushes data as release 1 of the perch binary (target runtime/perch) for
// hardware, and deployment pumps-1 (release 1), which names it for the whole group.
func (f *registryFixture) pushRuntimeRelease(version string, hardware []string, data []byte) {
	f.t.Helper()
	f.pushSlotImage("runtime/perch", artifact.Runtime, version, 1, hardware, data)
	f.pushDeployment("deployments/pumps", 1, "name: pumps-1\ngroup: pumps\nstage: 100\nruntime: runtime/perch\n")
}

// pushSlotImage pushes data as one file of kind (runtime or firmware) to target, release
// release, for hardware, and signs it.
func (f *registryFixture) pushSlotImage(target string, kind artifact.Kind, version string, release uint64, hardware []string, data []byte) {
	f.t.Helper()
	path := filepath.Join(f.t.TempDir(), "image")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		f.t.Fatal(err)
	}
	host := strings.TrimPrefix(f.url, "http://")
	c := &artifact.Client{PlainHTTP: true}
	desc, err := c.Push(context.Background(), fmt.Sprintf("%s/%s:r%d", host, target, release), kind, path)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.repo.AddTarget(target, desc.Size, trust.Hashes{"sha256": desc.Digest.Encoded()},
		trust.Custom{Kind: string(kind), Version: version, Hardware: hardware, Release: release, Repository: target, Digest: desc.Digest.String()}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.repo.Publish(); err != nil {
		f.t.Fatal(err)
	}
}

// slotBox is one start of a box: a runtime on a pipeline whose module f is the given module
// (scale: healthy; badcrash: crashes), an agent with the runtime's A/B slots in slotDir,
// started from slot running, and a restart seam that records what it was asked.
type slotBox struct {
	rt       *runtime.Runtime
	agent    *update.Agent
	restarts []string
	stop     func()
}

func startSlotBox(t *testing.T, reg *registryFixture, dir, slotDir, module string, running boot.Slot, hardware string, withSlots bool) *slotBox {
	return startSlotBoxFW(t, reg, dir, slotDir, "", module, running, hardware, withSlots)
}

// startSlotBoxFW is startSlotBox with firmware slots (a FileLoader) in fwDir, if not "".
func startSlotBoxFW(t *testing.T, reg *registryFixture, dir, slotDir, fwDir, module string, running boot.Slot, hardware string, withSlots bool) *slotBox {
	t.Helper()
	perchtest.Built(t, "bme280")
	perchtest.Built(t, module)
	abs, err := filepath.Abs("box.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(abs, []byte(strings.Replace(pipeline, "modules/scale.wasm", "modules/"+module+".wasm", 1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = filepath.Join(dir, "perch.db")
	cfg.Engine.CacheDir = filepath.Join(dir, "cache")
	rt, err := runtime.New(context.Background(), cfg, runtime.Options{BackoffMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	b := &slotBox{rt: rt}
	stopped := false
	b.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			rt.Close()
		}
	}
	t.Cleanup(b.stop)
	ac := update.Config{Device: "box-7", Group: "pumps", Hardware: hardware, Registry: reg.url,
		Dir: filepath.Join(dir, "updates"), Root: reg.root, HealthWindow: 500 * time.Millisecond}
	if withSlots {
		ac.Runtime = &update.Slots{Loader: boot.NewFileLoader(boot.OSFS{}, slotDir), Dir: slotDir, File: "perch", Perm: 0o755,
			Running: running, Restart: func(ctx context.Context, reason string) error {
				b.restarts = append(b.restarts, reason)
				return nil
			}}
	}
	if fwDir != "" {
		ac.Firmware = &update.Slots{Loader: boot.NewFileLoader(boot.OSFS{}, fwDir), Dir: fwDir, Tries: 2,
			Restart: func(ctx context.Context, reason string) error {
				b.restarts = append(b.restarts, "reboot: "+reason)
				return nil
			}}
	}
	b.agent, err = update.New(ac, cfg, rt, rt.Store())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// journal returns the journal of target as "release step" strings, in order.
func (b *slotBox) journal(t *testing.T, target string) []string {
	t.Helper()
	rows, err := b.rt.Store().DB().Query(`SELECT release || ' ' || step FROM update_journal WHERE target = ? ORDER BY id`, target)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// newSlots makes a perch-boot folder with binary in slot A, committed, and boots it once as
// perch-boot does at the first start.
func newSlots(t *testing.T, binary []byte) (string, *boot.FileLoader) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "A"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "A", "perch"), binary, 0o755); err != nil {
		t.Fatal(err)
	}
	fl := boot.NewFileLoader(boot.OSFS{}, dir)
	ctx := context.Background()
	if err := fl.Init(ctx, boot.SlotA); err != nil {
		t.Fatal(err)
	}
	if s, err := fl.Boot(ctx); err != nil || s != boot.SlotA {
		t.Fatalf("first boot: %s, %v", s, err)
	}
	return dir, fl
}

// TestIntegrationAgentRuntimeSlots: a deployment's runtime target is written into the idle
// slot and staged, the agent asks for a restart, perch-boot boots the new slot on trial, and
// the agent started from it watches the runtime for its health window and commits it.
func TestIntegrationAgentRuntimeSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	ctx := context.Background()
	reg := newRegistry(t)
	newBin := bytes.Repeat([]byte("perch 0.2.0\n"), 100000) // 1.2 MB: more than one copy chunk
	reg.pushRuntimeRelease("0.2.0", []string{"amd64"}, newBin)
	dir := t.TempDir()
	slotDir, fl := newSlots(t, []byte("perch 0.1.0\n"))

	b := startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotA, "amd64", true)
	if err := b.agent.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if len(b.restarts) != 1 || !strings.Contains(b.restarts[0], "staged in slot B") {
		t.Fatalf("restarts %q", b.restarts)
	}
	if got, err := os.ReadFile(filepath.Join(slotDir, "B", "perch")); err != nil || !bytes.Equal(got, newBin) {
		t.Fatalf("slot B holds %d bytes, %v", len(got), err)
	}
	if st, _ := fl.Status(ctx); st.Trying != boot.SlotB || st.Booted != boot.SlotA || st.TriesLeft != 3 {
		t.Fatalf("loader after staging: %+v", st)
	}
	// Until the restart, this process does nothing more.
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 1 {
		t.Fatalf("a second poll before the restart: %v, restarts %q", err, b.restarts)
	}
	b.stop()

	// perch-boot: the next start takes one boot of the trial.
	if s, err := fl.Boot(ctx); err != nil || s != boot.SlotB {
		t.Fatalf("next boot: %s, %v", s, err)
	}
	b = startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotB, "amd64", true)
	t0 := time.Now()
	if err := b.agent.Once(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("trial judged and committed in %v (health window 500ms)", time.Since(t0).Round(time.Millisecond))
	if st, _ := fl.Status(ctx); st.Trial() || st.Fallback != boot.SlotB || st.Trying != boot.NoSlot {
		t.Fatalf("loader after the commit: %+v", st)
	}
	if len(b.restarts) != 0 {
		t.Errorf("a healthy trial restarted: %q", b.restarts)
	}
	want := "1 found,1 downloaded,1 staged,1 swapped,1 committed"
	if got := strings.Join(b.journal(t, "runtime/perch"), ","); got != want {
		t.Errorf("journal:\n got %s\nwant %s", got, want)
	}
	in, err := b.rt.Store().InstalledAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 1 || in[0].Kind != "runtime" || in[0].Release != 1 || in[0].Path != filepath.Join(slotDir, "B", "perch") {
		t.Errorf("installed %+v", in)
	}
	// Polling again changes nothing; the next boot runs B, committed.
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 0 {
		t.Fatalf("a poll after the commit: %v, restarts %q", err, b.restarts)
	}
	if s, err := fl.Boot(ctx); err != nil || s != boot.SlotB {
		t.Errorf("boot after the commit: %s, %v", s, err)
	}
}

// TestIntegrationAgentRuntimeSlotsRollback: a new release whose runtime is unhealthy (a module
// crashes) is journaled rolled back at its first trial boot and restarted without a commit;
// the remaining trial boots restart at once; the loader falls back to the old slot, and the
// release is never tried again.
func TestIntegrationAgentRuntimeSlotsRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	ctx := context.Background()
	reg := newRegistry(t)
	reg.pushRuntimeRelease("0.3.0", []string{"amd64", "arm64"}, []byte("perch 0.3.0, which crashes\n"))
	dir := t.TempDir()
	slotDir, fl := newSlots(t, []byte("perch 0.1.0\n"))
	b := startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotA, "amd64", true)
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 1 {
		t.Fatalf("stage: %v, restarts %q", err, b.restarts)
	}
	b.stop()

	// The new binary's runtime is unhealthy: its module f crashes.
	boots := 0
	for {
		s, err := fl.Boot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s == boot.SlotA {
			break
		}
		boots++
		if boots > 3 {
			t.Fatal("more trial boots than the counter allows")
		}
		b = startSlotBox(t, reg, dir, slotDir, "badcrash", boot.SlotB, "amd64", true)
		t0 := time.Now()
		if err := b.agent.Once(ctx); err != nil {
			t.Fatal(err)
		}
		if len(b.restarts) != 1 {
			t.Fatalf("trial boot %d: restarts %q", boots, b.restarts)
		}
		t.Logf("trial boot %d: %s (%v)", boots, b.restarts[0], time.Since(t0).Round(time.Millisecond))
		b.stop()
	}
	if boots != 3 {
		t.Errorf("%d trial boots, want 3", boots)
	}
	// Back on slot A, the old binary: the fallback is recorded (once, at the first boot's
	// verdict), nothing is committed, and the release is not tried again.
	b = startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotA, "amd64", true)
	for range 2 {
		if err := b.agent.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.restarts) != 0 {
		t.Errorf("the rolled back release was tried again: %q", b.restarts)
	}
	want := "1 found,1 downloaded,1 staged,1 swapped,1 rolled_back"
	if got := strings.Join(b.journal(t, "runtime/perch"), ","); got != want {
		t.Errorf("journal:\n got %s\nwant %s", got, want)
	}
	if st, _ := fl.Status(ctx); st.Fallback != boot.SlotA || st.Trial() || st.Trying != boot.NoSlot {
		t.Errorf("loader after the fallback: %+v", st)
	}
	if in, _ := b.rt.Store().InstalledAll(ctx); len(in) != 0 {
		t.Errorf("installed %+v", in)
	}
	if s := b.steps(t)["runtime/perch"]; !strings.Contains(s, "module f:") {
		t.Errorf("the rollback does not say why: %s", s)
	}

	// The next release is tried.
	reg.pushSlotImage("runtime/perch", artifact.Runtime, "0.3.1", 2, []string{"amd64"}, []byte("perch 0.3.1\n"))
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 1 || !strings.Contains(b.restarts[0], "0.3.1 staged in slot B") {
		t.Fatalf("release 2: %v, restarts %q", err, b.restarts)
	}
}

func (b *slotBox) steps(t *testing.T) map[string]string {
	t.Helper()
	last, err := b.rt.Store().LastSteps(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range last {
		out[s.Target] = s.Step + ": " + s.Detail
	}
	return out
}

// TestIntegrationAgentRuntimeSlotsRefused: a runtime target for other hardware, and a box
// without runtime slots, refuse the deployment, journal it once, and leave the slots alone.
func TestIntegrationAgentRuntimeSlotsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	ctx := context.Background()
	reg := newRegistry(t)
	reg.pushRuntimeRelease("0.2.0", []string{"arm64"}, []byte("perch 0.2.0 for arm64\n"))
	slotDir, fl := newSlots(t, []byte("perch 0.1.0\n"))
	for _, tc := range []struct {
		name      string
		withSlots bool
		running   boot.Slot
		want      string
	}{
		{"wrong hardware", true, boot.SlotA, `target "runtime/perch" is for ["arm64"], this box is "amd64"`},
		{"no runtime section", false, boot.SlotA, "this box's config has no update.runtime section: refused"},
		{"not started by perch-boot", true, boot.NoSlot, "PERCH_SLOT unset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "not started by perch-boot" {
				reg.pushSlotImage("runtime/perch", artifact.Runtime, "0.2.1", 2, []string{"amd64"}, []byte("perch 0.2.1\n"))
			}
			b := startSlotBox(t, reg, t.TempDir(), slotDir, "scale", tc.running, "amd64", tc.withSlots)
			err := b.agent.Once(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if err := b.agent.Once(ctx); err != nil {
				t.Errorf("a second poll reports the refusal again: %v", err)
			}
			if got := b.journal(t, "runtime/perch"); len(got) != 1 || !strings.HasSuffix(got[0], " failed") {
				t.Errorf("journal %q", got)
			}
			if s := b.steps(t)["runtime/perch"]; !strings.Contains(s, tc.want) {
				t.Errorf("journal detail %q", s)
			}
			if len(b.restarts) != 0 {
				t.Errorf("restarts %q", b.restarts)
			}
			if st, _ := fl.Status(ctx); st.Trying != boot.NoSlot || st.Trial() {
				t.Errorf("loader touched: %+v", st)
			}
			if _, err := os.Stat(filepath.Join(slotDir, "B")); !os.IsNotExist(err) {
				t.Errorf("slot B written: %v", err)
			}
		})
	}
}

// TestIntegrationAgentRuntimeSlotsCrashAtStart: a new binary that crashes before the agent can
// judge it spends the trial's boots; the loader falls back, and the agent started from the old
// slot journals the rollback once and does not try the release again.
func TestIntegrationAgentRuntimeSlotsCrashAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	ctx := context.Background()
	reg, dir, slotDir, fl := stagedRuntime(t, "0.4.0", []byte("perch 0.4.0, which segfaults\n"))
	var got []boot.Slot
	for range 4 { // three trial boots that crash at once, then the fallback
		s, err := fl.Boot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if fmt.Sprint(got) != "[B B B A]" {
		t.Fatalf("boots %v", got)
	}
	b := startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotA, "amd64", true)
	for range 2 {
		if err := b.agent.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.restarts) != 0 {
		t.Errorf("restarts %q", b.restarts)
	}
	want := "1 found,1 downloaded,1 staged,1 rolled_back"
	if got := strings.Join(b.journal(t, "runtime/perch"), ","); got != want {
		t.Errorf("journal:\n got %s\nwant %s", got, want)
	}
	if s := b.steps(t)["runtime/perch"]; !strings.Contains(s, "slot B's boots ran out before it was committed") {
		t.Errorf("rollback detail: %s", s)
	}
	if st, _ := fl.Status(ctx); st.RolledBack != boot.NoSlot || st.Trying != boot.NoSlot || st.Fallback != boot.SlotA {
		t.Errorf("loader after the rollback was recorded: %+v", st)
	}
}

// TestIntegrationAgentRuntimeSlotsCommitInterrupted: a power cut after MarkGood and before the
// installed row: the next start finds slot B committed and records it.
func TestIntegrationAgentRuntimeSlotsCommitInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	ctx := context.Background()
	reg, dir, slotDir, fl := stagedRuntime(t, "0.2.0", []byte("perch 0.2.0\n"))
	if s, err := fl.Boot(ctx); err != nil || s != boot.SlotB {
		t.Fatalf("trial boot: %s, %v", s, err)
	}
	// What the agent does first in a healthy trial, and then the power goes.
	if err := fl.MarkGood(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := fl.Boot(ctx); err != nil || s != boot.SlotB {
		t.Fatalf("boot after the cut: %s, %v", s, err)
	}
	b := startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotB, "amd64", true)
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 0 {
		t.Fatalf("after the cut: %v, restarts %q", err, b.restarts)
	}
	want := "1 found,1 downloaded,1 staged,1 committed"
	if got := strings.Join(b.journal(t, "runtime/perch"), ","); got != want {
		t.Errorf("journal:\n got %s\nwant %s", got, want)
	}
	if in, _ := b.rt.Store().InstalledAll(ctx); len(in) != 1 || in[0].Release != 1 || in[0].Path != filepath.Join(slotDir, "B", "perch") {
		t.Errorf("installed %+v", in)
	}
}

// TestIntegrationAgentFirmwareSlots: a deployment with a runtime and a firmware target takes
// the runtime first; after its commit, the firmware image is staged in the firmware's idle
// slot and the agent asks for a reboot; the trial boot is watched and committed.
func TestIntegrationAgentFirmwareSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	ctx := context.Background()
	reg := newRegistry(t)
	img := bytes.Repeat([]byte{0xfa, 0xce}, 300000)
	reg.pushSlotImage("runtime/perch", artifact.Runtime, "0.2.0", 1, []string{"amd64"}, []byte("perch 0.2.0\n"))
	reg.pushSlotImage("firmware/box", artifact.Firmware, "fw-7", 1, []string{"amd64"}, img)
	reg.pushDeployment("deployments/pumps", 1, "name: pumps-1\ngroup: pumps\nstage: 100\nruntime: runtime/perch\nfirmware: firmware/box\n")
	dir := t.TempDir()
	slotDir, fl := newSlots(t, []byte("perch 0.1.0\n"))
	fwDir := t.TempDir()
	fw := boot.NewFileLoader(boot.OSFS{}, fwDir)
	if err := fw.Init(ctx, boot.SlotA); err != nil {
		t.Fatal(err)
	}
	start := func(running boot.Slot) *slotBox {
		return startSlotBoxFW(t, reg, dir, slotDir, fwDir, "scale", running, "amd64", true)
	}
	b := start(boot.SlotA)
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 1 || !strings.Contains(b.restarts[0], "runtime 0.2.0 staged in slot B") {
		t.Fatalf("stage the runtime: %v, restarts %q", err, b.restarts)
	}
	if st, _ := fw.Status(ctx); st.Trying != boot.NoSlot {
		t.Fatalf("the firmware was staged with the runtime: %+v", st)
	}
	b.stop()
	fl.Boot(ctx)
	b = start(boot.SlotB)
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 1 || !strings.HasPrefix(b.restarts[0], "reboot: firmware fw-7 staged in slot B") {
		t.Fatalf("commit the runtime, stage the firmware: %v, restarts %q", err, b.restarts)
	}
	if got, err := os.ReadFile(filepath.Join(fwDir, "B")); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("firmware slot B: %d bytes, %v", len(got), err)
	}
	b.stop()
	// The bootloader takes the firmware trial; perch-boot still runs runtime slot B.
	if s, _ := fw.Boot(ctx); s != boot.SlotB {
		t.Fatalf("firmware boot: %s", s)
	}
	if s, _ := fl.Boot(ctx); s != boot.SlotB {
		t.Fatalf("runtime boot: %s", s)
	}
	b = start(boot.SlotB)
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 0 {
		t.Fatalf("commit the firmware: %v, restarts %q", err, b.restarts)
	}
	if st, _ := fw.Status(ctx); st.Trial() || st.Fallback != boot.SlotB {
		t.Errorf("firmware loader: %+v", st)
	}
	for target, want := range map[string]string{
		"runtime/perch": "1 found,1 downloaded,1 staged,1 swapped,1 committed",
		"firmware/box":  "1 found,1 downloaded,1 staged,1 swapped,1 committed",
	} {
		if got := strings.Join(b.journal(t, target), ","); got != want {
			t.Errorf("%s journal:\n got %s\nwant %s", target, got, want)
		}
	}
	if in, _ := b.rt.Store().InstalledAll(ctx); len(in) != 2 {
		t.Errorf("installed %+v", in)
	}
}

// TestIntegrationAgentRuntimeSlotsStagedStepLost: a power cut after the loader's TryNext was
// durable and before the staged step was journaled: the trial that boots is the release the
// journal last downloaded, and is committed as it.
func TestIntegrationAgentRuntimeSlotsStagedStepLost(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: a registry, a runtime, Wasm modules")
	}
	ctx := context.Background()
	reg, dir, slotDir, fl := stagedRuntime(t, "0.2.0", []byte("perch 0.2.0\n"))
	db, err := sql.Open("sqlite3", filepath.Join(dir, "perch.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM update_journal WHERE step = 'staged'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := fl.Boot(ctx); err != nil || s != boot.SlotB {
		t.Fatalf("trial boot: %s, %v", s, err)
	}
	b := startSlotBox(t, reg, dir, slotDir, "scale", boot.SlotB, "amd64", true)
	if err := b.agent.Once(ctx); err != nil || len(b.restarts) != 0 {
		t.Fatalf("trial: %v, restarts %q", err, b.restarts)
	}
	want := "1 found,1 downloaded,1 swapped,1 committed"
	if got := strings.Join(b.journal(t, "runtime/perch"), ","); got != want {
		t.Errorf("journal:\n got %s\nwant %s", got, want)
	}
	if in, _ := b.rt.Store().InstalledAll(ctx); len(in) != 1 || in[0].Release != 1 || in[0].Version != "0.2.0" {
		t.Errorf("installed %+v", in)
	}
}
