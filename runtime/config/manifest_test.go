package config_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/perch-edge/perch/runtime/config"
)

func ptr(v int) *int { return &v }

func TestManifestPath(t *testing.T) {
	for _, tc := range []struct{ wasm, want string }{
		{"/m/bme280.wasm", "/m/bme280.manifest.yaml"},
		{"build/modules/window.wasm", "build/modules/window.manifest.yaml"},
		{"/m/noext", "/m/noext.manifest.yaml"},
		{"/m.d/x.y.wasm", "/m.d/x.y.manifest.yaml"},
	} {
		if got := config.ManifestPath(tc.wasm); got != tc.want {
			t.Errorf("ManifestPath(%q) = %q, want %q", tc.wasm, got, tc.want)
		}
	}
}

func TestParseManifest(t *testing.T) {
	m, err := config.ParseManifest("/m/io.manifest.yaml", []byte(manifests["io"]))
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Manifest{
		Name: "io", Version: "0.1.0", ABI: 1, Kind: config.KindDriver, Emits: []string{"reading", "event"},
		Needs: config.Needs{
			GPIO: []config.GPIONeed{{Line: ptr(4), Mode: "in"}, {Mode: "out"}},
			SPI:  []config.SPINeed{{Bus: ptr(0)}},
			UART: []config.UARTNeed{{Port: "/dev/ttyS0"}},
		},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("ParseManifest = %+v, want %+v", m, want)
	}

	m, err = config.ParseManifest("/m/bme.manifest.yaml", []byte(manifests["bme"]))
	if err != nil {
		t.Fatal(err)
	}
	wantI2C := []config.I2CNeed{{Address: 0x76}, {Bus: ptr(2), Address: 0x77}}
	if !reflect.DeepEqual(m.Needs.I2C, wantI2C) || !m.Needs.State {
		t.Errorf("Needs = %+v", m.Needs)
	}
}

func TestParseManifestErrors(t *testing.T) {
	const file = "/m/x.manifest.yaml"
	for _, tc := range []struct {
		name, text string
		want       []string // one per problem
	}{
		{"empty", "", []string{
			`/m/x.manifest.yaml: name: want a lowercase name, got ""`,
			`/m/x.manifest.yaml: version: required`,
			`/m/x.manifest.yaml: abi: this runtime speaks ABI 1, the module wants 0`,
			`/m/x.manifest.yaml: kind: want driver, filter, rule or actuator, got ""`,
		}},
		{"unknown key", manifests["badkey"], []string{
			`/m/x.manifest.yaml:5: emit: field emit not found in type Manifest`,
		}},
		{"abi 2", "name: a\nversion: 1\nabi: 2\nkind: rule\n", []string{
			`/m/x.manifest.yaml:3: abi: this runtime speaks ABI 1, the module wants 2`,
		}},
		{"bad kind and emits", "name: a\nversion: 1\nabi: 1\nkind: sink\nemits:\n  - reading\n  - metrics\n", []string{
			`/m/x.manifest.yaml:4: kind: want driver, filter, rule or actuator, got "sink"`,
			`/m/x.manifest.yaml:7: emits[1]: unknown record kind "metrics"`,
		}},
		{"bad address and mode", "name: a\nversion: 1\nabi: 1\nkind: driver\nneeds:\n  i2c:\n    - address: 0x02\n  gpio:\n    - mode: inout\n", []string{
			`/m/x.manifest.yaml:7: needs.i2c[0].address: 7-bit I2C address out of range: 0x2`,
			`/m/x.manifest.yaml:9: needs.gpio[0].mode: want in or out, got "inout"`,
		}},
		{"unknown need", "name: a\nversion: 1\nabi: 1\nkind: driver\nneeds:\n  can: [{bus: 0}]\n", []string{
			`/m/x.manifest.yaml:6: needs.can: field can not found in type Needs`,
		}},
		{"wrong types", "name: a\nversion: 1\nabi: 1\nkind: driver\nemits: reading\nneeds:\n  state: maybe\n", []string{
			"/m/x.manifest.yaml:5: emits: cannot unmarshal !!str `reading` into []string",
			"/m/x.manifest.yaml:7: needs.state: cannot unmarshal !!str `maybe` into bool",
		}},
		{"syntax", "name: [a\n", []string{
			`/m/x.manifest.yaml:1: did not find expected ',' or ']'`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := config.ParseManifest(file, []byte(tc.text))
			if err == nil {
				t.Fatalf("no error, manifest %+v", m)
			}
			var got []string
			for _, e := range flatten(err) {
				got = append(got, e.Error())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestLoadManifestMissing(t *testing.T) {
	_, err := config.LoadManifest(t.TempDir() + "/none.manifest.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "manifest: open ") {
		t.Errorf("LoadManifest(missing) = %v", err)
	}
}

func TestCheckGrants(t *testing.T) {
	type ge = config.GrantError
	bme := config.Needs{I2C: []config.I2CNeed{{Address: 0x76}, {Bus: ptr(2), Address: 0x77}}}
	for _, tc := range []struct {
		name  string
		grant config.Grants
		needs config.Needs
		want  []ge
	}{
		{"nothing needed, nothing granted", config.Grants{}, config.Needs{}, nil},
		{"i2c any bus", config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x76}, {Bus: 7, Address: 0x76}}}, bme, nil},
		{"i2c bound to a bus", config.Grants{I2C: []config.I2CGrant{{Bus: 2, Address: 0x77}}}, bme, nil},
		{"i2c wrong bus", config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x76}, {Bus: 1, Address: 0x77}}}, bme, []ge{
			{".i2c[1]", "bus 1 address 0x77 is not declared in the module's needs"},
		}},
		{"i2c wrong address", config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x40}}}, bme, []ge{
			{".i2c[0]", "bus 1 address 0x40 is not declared in the module's needs"},
		}},
		{"i2c needed, none granted", config.Grants{}, bme, []ge{
			{"", "the module needs a device (i2c) and none is granted"},
		}},
		{"i2c granted, none needed", config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x76}}}, config.Needs{}, []ge{
			{".i2c[0]", "bus 1 address 0x76 is not declared in the module's needs"},
		}},
		{"spi any bus and cs", config.Grants{SPI: []config.SPIGrant{{Bus: 3, CS: 2}}}, config.Needs{SPI: []config.SPINeed{{}}}, nil},
		{"spi bus and cs", config.Grants{SPI: []config.SPIGrant{{Bus: 0, CS: 1}, {Bus: 0, CS: 0}, {Bus: 1, CS: 1}}},
			config.Needs{SPI: []config.SPINeed{{Bus: ptr(0), CS: ptr(1)}}}, []ge{
				{".spi[1]", "bus 0 chip select 0 is not declared in the module's needs"},
				{".spi[2]", "bus 1 chip select 1 is not declared in the module's needs"},
			}},
		{"spi needed, none granted", config.Grants{}, config.Needs{SPI: []config.SPINeed{{}}}, []ge{
			{"", "the module needs a device (spi) and none is granted"},
		}},
		{"alternatives: spi or i2c, i2c granted", config.Grants{I2C: []config.I2CGrant{{Bus: 1, Address: 0x53}}},
			config.Needs{SPI: []config.SPINeed{{}}, I2C: []config.I2CNeed{{Address: 0x53}}}, nil},
		{"gpio modes", config.Grants{GPIO: []config.GPIOGrant{{Line: 4, Mode: "in"}, {Line: 9, Mode: "out"}, {Line: 4, Mode: "out"}, {Line: 5, Mode: "in"}}},
			config.Needs{GPIO: []config.GPIONeed{{Line: ptr(4), Mode: "in"}, {Mode: "out"}}}, []ge{
				{".gpio[3]", "line 5 (in) is not declared in the module's needs"},
			}},
		{"gpio in does not grant out", config.Grants{GPIO: []config.GPIOGrant{{Line: 4, Mode: "out"}}},
			config.Needs{GPIO: []config.GPIONeed{{Line: ptr(4), Mode: "in"}}}, []ge{
				{".gpio[0]", "line 4 (out) is not declared in the module's needs"},
			}},
		{"gpio bad mode", config.Grants{GPIO: []config.GPIOGrant{{Line: 4, Mode: ""}, {Line: 4, Mode: "both"}}},
			config.Needs{GPIO: []config.GPIONeed{{Mode: "in"}}}, []ge{
				{".gpio[0].mode", `want in or out, got ""`},
				{".gpio[1].mode", `want in or out, got "both"`},
			}},
		{"gpio needed, none granted", config.Grants{}, config.Needs{GPIO: []config.GPIONeed{{Mode: "in"}}}, []ge{
			{"", "the module needs a device (gpio) and none is granted"},
		}},
		{"uart any port", config.Grants{UART: []config.UARTGrant{{Port: "/dev/ttyS0"}, {Port: "/dev/ttyUSB3"}}},
			config.Needs{UART: []config.UARTNeed{{}}}, nil},
		{"uart named port", config.Grants{UART: []config.UARTGrant{{Port: "/dev/ttyS0"}, {Port: "/dev/ttyS1"}}},
			config.Needs{UART: []config.UARTNeed{{Port: "/dev/ttyS0"}}}, []ge{
				{".uart[1]", `port "/dev/ttyS1" is not declared in the module's needs`},
			}},
		{"uart needed, none granted", config.Grants{}, config.Needs{UART: []config.UARTNeed{{}}}, []ge{
			{"", "the module needs a device (uart) and none is granted"},
		}},
		{"state", config.Grants{State: true}, config.Needs{State: true}, nil},
		{"state not declared", config.Grants{State: true}, config.Needs{}, []ge{
			{".state", "state is not declared in the module's needs"},
		}},
		{"state not granted", config.Grants{}, config.Needs{State: true}, []ge{
			{".state", "the module needs state and it is not granted"},
		}},
		{"everything at once", config.Grants{State: true, I2C: []config.I2CGrant{{}}},
			config.Needs{SPI: []config.SPINeed{{}}, GPIO: []config.GPIONeed{{Mode: "out"}}, UART: []config.UARTNeed{{}}}, []ge{
				{".i2c[0]", "bus 0 address 0x0 is not declared in the module's needs"},
				{".state", "state is not declared in the module's needs"},
			}},
		{"devices needed, none granted", config.Grants{},
			config.Needs{SPI: []config.SPINeed{{}}, GPIO: []config.GPIONeed{{Mode: "out"}}, UART: []config.UARTNeed{{}}}, []ge{
				{"", "the module needs a device (spi or gpio or uart) and none is granted"},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := config.CheckGrants(&tc.grant, &tc.needs)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CheckGrants =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
