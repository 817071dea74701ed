package api

import (
	"bytes"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/store"
)

// TestMetricsPrometheusParser parses /metrics with Prometheus's own text-format parser
// (prometheus/common/expfmt) and checks every family the issue lists is there with its type,
// inference latency included.
func TestMetricsPrometheusParser(t *testing.T) {
	h := runtime.Histogram{Bounds: []float64{5e-6, 1e-5}, Counts: []uint64{3, 4}, Count: 5, Sum: 4.2e-5}
	m := runtime.Metrics{Ready: true,
		Modules: []runtime.ModuleMetrics{{Name: "env", Kind: "driver", RecordsOut: 7, Faults: map[string]uint64{"trap": 1}, Calls: h}},
		Sources: []runtime.SourceMetrics{{Name: "site", Messages: 3}},
		Models:  []runtime.ModelMetrics{{Name: "env-anomaly", Available: true, Samples: 9, Alerts: 2, Inference: h}},
	}
	ob := &store.OutboxStats{BytesIngested: 100, BytesPublished: 5, Backlog: [4]store.BacklogStats{{Name: "alerts", Rows: 1, Bytes: 40}, {Name: "summaries"}, {Name: "events"}, {Name: "readings"}}}
	var b bytes.Buffer
	if err := WriteMetrics(&b, m, ob); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(&b)
	if err != nil {
		t.Fatalf("the Prometheus parser refuses /metrics: %v\n%s", err, b.String())
	}
	for name, typ := range map[string]string{
		"perch_module_records_in_total": "COUNTER", "perch_module_records_out_total": "COUNTER",
		"perch_module_faults_total": "COUNTER", "perch_module_restarts_total": "COUNTER",
		"perch_guest_call_duration_seconds": "HISTOGRAM", "perch_queue_depth": "GAUGE",
		"perch_outbox_backlog_rows": "GAUGE", "perch_bytes_ingested_total": "COUNTER",
		"perch_bytes_published_total": "COUNTER", "perch_model_inference_duration_seconds": "HISTOGRAM",
		"perch_model_samples_total": "COUNTER",
	} {
		f, ok := fams[name]
		if !ok {
			t.Errorf("no family %s", name)
			continue
		}
		if got := f.GetType().String(); got != typ {
			t.Errorf("%s: type %s, want %s", name, got, typ)
		}
	}
	inf := fams["perch_model_inference_duration_seconds"].GetMetric()[0].GetHistogram()
	if inf.GetSampleCount() != 5 || inf.GetSampleSum() != 4.2e-5 || len(inf.GetBucket()) != 3 || inf.GetBucket()[0].GetCumulativeCount() != 3 {
		t.Errorf("inference histogram: %v", inf)
	}
}
