package main

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// perchModule is the module path of the Perch checkout.
const perchModule = "github.com/perch-edge/perch"

// moduleTemplates holds the files of a new module. Under templates/module, common/ is rendered
// for every kind and filter/, rule/ and driver/ for their kind; partials.tmpl defines the README
// sections they share. NAME in a file name is replaced by the module's name and the .tmpl suffix
// is dropped; .go files are gofmt-ed after rendering. A Go template writes "{ {" where Go has
// "{{" (a composite literal in a composite literal), which would start a template action: gofmt
// joins the braces again.
//
//go:embed templates/module
var moduleTemplates embed.FS

const moduleUsage = `Usage:
  perch module new NAME [--dir DIR] [--kind filter|rule|driver] [--perch PATH]

Scaffolds a Go module in DIR/NAME, laid out like the first-party modules: the logic in NAME.go,
the Wasm main in wasm/, manifest.yaml, sample.yaml, README.md and a test that builds the module
and runs it in the real engine. Outside the Perch checkout it also writes a go.mod that points
at the checkout (--perch, or the one above the working directory).
`

// cmdModule runs "perch module SUBCOMMAND".
func cmdModule(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, moduleUsage)
		return errors.New("perch module: no subcommand")
	}
	switch args[0] {
	case "new":
		return cmdModuleNew(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, moduleUsage)
		return nil
	default:
		fmt.Fprint(stderr, moduleUsage)
		return fmt.Errorf("perch module: unknown subcommand %q", args[0])
	}
}

// cmdModuleNew runs "perch module new". Flags may come before or after NAME.
func cmdModuleNew(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("perch module new", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, moduleUsage, "\nFlags:\n")
		flags.PrintDefaults()
	}
	var o newModuleOptions
	flags.StringVar(&o.Dir, "dir", ".", "create the module in `DIR`/NAME")
	flags.StringVar(&o.Kind, "kind", "filter", "the module's `KIND`: filter, rule or driver")
	flags.StringVar(&o.Perch, "perch", "", "the Perch checkout `PATH` (the folder of its go.mod) that a new go.mod points at; default: the one above the working directory")
	var names []string
	for {
		if err := flags.Parse(args); err != nil {
			return err
		}
		if flags.NArg() == 0 {
			break
		}
		names = append(names, flags.Arg(0))
		args = flags.Args()[1:]
	}
	if len(names) != 1 {
		flags.Usage()
		return fmt.Errorf("perch module new: want one NAME, got %d: %q", len(names), names)
	}
	o.Name = names[0]
	m, err := newModule(o)
	if err != nil {
		return fmt.Errorf("perch module new: %w", err)
	}
	fmt.Fprintf(stdout, "created %s, a %s in package %s (%s):\n", m.Dir, o.Kind, m.Package, m.Import)
	for _, f := range m.Files {
		fmt.Fprintf(stdout, "  %s\n", f)
	}
	fmt.Fprintf(stdout, "\nnext:\n  cd %s && go test ./...\n", shellQuote(m.Dir))
	return nil
}

// newModuleOptions are the arguments of "perch module new".
type newModuleOptions struct {
	Name  string // the module's name: lowercase letters, digits and -, starting with a letter
	Dir   string // the folder to create the module's folder in
	Kind  string // filter, rule or driver
	Perch string // the Perch checkout; "" to look above the working directory
}

// newModuleResult describes a module newModule created.
type newModuleResult struct {
	Dir     string   // Dir/Name
	Package string   // the logic's package name
	Import  string   // its import path
	Files   []string // the files written, relative to Dir, in order
}

// kinds describes what differs between module kinds outside their own templates.
var kinds = map[string]struct {
	Type, Emits, Description string
}{
	"filter": {"Filter", "reading", "Passes readings through with one field scaled (value × factor + offset)."},
	"rule":   {"Rule", "alert", "Raises an alert when a field of the readings goes above a limit, and clears it when it comes back."},
	"driver": {"Driver", "reading", "Emits readings from a counter; a starting point for a device driver."},
}

// moduleData is what the templates see.
type moduleData struct {
	Name        string // the module's name, such as "my-filter"
	Package     string // its Go package name, such as "my_filter"
	Kind        string // filter, rule or driver
	Type        string // the logic's type: Filter, Rule or Driver
	Emits       string // the record kind it emits
	Description string
	Import      string // the import path of the logic package

	// InTree: the module is a package of the Perch module, at Rel from the checkout's root, and
	// builds like the first-party modules. Otherwise it is a module of its own, example.com/NAME,
	// that requires Perch replaced by the checkout at Perch.
	InTree    bool
	Rel       string
	Perch     string
	GoVersion string
	Requires  []string // "path version", the checkout's requirements, for the new go.mod

	Wasm     string // the path the build command writes, relative to where it runs
	BuildDir string // where the build command runs, in words
	Build    string // the build command
	Manifest string // the command that puts the manifest beside the .wasm
}

var moduleNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// reservedNames are package names the generated wasm/main.go cannot import the logic as,
// because it uses the same identifier for something else.
var reservedNames = []string{"main", "init", "abi", "perch", "module", "cfg", "err", "in", "out"}

// predeclared are Go's predeclared identifiers that a module name could spell.
var predeclared = []string{
	"any", "append", "bool", "byte", "cap", "clear", "close", "comparable", "complex",
	"complex64", "complex128", "copy", "delete", "error", "false", "float32", "float64", "imag",
	"int", "int8", "int16", "int32", "int64", "iota", "len", "make", "max", "min", "new", "nil",
	"panic", "print", "println", "real", "recover", "rune", "string", "true", "uint", "uint8",
	"uint16", "uint32", "uint64", "uintptr",
}

// packageName checks a module name and returns its Go package name.
func packageName(name string) (string, error) {
	if !moduleNameRE.MatchString(name) {
		return "", fmt.Errorf("bad NAME %q: want 1 to 63 lowercase letters, digits and -, starting with a letter, such as \"my-filter\"", name)
	}
	pkg := strings.ReplaceAll(name, "-", "_")
	var why string
	switch {
	case token.IsKeyword(pkg):
		why = "is a Go keyword"
	case slices.Contains(predeclared, pkg):
		why = "is a predeclared Go identifier"
	case slices.Contains(reservedNames, pkg):
		why = "is an identifier the generated wasm/main.go uses"
	default:
		return pkg, nil
	}
	return "", fmt.Errorf("bad NAME %q: its package name %s %s; pick another name, such as %q", name, pkg, why, name+"-mod")
}

// newModule creates the module's folder and files. It refuses to touch an existing folder, and
// removes what it created if it fails half way.
func newModule(o newModuleOptions) (newModuleResult, error) {
	pkg, err := packageName(o.Name)
	if err != nil {
		return newModuleResult{}, err
	}
	k, ok := kinds[o.Kind]
	if !ok {
		return newModuleResult{}, fmt.Errorf("bad --kind %q: want filter, rule or driver", o.Kind)
	}
	dir := filepath.Join(o.Dir, o.Name)
	if _, err := os.Lstat(dir); err == nil {
		return newModuleResult{}, fmt.Errorf("%s already exists; pick another NAME or --dir", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return newModuleResult{}, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return newModuleResult{}, err
	}
	d := moduleData{Name: o.Name, Package: pkg, Kind: o.Kind, Type: k.Type, Emits: k.Emits,
		Description: k.Description}
	root, mod, err := enclosingModule(filepath.Dir(abs))
	if err != nil {
		return newModuleResult{}, err
	}
	var goSum []byte
	if mod == perchModule {
		err = d.inTree(root, abs)
	} else {
		goSum, err = d.standalone(dir, o.Perch)
	}
	if err != nil {
		return newModuleResult{}, err
	}

	files, err := renderModule(d)
	if err != nil {
		return newModuleResult{}, err
	}
	if goSum != nil {
		files = append(files, file{"go.sum", goSum})
	}
	if err := writeModule(o.Dir, dir, files); err != nil {
		return newModuleResult{}, err
	}
	res := newModuleResult{Dir: dir, Package: pkg, Import: d.Import}
	for _, f := range files {
		res.Files = append(res.Files, f.name)
	}
	return res, nil
}

// inTree sets up d for a module at abs inside the Perch checkout at root: a package of the Perch
// module, built like the first-party modules.
func (d *moduleData) inTree(root, abs string) error {
	rel, err := filepath.Rel(root, abs)
	if err != nil {
		return err
	}
	d.InTree, d.Rel = true, filepath.ToSlash(rel)
	d.Import = perchModule + "/" + d.Rel
	if !validImportPath(d.Import) {
		return fmt.Errorf("%s is inside the Perch checkout at %s, but %q is not a valid Go import path", abs, root, d.Import)
	}
	d.Wasm = "build/modules/" + d.Name + ".wasm"
	d.BuildDir = "the root of the Perch checkout"
	d.Build = "GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o " + d.Wasm + " ./" + d.Rel + "/wasm"
	d.Manifest = "cp " + d.Rel + "/manifest.yaml build/modules/" + d.Name + ".manifest.yaml"
	return nil
}

// standalone sets up d for a module of its own in dir that requires Perch replaced by the
// checkout (perch, or the one above the working directory when empty), and returns the
// checkout's go.sum (nil if it has none).
func (d *moduleData) standalone(dir, perch string) (goSum []byte, err error) {
	if perch == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		if perch = findPerch(wd); perch == "" {
			return nil, fmt.Errorf("%s is outside the Perch checkout and none was found above %s (a go.mod of module %s): pass --perch PATH", dir, wd, perchModule)
		}
	}
	if perch, err = filepath.Abs(perch); err != nil {
		return nil, err
	}
	gm, err := readGoMod(filepath.Join(perch, "go.mod"))
	if err != nil {
		return nil, fmt.Errorf("--perch %s: %w", perch, err)
	}
	if gm.Module != perchModule {
		return nil, fmt.Errorf("--perch %s: its go.mod is module %q, not %s", perch, gm.Module, perchModule)
	}
	goSum, err = os.ReadFile(filepath.Join(perch, "go.sum"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	d.Perch, d.GoVersion, d.Requires = perch, gm.Go, gm.Require
	if d.GoVersion == "" {
		d.GoVersion = "1.26"
	}
	d.Import = "example.com/" + d.Name
	d.Wasm = "build/" + d.Name + ".wasm"
	d.BuildDir = "this folder"
	d.Build = "GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o " + d.Wasm + " ./wasm"
	d.Manifest = "cp manifest.yaml build/" + d.Name + ".manifest.yaml"
	return goSum, nil
}

// file is one file of a new module: its path (slash-separated, relative to the module's folder)
// and contents.
type file struct {
	name string
	data []byte
}

// renderModule renders the templates for d.Kind, in a fixed order: the logic, its test, the
// Wasm main, the manifest, the sample config, the README, then go.mod unless d.InTree.
func renderModule(d moduleData) ([]file, error) {
	const root = "templates/module"
	t := template.New("").Option("missingkey=error").Funcs(template.FuncMap{"gomodQuote": gomodQuote})
	if _, err := t.ParseFS(moduleTemplates, root+"/partials.tmpl"); err != nil {
		return nil, err
	}
	var files []file
	for _, sub := range []string{d.Kind, "common"} {
		err := fs.WalkDir(moduleTemplates, root+"/"+sub, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			name := strings.TrimSuffix(strings.TrimPrefix(p, root+"/"+sub+"/"), ".tmpl")
			name = strings.ReplaceAll(name, "NAME", d.Name)
			if name == "go.mod" && d.InTree {
				return nil
			}
			src, err := fs.ReadFile(moduleTemplates, p)
			if err != nil {
				return err
			}
			var b bytes.Buffer
			if tp, err := t.New(p).Parse(string(src)); err != nil {
				return err
			} else if err := tp.Execute(&b, d); err != nil {
				return err
			}
			data := b.Bytes()
			if path.Ext(name) == ".go" {
				if data, err = format.Source(data); err != nil {
					return fmt.Errorf("template %s gives Go that does not parse: %w", p, err)
				}
			}
			files = append(files, file{name, data})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	order := []string{d.Name + ".go", d.Name + "_test.go", "wasm/main.go", "manifest.yaml",
		"sample.yaml", "README.md", "go.mod"}
	slices.SortStableFunc(files, func(a, b file) int {
		return slices.Index(order, a.name) - slices.Index(order, b.name)
	})
	return files, nil
}

// writeModule creates dir (which must not exist) inside parent (created if missing) and writes
// the files. If a write fails it removes dir again.
func writeModule(parent, dir string, files []file) (err error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; pick another NAME or --dir", dir)
		}
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// enclosingModule returns the folder and module path of the nearest go.mod at or above dir, or
// empty strings when there is none.
func enclosingModule(dir string) (root, module string, err error) {
	for {
		gm, err := readGoMod(filepath.Join(dir, "go.mod"))
		switch {
		case err == nil:
			return dir, gm.Module, nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "", nil
		}
		dir = parent
	}
}

// findPerch returns the first folder at or above dir whose go.mod is the Perch module, or "".
func findPerch(dir string) string {
	for {
		if gm, err := readGoMod(filepath.Join(dir, "go.mod")); err == nil && gm.Module == perchModule {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// goMod is what the scaffolder needs from a go.mod file.
type goMod struct {
	Module  string
	Go      string   // the go directive's version
	Require []string // "path version", in the file's order
}

// readGoMod reads the module, go and require directives of a go.mod file. It is a line parser
// for files the go command wrote, not a full go.mod parser: it ignores every other directive.
func readGoMod(file string) (goMod, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return goMod{}, err
	}
	var gm goMod
	block := "" // the directive of the ( ... ) block we are in
	for line := range strings.Lines(string(data)) {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case block != "":
			if f[0] == ")" {
				block = ""
			} else if block == "require" && len(f) >= 2 {
				gm.Require = append(gm.Require, unquote(f[0])+" "+f[1])
			}
		case len(f) == 2 && f[1] == "(":
			block = f[0]
		case f[0] == "module" && len(f) == 2:
			gm.Module = unquote(f[1])
		case f[0] == "go" && len(f) == 2:
			gm.Go = f[1]
		case f[0] == "require" && len(f) >= 3:
			gm.Require = append(gm.Require, unquote(f[1])+" "+f[2])
		}
	}
	if gm.Module == "" {
		return goMod{}, fmt.Errorf("%s: no module directive", file)
	}
	return gm, nil
}

func unquote(s string) string { return strings.Trim(s, "`\"") }

// validImportPath reports whether p is made of path elements the go command accepts in an
// import path: letters, digits and -._~+, not starting with a dot.
func validImportPath(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == "" || e[0] == '.' || strings.TrimLeft(e, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+") != "" {
			return false
		}
	}
	return true
}

// gomodQuote quotes a path for a go.mod file when it needs it, as the go command does.
func gomodQuote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"'`()[]{},") || strings.Contains(s, "//") || strings.Contains(s, "/*") {
		return strconv.Quote(s)
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/+=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
