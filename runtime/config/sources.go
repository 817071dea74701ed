package config

import (
	"fmt"
	"strings"
	"time"
)

// Source is a southbound MQTT source: small devices on the site network publish to a local
// broker, and the source subscribes to their topics (QoS 1) and turns each message into a
// record that feeds the pipeline like a driver's output. A module lists the source's name in its
// inputs.
//
//	sources:
//	  - name: site-sensors
//	    broker: tcp://127.0.0.1:1883       # tcp://, mqtt://, or tls:// (ssl://, mqtts://)
//	    tls: {ca_file: ca.pem, cert_file: box.pem, key_file: box.key}  # for tls://; optional
//	    topics: ["sensors/+/temperature"]  # MQTT filters; + and # allowed
//	    series: temperature                # default: the source's name
//	    format: json                       # json (default) or value
//	    client_id: perch-lab-box1-sensors  # default perch-<site>-<device>-<name>
//	    batch_max_records: 256             # records per batch passed on
//	    batch_wait: 50ms                   # longest a record waits for its batch
//	    record: true                       # write the readings to the recorder
//
// Each message becomes one reading: with format json, a JSON object whose numbers become fields
// (booleans 1 or 0) and whose strings become tags, or a bare JSON number, field "value"; with
// format value, the payload is one number, field "value". The record's source is the source's
// name, followed by the topic levels the wildcards matched ("site-sensors/kitchen" for
// sensors/kitchen/temperature), so that rules keep one state per device; the tag "topic" holds
// the whole topic.
type Source struct {
	Name     string   `yaml:"name"`      // unique among sources and modules
	Broker   string   `yaml:"broker"`    // URL of the site's broker, tcp://, mqtt:// or tls://; required
	TLS      TLS      `yaml:"tls"`       // CA and client certificate for a tls:// broker
	Topics   []string `yaml:"topics"`    // MQTT topic filters; at least one
	Series   string   `yaml:"series"`    // the records' series; default the name
	Format   string   `yaml:"format"`    // "json" (default) or "value"
	ClientID string   `yaml:"client_id"` // default perch-<site>-<device>-<name>
	// BatchMaxRecords and BatchWait bound a batch: it is passed on when it holds this many
	// records, or this long after its first record arrived.
	BatchMaxRecords int      `yaml:"batch_max_records"` // default 256
	BatchWait       Duration `yaml:"batch_wait"`        // default 50ms
	Record          *bool    `yaml:"record"`            // write the records to the recorder; default true
}

// Source formats.
const (
	SourceFormatJSON  = "json"
	SourceFormatValue = "value"
)

// Source defaults.
const (
	DefaultSourceBatchMaxRecords = 256
	DefaultSourceBatchWait       = 50 * time.Millisecond
)

// Recorded reports whether the source's records go to the recorder.
func (s *Source) Recorded() bool { return s.Record == nil || *s.Record }

// Source returns the source named name, or nil.
func (c *Config) Source(name string) *Source {
	for i := range c.Sources {
		if c.Sources[i].Name == name {
			return &c.Sources[i]
		}
	}
	return nil
}

// sources validates the sources section and fills in its defaults.
func (p *parser) sources(c *Config) {
	names := map[string]bool{}
	for _, m := range c.Modules {
		names[m.Name] = true
	}
	seen := map[string]bool{}
	for i := range c.Sources {
		s := &c.Sources[i]
		at := fmt.Sprintf("sources[%d]", i)
		switch {
		case !nameRE.MatchString(s.Name):
			p.errf(at+".name", "want a lowercase name of letters, digits, - and _, got %q", s.Name)
		case seen[s.Name]:
			p.errf(at+".name", "duplicate source %q", s.Name)
		case names[s.Name]:
			p.errf(at+".name", "%q is also a module's name", s.Name)
		}
		seen[s.Name] = true
		p.broker(at, s.Broker, &s.TLS)
		if len(s.Topics) == 0 {
			p.errf(at+".topics", "at least one topic filter, such as \"sensors/+/temperature\"")
		}
		for j, f := range s.Topics {
			if err := checkTopicFilter(f); err != nil {
				p.errf(fmt.Sprintf("%s.topics[%d]", at, j), "%v", err)
			}
		}
		if s.Series == "" {
			s.Series = s.Name
		}
		switch s.Format {
		case "":
			s.Format = SourceFormatJSON
		case SourceFormatJSON, SourceFormatValue:
		default:
			p.errf(at+".format", "want json or value, got %q", s.Format)
		}
		if s.ClientID == "" {
			s.ClientID = "perch-" + c.Site + "-" + c.Device + "-" + s.Name
		}
		if len(s.ClientID) > 23*4 {
			p.errf(at+".client_id", "at most 92 bytes")
		}
		if s.BatchMaxRecords == 0 {
			s.BatchMaxRecords = DefaultSourceBatchMaxRecords
		} else if s.BatchMaxRecords < 0 || s.BatchMaxRecords > DefaultEmitRecords {
			p.errf(at+".batch_max_records", "want 1 to %d, got %d", DefaultEmitRecords, s.BatchMaxRecords)
		}
		if s.BatchWait == 0 {
			s.BatchWait = Duration(DefaultSourceBatchWait)
		}
	}
}

// checkTopicFilter checks an MQTT topic filter: not empty, + alone in its level, # alone in the
// last level.
func checkTopicFilter(f string) error {
	if f == "" {
		return fmt.Errorf("empty topic filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("%q: # must be the last level", f)
		case l != "+" && l != "#" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("%q: a wildcard must be a whole level", f)
		}
	}
	if strings.ContainsRune(f, 0) {
		return fmt.Errorf("%q: a NUL byte", f)
	}
	return nil
}
