package config

import (
	"fmt"
	"slices"
	"sort"

	"github.com/perch-edge/perch/models/card"
)

// Model is a model node: an ONNX anomaly model, described by its card (models/card), that scores
// the records of its inputs. A module lists the model's name in its inputs to take its scores
// and alerts, and a module granted the model (grants: {models: [name]}) may score rows of its own
// through perch:infer/v1.
//
//	engine:
//	  onnxruntime: /opt/ort/libonnxruntime.so.1   # default: $PERCH_ORT_LIB, then `make ort`'s cache
//	models:
//	  - name: env-ae
//	    card: models/env-ae.card.yaml   # NAME.card.yaml, with NAME.onnx beside it
//	    inputs: [env]                   # modules, sources or models
//	    series: environment             # only records of this series; default: any
//	    fields: {temperature: temperature_c}  # card feature -> record field; default: the same name
//	    batch: 64                       # rows per ONNX Runtime run at most
//	    intra_op_threads: 1
//	    severity: warning               # the alerts' severity tag
//	    record: true                    # write scores and alerts to the recorder
//
// A reading or summary of the series that has a field for every feature is one sample. Each
// (source, series) is its own stream, with its own window (card.Feeder) and alarm (card.Alarm).
type Model struct {
	Name   string   `yaml:"name"`   // unique among modules, sources and models
	Card   string   `yaml:"card"`   // path of NAME.card.yaml, relative to the config file; required
	Inputs []string `yaml:"inputs"` // upstream modules, sources or models
	Series string   `yaml:"series"` // only records of this series; empty: any series
	// Fields maps a card feature to the record field that holds it; a feature not listed is read
	// from the field of its own name.
	Fields         map[string]string `yaml:"fields"`
	Batch          int               `yaml:"batch"`            // rows per run at most; default 64
	IntraOpThreads int               `yaml:"intra_op_threads"` // ONNX Runtime intra-op threads; default 1
	Severity       string            `yaml:"severity"`         // the alerts' severity tag; default warning
	Record         *bool             `yaml:"record"`           // write outputs to the recorder; default true

	// Loaded is the card, read and checked (digest included) by Load.
	Loaded *card.Card `yaml:"-"`
	// FieldNames are the record fields of the card's features, in the card's feature order.
	FieldNames []string `yaml:"-"`
}

// Model defaults.
const (
	DefaultModelBatch    = 64
	MaxModelBatch        = 4096
	DefaultModelSeverity = "warning"
)

// Recorded reports whether the model's outputs go to the recorder.
func (m *Model) Recorded() bool { return m.Record == nil || *m.Record }

// ModelPath is the path of the model's .onnx file; "" before the card is loaded.
func (m *Model) ModelPath() string {
	if m.Loaded == nil {
		return ""
	}
	return m.Loaded.ModelPath(m.Card)
}

// Model returns the model named name, or nil.
func (c *Config) Model(name string) *Model {
	for i := range c.Models {
		if c.Models[i].Name == name {
			return &c.Models[i]
		}
	}
	return nil
}

// models validates the models section and fills in its defaults; names holds the names of the
// modules and sources (a model may share neither).
func (p *parser) models(c *Config) {
	c.Engine.ONNXRuntime = p.abs(c.Engine.ONNXRuntime)
	taken := map[string]string{}
	for _, m := range c.Modules {
		taken[m.Name] = "module"
	}
	for _, s := range c.Sources {
		taken[s.Name] = "source"
	}
	seen := map[string]bool{}
	for i := range c.Models {
		m := &c.Models[i]
		at := fmt.Sprintf("models[%d]", i)
		switch {
		case !nameRE.MatchString(m.Name):
			p.errf(at+".name", "want a lowercase name of letters, digits, - and _, got %q", m.Name)
		case seen[m.Name]:
			p.errf(at+".name", "duplicate model %q", m.Name)
		case taken[m.Name] != "":
			p.errf(at+".name", "%q is also a %s's name", m.Name, taken[m.Name])
		}
		seen[m.Name] = true
		for j, in := range m.Inputs {
			switch {
			case in == m.Name:
				p.errf(fmt.Sprintf("%s.inputs[%d]", at, j), "model %q reads its own output", in)
			case taken[in] == "" && c.Model(in) == nil:
				p.errf(fmt.Sprintf("%s.inputs[%d]", at, j), "unknown module, source or model %q", in)
			}
		}
		if m.Batch == 0 {
			m.Batch = DefaultModelBatch
		} else if m.Batch < 0 || m.Batch > MaxModelBatch {
			p.errf(at+".batch", "want 1 to %d, got %d", MaxModelBatch, m.Batch)
		}
		if m.IntraOpThreads == 0 {
			m.IntraOpThreads = 1
		} else if m.IntraOpThreads < 0 || m.IntraOpThreads > 64 {
			p.errf(at+".intra_op_threads", "want 1 to 64, got %d", m.IntraOpThreads)
		}
		if m.Severity == "" {
			m.Severity = DefaultModelSeverity
		}
		if m.Card == "" {
			p.errf(at+".card", "required: the path of NAME.card.yaml")
			continue
		}
		m.Card = p.abs(m.Card)
		cd, err := card.Load(m.Card)
		if err != nil {
			each(err, func(err error) { p.errf(at+".card", "%v", err) })
			continue
		}
		m.Loaded = cd
		// Fields: every key a feature; every feature resolved to one field.
		keys := make([]string, 0, len(m.Fields))
		for k := range m.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !slices.Contains(cd.Features, k) {
				p.errf(at+".fields."+k, "%q is not a feature of the card (features: %v)", k, cd.Features)
			} else if m.Fields[k] == "" || len(m.Fields[k]) > 255 {
				p.errf(at+".fields."+k, "want a record field name of 1 to 255 bytes, got %q", m.Fields[k])
			}
		}
		m.FieldNames = make([]string, len(cd.Features))
		used := map[string]string{}
		for j, f := range cd.Features {
			name := f
			if v, ok := m.Fields[f]; ok && v != "" {
				name = v
			}
			if len(name) > 255 {
				p.errf(at+".fields", "feature %q: record field names are at most 255 bytes", f)
			}
			if other, dup := used[name]; dup {
				p.errf(at+".fields", "features %q and %q both read field %q", other, f, name)
			}
			used[name] = f
			m.FieldNames[j] = name
		}
	}
}

// modelGrants checks the models each module is granted: each must be a model of the config.
func (p *parser) modelGrants(c *Config) {
	for i := range c.Modules {
		for j, name := range c.Modules[i].Grants.Models {
			if c.Model(name) == nil {
				p.errf(fmt.Sprintf("modules[%d].grants.models[%d]", i, j), "unknown model %q", name)
			}
		}
	}
}

// graphCycle returns the nodes of one cycle in the graph of modules and models (each listed with
// its inputs; sources have none), and the field of the node where it starts, or nil.
func graphCycle(c *Config) ([]string, string) {
	names := make([]string, 0, len(c.Modules)+len(c.Models))
	inputs := make([][]string, 0, cap(names))
	fields := make([]string, 0, cap(names))
	for i, m := range c.Modules {
		names, inputs, fields = append(names, m.Name), append(inputs, m.Inputs), append(fields, fmt.Sprintf("modules[%d].inputs", i))
	}
	for i, m := range c.Models {
		names, inputs, fields = append(names, m.Name), append(inputs, m.Inputs), append(fields, fmt.Sprintf("models[%d].inputs", i))
	}
	idx := map[string]int{}
	for i, n := range names {
		idx[n] = i // the last of a duplicate name, as for the modules' inputs
	}
	cyc := cycle(names, inputs, idx)
	if cyc == nil {
		return nil, ""
	}
	return cyc, fields[idx[cyc[0]]]
}
