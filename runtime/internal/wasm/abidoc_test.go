package wasm

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero/api"

	"github.com/perch-edge/perch/sdk/abi"
)

// The contract in sdk/ABI.md is checked against what the engine serves and against the
// constants of sdk/abi, so that neither can change without the other.
const (
	abiDoc = "../../../sdk/ABI.md"
	abiPkg = "../../../sdk/abi"
)

// docSig is a host function's signature as ABI.md writes it, such as
// "(bus, addr, reg, buf_ptr, buf_len) -> errno".
type docSig struct {
	params []string // "bus", or "now_ns i64" when a type is written
	result string   // "errno" or a value type
	line   int
}

var (
	// A heading that opens an import module's section: ### `perch:hal/v1`.
	moduleHeadingRE = regexp.MustCompile("^###\\s+`([^`]+)`\\s*$")
	// A signature in running text: `emit(ptr, len) -> errno`.
	inlineSigRE = regexp.MustCompile("`([a-z0-9_]+)\\(([^)]*)\\)\\s*->\\s*([a-z0-9_]+)`")
	// A signature in a table row: | `i2c_read` | `(bus, addr, reg, buf_ptr, buf_len) -> errno` |.
	tableSigRE = regexp.MustCompile("^\\|\\s*`([a-z0-9_]+)`\\s*\\|\\s*`\\(([^)]*)\\)\\s*->\\s*([a-z0-9_]+)`\\s*\\|")
	// A row of the errno table: | 1 | `EPERM` | ... |.
	errnoRowRE = regexp.MustCompile("^\\|\\s*(\\d+)\\s*\\|\\s*`([A-Z]+)`\\s*\\|")
)

// parseImports returns the signatures ABI.md gives under each import module's heading, by
// module and function name, and a problem for each function listed twice.
func parseImports(doc string) (map[string]map[string]docSig, []string) {
	out := map[string]map[string]docSig{}
	var problems []string
	module := ""
	for i, line := range strings.Split(doc, "\n") {
		if m := moduleHeadingRE.FindStringSubmatch(line); m != nil {
			module = m[1]
			if out[module] == nil {
				out[module] = map[string]docSig{}
			}
			continue
		}
		if strings.HasPrefix(line, "#") {
			module = "" // any other heading ends the section
			continue
		}
		if module == "" {
			continue
		}
		var sigs [][]string
		if m := tableSigRE.FindStringSubmatch(line); m != nil {
			sigs = [][]string{m}
		} else {
			sigs = inlineSigRE.FindAllStringSubmatch(line, -1)
		}
		for _, m := range sigs {
			name := m[1]
			var params []string
			if p := strings.TrimSpace(m[2]); p != "" {
				for _, s := range strings.Split(p, ",") {
					params = append(params, strings.TrimSpace(s))
				}
			}
			if old, dup := out[module][name]; dup {
				problems = append(problems, fmt.Sprintf("ABI.md:%d: %s %s is listed again (first on line %d)", i+1, module, name, old.line))
				continue
			}
			out[module][name] = docSig{params: params, result: m[3], line: i + 1}
		}
	}
	return out, problems
}

// checkHostDoc returns a problem for each host function that ABI.md does not list under its
// module with the same parameters and result, and for each function ABI.md lists that is not
// served.
func checkHostDoc(doc string, fns []hostFunc) []string {
	sigs, problems := parseImports(doc)
	served := map[string]bool{}
	for _, f := range fns {
		served[f.module+" "+f.name] = true
		want := fmt.Sprintf("%s(%s) -> %s", f.name, typeList(f.params), resultName(f.result))
		mod, ok := sigs[f.module]
		if !ok {
			problems = append(problems, fmt.Sprintf("ABI.md has no section \"### `%s`\" for %s", f.module, want))
			continue
		}
		s, ok := mod[f.name]
		if !ok {
			problems = append(problems, fmt.Sprintf("ABI.md does not list %s %s", f.module, want))
			continue
		}
		if len(s.params) != len(f.params) {
			problems = append(problems, fmt.Sprintf("ABI.md:%d: %s %s has %d parameters (%s), the host takes %d: %s",
				s.line, f.module, f.name, len(s.params), strings.Join(s.params, ", "), len(f.params), want))
			continue
		}
		for j, p := range s.params {
			// Parameters are i32 unless the doc marks them ("ts i64").
			typ := "i32"
			if fields := strings.Fields(p); len(fields) == 2 {
				typ = fields[1]
			}
			if typ != api.ValueTypeName(f.params[j]) {
				problems = append(problems, fmt.Sprintf("ABI.md:%d: %s %s parameter %d (%s) is %s, the host takes %s",
					s.line, f.module, f.name, j, p, typ, api.ValueTypeName(f.params[j])))
			}
		}
		if s.result != resultName(f.result) {
			problems = append(problems, fmt.Sprintf("ABI.md:%d: %s %s returns %s, the host returns %s",
				s.line, f.module, f.name, s.result, resultName(f.result)))
		}
	}
	for module, fs := range sigs {
		for name, s := range fs {
			if !served[module+" "+name] {
				problems = append(problems, fmt.Sprintf("ABI.md:%d: %s %s is documented but the host does not serve it", s.line, module, name))
			}
		}
	}
	return problems
}

func typeList(ts []api.ValueType) string {
	var names []string
	for _, t := range ts {
		names = append(names, api.ValueTypeName(t))
	}
	return strings.Join(names, ", ")
}

// resultName is how ABI.md writes a result: an i32 result is always an errno.
func resultName(ts []api.ValueType) string {
	switch {
	case len(ts) == 0:
		return "()"
	case len(ts) == 1 && ts[0] == api.ValueTypeI32:
		return "errno"
	default:
		return typeList(ts)
	}
}

func readABIDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(abiDoc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestABIDocHostFunctions(t *testing.T) {
	fns := hostFuncs()
	if len(fns) == 0 {
		t.Fatal("no host functions")
	}
	for _, p := range checkHostDoc(readABIDoc(t), fns) {
		t.Error(p)
	}
}

// TestABIDocCheckFails makes sure that the check above catches what it is for.
func TestABIDocCheckFails(t *testing.T) {
	doc := readABIDoc(t)
	i32 := []api.ValueType{api.ValueTypeI32}
	for _, tc := range []struct {
		name string
		fns  func([]hostFunc) []hostFunc
		doc  func(string) string
		want string
	}{
		{"undocumented function",
			func(fns []hostFunc) []hostFunc {
				return append(fns, hostFunc{module: abi.ModuleHAL, name: "i2c_scan", params: []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, result: i32})
			}, nil,
			"ABI.md does not list perch:hal/v1 i2c_scan(i32, i32) -> errno"},
		{"undocumented module",
			func(fns []hostFunc) []hostFunc {
				return append(fns, hostFunc{module: "perch:net/v1", name: "dial", result: i32})
			}, nil,
			"ABI.md has no section \"### `perch:net/v1`\" for dial() -> errno"},
		{"parameter added",
			func(fns []hostFunc) []hostFunc {
				for i := range fns {
					if fns[i].name == abi.FuncGPIOWrite {
						fns[i].params = append(fns[i].params, api.ValueTypeI32)
					}
				}
				return fns
			}, nil,
			"perch:hal/v1 gpio_write has 2 parameters (line, level), the host takes 3: gpio_write(i32, i32, i32) -> errno"},
		{"result changed",
			func(fns []hostFunc) []hostFunc {
				for i := range fns {
					if fns[i].name == abi.FuncNow {
						fns[i].result = i32
					}
				}
				return fns
			}, nil,
			"perch:clock/v1 now_ns returns i64, the host returns errno"},
		{"parameter type",
			nil, func(doc string) string {
				return strings.Replace(doc, "`emit(ptr, len) -> errno`", "`emit(ptr i64, len) -> errno`", 1)
			},
			"perch:io/v1 emit parameter 0 (ptr i64) is i64, the host takes i32"},
		{"documented but not served",
			func(fns []hostFunc) []hostFunc {
				var out []hostFunc
				for _, f := range fns {
					if f.name != abi.FuncUARTWrite {
						out = append(out, f)
					}
				}
				return out
			}, nil,
			"perch:hal/v1 uart_write is documented but the host does not serve it"},
		{"listed twice",
			nil, func(doc string) string {
				return strings.Replace(doc, "`now_ns() -> i64`", "`now_ns() -> i64` or `now_ns() -> i64`", 1)
			},
			"perch:clock/v1 now_ns is listed again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fns := hostFuncs()
			if tc.fns != nil {
				fns = tc.fns(fns)
			}
			d := doc
			if tc.doc != nil {
				d = tc.doc(doc)
				if d == doc {
					t.Fatal("the doc edit did not apply; update the test")
				}
			}
			problems := checkHostDoc(d, fns)
			found := false
			for _, p := range problems {
				found = found || strings.Contains(p, tc.want)
			}
			if !found {
				t.Errorf("problems %q\ndo not include %q", problems, tc.want)
			}
		})
	}
}

// abiConsts returns the constants declared in sdk/abi (outside tests) with their literal values,
// by name, and the names of those declared with type Errno.
func abiConsts(t *testing.T) (values map[string]string, errnos []string) {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(abiPkg, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	values = map[string]string{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				isErrno := false
				if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "Errno" {
					isErrno = true
				}
				for i, name := range vs.Names {
					if isErrno {
						errnos = append(errnos, name.Name)
					}
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
							values[name.Name] = lit.Value
						}
					}
				}
			}
		}
	}
	return values, errnos
}

func TestABIDocErrnos(t *testing.T) {
	doc := readABIDoc(t)
	table := map[string]int{}
	for _, line := range strings.Split(doc, "\n") {
		if m := errnoRowRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			if _, dup := table[m[2]]; dup {
				t.Errorf("ABI.md lists errno %s twice", m[2])
			}
			table[m[2]] = n
		}
	}
	values, errnos := abiConsts(t)
	if len(errnos) < 12 {
		t.Fatalf("found %d Errno constants in %s: %v", len(errnos), abiPkg, errnos)
	}
	seen := map[string]bool{}
	for _, name := range errnos {
		seen[name] = true
		lit, ok := values[name]
		if !ok {
			t.Errorf("abi.%s: want a literal value", name)
			continue
		}
		n, err := strconv.ParseUint(lit, 0, 32)
		if err != nil {
			t.Errorf("abi.%s = %s: %v", name, lit, err)
			continue
		}
		if got := abi.Errno(n).String(); got != name {
			t.Errorf("abi.Errno(%d).String() = %q, want %q", n, got, name)
		}
		doc, ok := table[name]
		switch {
		case !ok:
			t.Errorf("ABI.md's errno table does not list %s (%d)", name, n)
		case uint64(doc) != n:
			t.Errorf("ABI.md's errno table gives %s as %d, sdk/abi as %d", name, doc, n)
		}
	}
	for name := range table {
		if !seen[name] {
			t.Errorf("ABI.md's errno table lists %s, which sdk/abi does not declare", name)
		}
	}
}

func TestABIDocExports(t *testing.T) {
	doc := readABIDoc(t)
	values, _ := abiConsts(t)
	n := 0
	for name, lit := range values {
		if !strings.HasPrefix(name, "Export") {
			continue
		}
		n++
		v, err := strconv.Unquote(lit)
		if err != nil {
			t.Errorf("abi.%s = %s: want a string", name, lit)
			continue
		}
		if !regexp.MustCompile("(?m)^\\|\\s*`" + regexp.QuoteMeta(v) + "`\\s*\\|").MatchString(doc) {
			t.Errorf("ABI.md's exports table has no row for abi.%s (%q)", name, v)
		}
	}
	if n < 6 {
		t.Errorf("found %d Export constants in %s", n, abiPkg)
	}
	// The ABI version the guest must return is the one the doc gives.
	if !strings.Contains(doc, "# Perch module ABI, version "+strconv.Itoa(abi.Version)) {
		t.Errorf("ABI.md's title does not give version %d", abi.Version)
	}
}

// TestABIConstsServed checks that each import module and host function name sdk/abi declares is
// one the engine serves, so that a guest built against sdk/abi links.
func TestABIConstsServed(t *testing.T) {
	values, _ := abiConsts(t)
	modules, funcs := map[string]bool{}, map[string]bool{}
	for _, f := range hostFuncs() {
		modules[f.module] = true
		funcs[f.name] = true
	}
	for name, lit := range values {
		v, err := strconv.Unquote(lit)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "Module") && !modules[v]:
			t.Errorf("abi.%s = %q is not served", name, v)
		case strings.HasPrefix(name, "Func") && !funcs[v]:
			t.Errorf("abi.%s = %q is not served", name, v)
		}
	}
}
