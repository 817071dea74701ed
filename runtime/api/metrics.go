package api

import (
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/store"
)

// WriteMetrics writes m and the outbox statistics ob (nil: left out) in the Prometheus text
// format, version 0.0.4.
func WriteMetrics(w io.Writer, m runtime.Metrics, ob *store.OutboxStats) error {
	p := &promWriter{w: w}
	p.family("perch_up", "gauge", "1 while the runtime is up.")
	p.sample("perch_up", nil, 1)
	p.family("perch_ready", "gauge", "1 once the modules and sources have started.")
	p.sample("perch_ready", nil, b2f(m.Ready))

	mods := func(name, typ, help string, v func(runtime.ModuleMetrics) float64) {
		p.family(name, typ, help)
		for _, mm := range m.Modules {
			p.sample(name, []string{"module", mm.Name}, v(mm))
		}
	}
	mods("perch_module_records_in_total", "counter", "Records queued to a module.",
		func(mm runtime.ModuleMetrics) float64 { return float64(mm.RecordsIn) })
	mods("perch_module_records_out_total", "counter", "Records a module emitted.",
		func(mm runtime.ModuleMetrics) float64 { return float64(mm.RecordsOut) })
	p.family("perch_module_faults_total", "counter", "Module faults, by reason.")
	for _, mm := range m.Modules {
		for _, reason := range runtime.FaultReasons {
			p.sample("perch_module_faults_total", []string{"module", mm.Name, "reason", reason}, float64(mm.Faults[reason]))
		}
	}
	mods("perch_module_restarts_total", "counter", "Module restarts after a fault.",
		func(mm runtime.ModuleMetrics) float64 { return float64(mm.Restarts) })
	mods("perch_module_quarantined", "gauge", "1 if the module is quarantined.",
		func(mm runtime.ModuleMetrics) float64 { return b2f(mm.Quarantined) })
	mods("perch_queue_depth", "gauge", "Batches waiting on a module's input queue.",
		func(mm runtime.ModuleMetrics) float64 { return float64(mm.QueueDepth) })
	mods("perch_queue_capacity", "gauge", "Batches a module's input queue holds.",
		func(mm runtime.ModuleMetrics) float64 { return float64(mm.QueueCap) })

	p.family("perch_guest_call_duration_seconds", "histogram", "Guest call (poll or process) latency in seconds.")
	for _, mm := range m.Modules {
		p.histogram("perch_guest_call_duration_seconds", "module", mm.Name, mm.Calls)
	}

	p.family("perch_model_inference_duration_seconds", "histogram",
		"ONNX Runtime call latency in seconds (one run of up to a batch of rows), per model.")
	for _, mm := range m.Models {
		p.histogram("perch_model_inference_duration_seconds", "model", mm.Name, mm.Inference)
	}
	p.family("perch_model_samples_total", "counter", "Samples a model node scored.")
	for _, mm := range m.Models {
		p.sample("perch_model_samples_total", []string{"model", mm.Name}, float64(mm.Samples))
	}
	p.family("perch_model_alerts_total", "counter", "Alerts (raised and cleared) a model node emitted.")
	for _, mm := range m.Models {
		p.sample("perch_model_alerts_total", []string{"model", mm.Name}, float64(mm.Alerts))
	}
	p.family("perch_model_available", "gauge", "1 if the model is loaded and scoring.")
	for _, mm := range m.Models {
		p.sample("perch_model_available", []string{"model", mm.Name}, b2f(mm.Available))
	}

	p.family("perch_source_messages_total", "counter", "Messages a southbound source converted.")
	for _, s := range m.Sources {
		p.sample("perch_source_messages_total", []string{"source", s.Name}, float64(s.Messages))
	}
	p.family("perch_source_bad_messages_total", "counter", "Messages a southbound source could not convert.")
	for _, s := range m.Sources {
		p.sample("perch_source_bad_messages_total", []string{"source", s.Name}, float64(s.BadMessages))
	}

	if ob != nil {
		p.family("perch_outbox_backlog_rows", "gauge", "Rows waiting in the uplink outbox, by priority.")
		for _, b := range ob.Backlog {
			p.sample("perch_outbox_backlog_rows", []string{"priority", b.Name}, float64(b.Rows))
		}
		p.family("perch_outbox_backlog_bytes", "gauge", "Payload bytes waiting in the uplink outbox, by priority.")
		for _, b := range ob.Backlog {
			p.sample("perch_outbox_backlog_bytes", []string{"priority", b.Name}, float64(b.Bytes))
		}
		p.family("perch_bytes_ingested_total", "counter", "Encoded bytes of the readings recorded.")
		p.sample("perch_bytes_ingested_total", nil, float64(ob.BytesIngested))
		p.family("perch_bytes_published_total", "counter", "Payload bytes the uplink's broker acknowledged.")
		p.sample("perch_bytes_published_total", nil, float64(ob.BytesPublished))
		p.family("perch_outbox_dropped_rows_total", "counter", "Outbox rows the quota dropped.")
		p.sample("perch_outbox_dropped_rows_total", nil, float64(ob.RowsDropped))
	}
	return p.err
}

// histogram writes the samples of one histogram h labelled key=value.
func (p *promWriter) histogram(name, key, value string, h runtime.Histogram) {
	for i, le := range h.Bounds {
		p.sample(name+"_bucket", []string{key, value, "le", fmtFloat(le)}, float64(h.Counts[i]))
	}
	p.sample(name+"_bucket", []string{key, value, "le", "+Inf"}, float64(h.Count))
	p.sample(name+"_sum", []string{key, value}, h.Sum)
	p.sample(name+"_count", []string{key, value}, float64(h.Count))
}

// promWriter writes the text format, keeping the first error.
type promWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (p *promWriter) family(name, typ, help string) {
	p.buf = append(p.buf[:0], "# HELP "...)
	p.buf = append(p.buf, name...)
	p.buf = append(p.buf, ' ')
	p.buf = append(p.buf, escape(help, false)...)
	p.buf = append(p.buf, "\n# TYPE "...)
	p.buf = append(p.buf, name...)
	p.buf = append(p.buf, ' ')
	p.buf = append(p.buf, typ...)
	p.buf = append(p.buf, '\n')
	p.flush()
}

// sample writes name{labels} v; labels alternate names and values.
func (p *promWriter) sample(name string, labels []string, v float64) {
	p.buf = append(p.buf[:0], name...)
	if len(labels) > 0 {
		p.buf = append(p.buf, '{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				p.buf = append(p.buf, ',')
			}
			p.buf = append(p.buf, labels[i]...)
			p.buf = append(p.buf, `="`...)
			p.buf = append(p.buf, escape(labels[i+1], true)...)
			p.buf = append(p.buf, '"')
		}
		p.buf = append(p.buf, '}')
	}
	p.buf = append(p.buf, ' ')
	p.buf = append(p.buf, fmtFloat(v)...)
	p.buf = append(p.buf, '\n')
	p.flush()
}

func (p *promWriter) flush() {
	if p.err == nil {
		_, p.err = p.w.Write(p.buf)
	}
}

// escape escapes a HELP text (backslash, newline) or a label value (also double quotes).
func escape(s string, quote bool) string {
	r := strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	if quote {
		r = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	}
	return r.Replace(s)
}

func fmtFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
