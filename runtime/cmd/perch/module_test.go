package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/config"
)

// fakePerch writes a go.mod of the Perch module (with two requirements) and a go.sum into a new
// temporary folder and returns it: a checkout as far as "perch module new" can tell.
func fakePerch(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "a checkout") // a space: go.mod must quote the path
	gomod := "module github.com/perch-edge/perch\n\ngo 1.26\n\nrequire (\n" +
		"\tgithub.com/tetratelabs/wazero v1.12.0 // indirect\n\tgo.yaml.in/yaml/v3 v3.0.6\n)\n\n" +
		"replace (\n\texample.com/x => ../x\n)\n"
	writeFile(t, filepath.Join(root, "go.mod"), gomod)
	writeFile(t, filepath.Join(root, "go.sum"), "github.com/tetratelabs/wazero v1.12.0 h1:x=\n")
	return root
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestModuleNewRefuses(t *testing.T) {
	perch := fakePerch(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "taken", "x.go"), "package taken\n")
	writeFile(t, filepath.Join(dir, "afile"), "")
	for _, tc := range []struct {
		name string
		args []string
		want string // a part of the error
	}{
		{"no name", []string{}, "want one NAME, got 0"},
		{"two names", []string{"a", "b"}, "want one NAME, got 2"},
		{"empty name", []string{""}, `bad NAME ""`},
		{"leading digit", []string{"1wire"}, `bad NAME "1wire": want 1 to 63 lowercase letters`},
		{"leading dash", []string{"-x"}, "flag provided but not defined"},
		{"uppercase", []string{"Scale"}, `bad NAME "Scale"`},
		{"underscore", []string{"my_scale"}, `bad NAME "my_scale"`},
		{"space", []string{"my scale"}, `bad NAME "my scale"`},
		{"dot", []string{"../x"}, `bad NAME "../x"`},
		{"too long", []string{strings.Repeat("a", 64)}, "want 1 to 63"},
		{"keyword", []string{"func"}, "package name func is a Go keyword; pick another name, such as \"func-mod\""},
		{"predeclared", []string{"string"}, "is a predeclared Go identifier"},
		{"clashes with main.go", []string{"abi"}, "is an identifier the generated wasm/main.go uses"},
		{"dashes become underscores", []string{"e-r-r"}, ""}, // package e_r_r, which is fine
		{"bad kind", []string{"x", "--kind", "sensor"}, `bad --kind "sensor": want filter, rule or driver`},
		{"kind is lowercase", []string{"x", "--kind", "Filter"}, `bad --kind "Filter"`},
		{"empty kind", []string{"x", "--kind="}, `bad --kind ""`},
		{"existing folder", []string{"taken"}, filepath.Join(dir, "taken") + " already exists"},
		{"existing file", []string{"afile"}, filepath.Join(dir, "afile") + " already exists"},
		{"perch without go.mod", []string{"x", "--perch", dir}, "--perch " + dir + ": open"},
		{"perch of another module", []string{"x", "--perch", filepath.Join(dir, "other")}, `its go.mod is module "example.com/other"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "perch of another module" {
				writeFile(t, filepath.Join(dir, "other", "go.mod"), "module example.com/other\n")
			}
			args := append([]string{"new"}, tc.args...)
			if !slices.Contains(args, "--perch") {
				args = append(args, "--perch", perch)
			}
			args = append(args, "--dir", dir)
			var stdout, stderr bytes.Buffer
			err := cmdModule(args, &stdout, &stderr)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("perch module %q: %v", args, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("perch module %q: error %v, want one containing %q", args, err, tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("wrote to stdout on an error: %q", stdout.String())
			}
		})
	}
	// Only the folders made above, and the one good name, are there: no half-made module.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"afile", "e-r-r", "other", "taken"}; !slices.Equal(names, want) {
		t.Errorf("the folder holds %q, want %q", names, want)
	}
}

func TestModuleNewWithoutCheckout(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	err := cmdModule([]string{"new", "x"}, new(bytes.Buffer), new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "pass --perch PATH") {
		t.Fatalf("error %v, want one saying to pass --perch", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the folder was created: %v", err)
	}
}

func TestModuleNewFindsCheckout(t *testing.T) {
	perch := fakePerch(t)
	wd := filepath.Join(perch, "some", "where")
	writeFile(t, filepath.Join(wd, "go.mod"), "module example.com/where\n") // passed on the way up
	t.Chdir(wd)
	dir := t.TempDir()
	if err := cmdModule([]string{"new", "x", "--dir", dir}, new(bytes.Buffer), new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "x", "go.mod")); !strings.Contains(got, "replace github.com/perch-edge/perch => \""+perch+"\"\n") {
		t.Errorf("go.mod does not replace Perch with %s:\n%s", perch, got)
	}
}

// TestModuleNewStandalone checks the files of each kind outside the checkout: names, go.mod,
// go.sum, and that the manifest and the sample config pass the runtime's config parser.
func TestModuleNewStandalone(t *testing.T) {
	perch := fakePerch(t)
	for _, kind := range []string{"filter", "rule", "driver"} {
		t.Run(kind, func(t *testing.T) {
			parent := filepath.Join(t.TempDir(), "new", "parent") // created on the way
			name := "my-" + kind
			var stdout bytes.Buffer
			// Flags before and after the name.
			if err := cmdModule([]string{"new", "--kind", kind, name, "--dir", parent, "--perch", perch}, &stdout, new(bytes.Buffer)); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(parent, name)
			files := []string{name + ".go", name + "_test.go", "wasm/main.go", "manifest.yaml", "sample.yaml", "README.md", "go.mod", "go.sum"}
			want := "created " + dir + ", a " + kind + " in package my_" + kind + " (example.com/" + name + "):\n  " +
				strings.Join(files, "\n  ") + "\n\nnext:\n  cd " + dir + " && go test ./...\n"
			if stdout.String() != want {
				t.Errorf("printed\n%s\nwant\n%s", stdout.String(), want)
			}
			var found []string
			filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					found = append(found, filepath.ToSlash(rel))
				}
				return err
			})
			slices.Sort(found)
			slices.Sort(files)
			if !slices.Equal(found, files) {
				t.Errorf("files %q, want %q", found, files)
			}

			wantMod := "module example.com/" + name + "\n\ngo 1.26\n\nrequire github.com/perch-edge/perch v0.0.0\n\n" +
				"require (\n\tgithub.com/tetratelabs/wazero v1.12.0 // indirect\n\tgo.yaml.in/yaml/v3 v3.0.6 // indirect\n)\n\n" +
				"// The Perch checkout this module was created from; see README.md.\n" +
				"replace github.com/perch-edge/perch => \"" + perch + "\"\n"
			if got := readFile(t, filepath.Join(dir, "go.mod")); got != wantMod {
				t.Errorf("go.mod:\n%s\nwant\n%s", got, wantMod)
			}
			if got, want := readFile(t, filepath.Join(dir, "go.sum")), readFile(t, filepath.Join(perch, "go.sum")); got != want {
				t.Errorf("go.sum is not the checkout's:\n%s", got)
			}
			main := readFile(t, filepath.Join(dir, "wasm", "main.go"))
			for _, s := range []string{"//go:build wasip1\n", "\tmy_" + kind + ` "example.com/` + name + `"`,
				"\n//\tGOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o build/" + name + ".wasm ./wasm\n",
				"perch.Config(&cfg)", "perch.Register(", "\nfunc main() {}\n"} {
				if !strings.Contains(main, s) {
					t.Errorf("wasm/main.go lacks %q:\n%s", s, main)
				}
			}
			if readme := readFile(t, filepath.Join(dir, "README.md")); !strings.Contains(readme, "go mod tidy") {
				t.Errorf("README.md does not mention go mod tidy")
			}
			checkManifestAndSample(t, dir, name, kind, "build/"+name+".wasm")
		})
	}
}

// TestModuleNewInTree scaffolds into a Perch checkout: no go.mod, and the logic is imported by
// its path in the Perch module.
func TestModuleNewInTree(t *testing.T) {
	perch := fakePerch(t)
	t.Chdir(perch)
	var stdout bytes.Buffer
	if err := cmdModule([]string{"new", "scale", "--dir", "modules/filters"}, &stdout, new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(perch, "modules", "filters", "scale")
	for _, f := range []string{"go.mod", "go.sum"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s written inside the checkout: %v", f, err)
		}
	}
	main := readFile(t, filepath.Join(dir, "wasm", "main.go"))
	for _, s := range []string{"\t\"github.com/perch-edge/perch/modules/filters/scale\"\n",
		"Build it from the root of the Perch checkout with\n",
		"-o build/modules/scale.wasm ./modules/filters/scale/wasm\n",
		"//\tcp modules/filters/scale/manifest.yaml build/modules/scale.manifest.yaml\n"} {
		if !strings.Contains(main, s) {
			t.Errorf("wasm/main.go lacks %q:\n%s", s, main)
		}
	}
	if !strings.Contains(stdout.String(), "cd modules/filters/scale && go test ./...") {
		t.Errorf("printed:\n%s", stdout.String())
	}
	if readme := readFile(t, filepath.Join(dir, "README.md")); !strings.Contains(readme, "`scale:modules/filters/scale` to `GO_GUESTS`") {
		t.Errorf("README.md does not say how to add the module to the Makefile:\n%s", readme)
	}
	checkManifestAndSample(t, dir, "scale", "filter", "build/modules/scale.wasm")
}

// checkManifestAndSample checks the manifest.yaml of the module in dir and that its sample.yaml,
// in a pipeline config, passes the runtime's config parser, with the manifest beside the sample's
// wasm path (and an "env" driver for a filter or rule to read).
func checkManifestAndSample(t *testing.T, dir, name, kind, wasm string) {
	t.Helper()
	mpath := filepath.Join(dir, "manifest.yaml")
	m, err := config.LoadManifest(mpath)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != name || m.Kind != kind || m.Version != "0.1.0" || m.ABI != 1 || len(m.Emits) != 1 {
		t.Errorf("manifest: %+v", m)
	}
	cfgDir := t.TempDir()
	writeFile(t, config.ManifestPath(filepath.Join(cfgDir, wasm)), readFile(t, mpath))
	doc := "site: test\ndevice: test\n" + readFile(t, filepath.Join(dir, "sample.yaml"))
	if kind != "driver" {
		writeFile(t, filepath.Join(cfgDir, "env.manifest.yaml"), "name: env\nversion: 1.0.0\nabi: 1\nkind: driver\nemits: [reading]\n")
		doc += "  - name: env\n    wasm: env.wasm\n    poll: 1s\n"
	}
	if _, err := config.Parse(filepath.Join(cfgDir, "perch.yaml"), []byte(doc)); err != nil {
		t.Errorf("sample.yaml does not validate: %v\n%s", err, doc)
	}
}

func TestReadGoMod(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "go.mod")
	writeFile(t, p, "// comment\nmodule \"example.com/m\" // the module\n\ngo 1.26.1\n\ntoolchain go1.26.2\n\n"+
		"require example.com/a v1.0.0\nrequire (\n\texample.com/b v0.1.0 // indirect\n\n\texample.com/c v2.0.0+incompatible\n)\n"+
		"exclude (\n\texample.com/d v1.0.0\n)\nreplace example.com/e => ../e\ntool (\n\tgo v1\n)\n")
	gm, err := readGoMod(p)
	if err != nil {
		t.Fatal(err)
	}
	want := goMod{Module: "example.com/m", Go: "1.26.1",
		Require: []string{"example.com/a v1.0.0", "example.com/b v0.1.0", "example.com/c v2.0.0+incompatible"}}
	if gm.Module != want.Module || gm.Go != want.Go || !slices.Equal(gm.Require, want.Require) {
		t.Errorf("got %+v, want %+v", gm, want)
	}
	writeFile(t, p, "go 1.26\n")
	if _, err := readGoMod(p); err == nil || !strings.Contains(err.Error(), "no module directive") {
		t.Errorf("a go.mod without a module directive: %v", err)
	}
}

// TestIntegrationModuleNew scaffolds a module of each kind against this checkout and runs go
// test (which builds the Wasm module and runs it in the engine) and go vet in it: the modules
// build and pass their tests as generated. The go commands share the inherited build and
// module caches.
func TestIntegrationModuleNew(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command on generated modules")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command:", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	perch := findPerch(wd)
	if perch == "" {
		t.Fatalf("no go.mod of %s above %s", perchModule, wd)
	}
	for _, kind := range []string{"filter", "rule", "driver"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			name := "my-" + kind
			if err := cmdModule([]string{"new", name, "--kind", kind, "--dir", parent, "--perch", perch}, new(bytes.Buffer), new(bytes.Buffer)); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"test", "-count=1", "-v", "./..."},
				{"vet", "./..."},
				// The module's code builds for wasip1 (its tests run on the host: they load the
				// module into the runtime, which links ONNX Runtime through cgo).
				{"GOOS=wasip1", "GOARCH=wasm", "build", "./..."},
			} {
				env := os.Environ()
				for len(args) > 0 && strings.Contains(args[0], "=") {
					env, args = append(env, args[0]), args[1:]
				}
				cmd := exec.CommandContext(t.Context(), "go", args...)
				cmd.Dir, cmd.Env = filepath.Join(parent, name), env
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				if args[0] == "test" && !strings.Contains(string(out), "--- PASS: TestIntegrationWasm") {
					t.Errorf("go test did not run the module's Wasm test:\n%s", out)
				}
			}
		})
	}
}
