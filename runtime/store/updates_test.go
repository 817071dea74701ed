package store

import (
	"context"
	"testing"
)

// TestJournalAndInstalled: steps are journaled in order, the last step of each target is what
// LastSteps and the update_status view show, and Install commits the row and its step together.
func TestJournalAndInstalled(t *testing.T) {
	ctx := context.Background()
	st := openTest(t, Options{Path: t.TempDir() + "/perch.db"})
	step := UpdateStep{Target: "modules/f", Kind: "module", Version: "1.1", Release: 7, Digest: "sha256:ab"}
	for _, s := range []string{"found", "downloaded", "staged", "swapped"} {
		step.Step = s
		if err := st.Journal(ctx, step); err != nil {
			t.Fatal(err)
		}
	}
	in := Installed{Target: "modules/f", Kind: "module", Name: "f", Version: "1.1", Release: 7, Digest: "sha256:ab",
		Path: "/x/f.wasm", SHA256: "cd", Manifest: "name: f\n"}
	if err := st.Install(ctx, in, "healthy for 1s"); err != nil {
		t.Fatal(err)
	}
	last, err := st.LastSteps(ctx)
	if err != nil || len(last) != 1 || last[0].Step != "committed" || last[0].Release != 7 || last[0].Detail != "healthy for 1s" {
		t.Fatalf("last steps %+v, %v", last, err)
	}
	all, err := st.InstalledAll(ctx)
	if err != nil || len(all) != 1 || all[0].Name != "f" || all[0].Manifest != "name: f\n" || all[0].InstalledNS == 0 {
		t.Fatalf("installed %+v, %v", all, err)
	}
	var stepView string
	if err := st.DB().QueryRow(`SELECT step FROM update_status WHERE target = 'modules/f'`).Scan(&stepView); err != nil || stepView != "committed" {
		t.Errorf("update_status: %q, %v", stepView, err)
	}
	if n := queryInt(t, st.DB(), `SELECT count(*) FROM update_journal`); n != 5 {
		t.Errorf("%d journal rows, want 5", n)
	}
}
