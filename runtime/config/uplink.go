package config

import (
	"fmt"
	"reflect"
	"slices"
	"time"
)

// Uplink configures the MQTT uplink. The zero value (no uplink: section) means no uplink.
//
//	uplink:
//	  broker: tls://broker.example:8883   # tcp://, mqtt://, tls://, ssl:// or mqtts://
//	  client_id: perch-lab-box1           # default perch-<site>-<device>
//	  keepalive: 30s
//	  in_flight: 32                       # unacknowledged messages at most
//	  heartbeat: 60s                      # status heartbeat period
//	  outbox_max_bytes: 67108864          # outbox quota in payload bytes
//	  daily_budget_bytes: 10485760        # upstream bytes per UTC day; 0: no budget
//	  raw_readings: {enabled: false, max_per_second: 10}
//	  summaries: {batch: 60s, compress: true, digits: 6}   # the defaults
//	  tls: {ca_file: ca.pem, cert_file: box.pem, key_file: box.key}
//	  commands: {actuate: [fan]}          # modules cmd/actuate may drive; default none
type Uplink struct {
	Broker    string   `yaml:"broker"`    // URL of the MQTT broker; required
	ClientID  string   `yaml:"client_id"` // default perch-<site>-<device>
	Keepalive Duration `yaml:"keepalive"` // MQTT keepalive; default 30s
	InFlight  int      `yaml:"in_flight"` // unacknowledged publishes; default 32
	// Heartbeat is the status heartbeat period; default 5m. Liveness does not wait for it: the
	// broker publishes the last will (offline) as soon as the connection is lost.
	Heartbeat      Duration `yaml:"heartbeat"`
	OutboxMaxBytes int64    `yaml:"outbox_max_bytes"` // outbox quota; default 64 MiB
	// DailyBudgetBytes bounds the payload bytes sent per UTC day: past 80 % of it only alerts
	// and summaries go, past all of it only alerts (the rest waits in the outbox); it may be
	// overshot by up to in_flight messages. 0: none.
	DailyBudgetBytes int64       `yaml:"daily_budget_bytes"`
	RawReadings      RawReadings `yaml:"raw_readings"` // raw readings upstream (opt-in)
	Summaries        Summaries   `yaml:"summaries"`    // how summaries go upstream
	TLS              TLS         `yaml:"tls"`          // server CA and client certificate
	// Commands allow the commands from upstream that act on the pipeline; none by default.
	Commands UplinkCommands `yaml:"commands"`
}

// UplinkCommands allow commands from upstream that act on the pipeline. Deny by default: a
// module not listed cannot be reached from upstream.
type UplinkCommands struct {
	// Actuate names the modules that cmd/actuate may drive (actuators, or any module that
	// takes alerts in; never a driver).
	Actuate []string `yaml:"actuate"`
}

// CanActuate reports whether cmd/actuate may drive module.
func (c *UplinkCommands) CanActuate(module string) bool { return slices.Contains(c.Actuate, module) }

// RawReadings sends raw readings upstream, at most MaxPerSecond of them (the others are only
// recorded).
type RawReadings struct {
	Enabled      bool    `yaml:"enabled"`
	MaxPerSecond float64 `yaml:"max_per_second"` // default 1
}

// Summaries tune how summaries (and events) go upstream. By default ([Parse] fills it in) the
// summaries are held in the outbox and sent together, one message per Batch (60s), gzipped in a
// columnar form that saves most of their bytes, and the events pending at the same time go
// together too; `batch: 0` sends one message per summary and per event. Alerts are never batched
// nor held back. A Config built in code, not parsed, gets what its fields say (zero: no batching).
type Summaries struct {
	// Batch is how long the oldest summary waits for others to join its message: 1s to 24h,
	// default 60s; 0 (written out) sends each summary and event on its own.
	Batch Duration `yaml:"batch"`
	// Compress gzips a batch, in the columnar form (see runtime/uplink/format.go); false sends a
	// batch as a readable JSON array. Default true with a batch; it needs Batch.
	Compress bool `yaml:"compress"`
	// Digits is how many significant digits the numeric fields of a summary keep (statistics
	// of sensor readings, whose resolution is far coarser): 1 to 17, default 6; 17 keeps them
	// exact. Alerts and events always keep theirs exact.
	Digits int `yaml:"digits"`
}

// Summary defaults and bounds.
const (
	DefaultSummaryDigits = 6
	MaxSummaryDigits     = 17 // exact: the shortest representation that reads back the same
	MaxSummaryBatch      = 24 * time.Hour
	DefaultSummaryBatch  = 60 * time.Second
)

// Uplink defaults.
const (
	DefaultUplinkKeepalive = 30 * time.Second
	DefaultUplinkInFlight  = 32
	DefaultUplinkHeartbeat = 5 * time.Minute
	DefaultOutboxMaxBytes  = 64 << 20
)

// Enabled reports whether the config has an uplink.
func (u *Uplink) Enabled() bool { return u.Broker != "" }

// uplink validates the uplink section and fills in its defaults.
func (p *parser) uplink(c *Config) {
	u := &c.Uplink
	if reflect.ValueOf(*u).IsZero() {
		return
	}
	if u.Broker == "" {
		p.errf("uplink.broker", "required (or remove the uplink section)")
	} else {
		p.broker("uplink", u.Broker, &u.TLS)
	}
	if u.ClientID == "" {
		u.ClientID = "perch-" + c.Site + "-" + c.Device
	}
	if len(u.ClientID) > 23*4 {
		p.errf("uplink.client_id", "at most 92 bytes")
	}
	if u.Keepalive == 0 {
		u.Keepalive = Duration(DefaultUplinkKeepalive)
	} else if u.Keepalive.D() < time.Second {
		p.errf("uplink.keepalive", "at least 1s")
	}
	if u.InFlight == 0 {
		u.InFlight = DefaultUplinkInFlight
	} else if u.InFlight < 0 || u.InFlight > 65535 {
		p.errf("uplink.in_flight", "want 1 to 65535, got %d", u.InFlight)
	}
	if u.Heartbeat == 0 {
		u.Heartbeat = Duration(DefaultUplinkHeartbeat)
	} else if u.Heartbeat.D() < time.Second {
		p.errf("uplink.heartbeat", "at least 1s")
	}
	if u.OutboxMaxBytes == 0 {
		u.OutboxMaxBytes = DefaultOutboxMaxBytes
	} else if u.OutboxMaxBytes < 0 {
		p.errf("uplink.outbox_max_bytes", "must not be negative")
	}
	if u.DailyBudgetBytes < 0 {
		p.errf("uplink.daily_budget_bytes", "must not be negative")
	}
	if u.RawReadings.MaxPerSecond < 0 {
		p.errf("uplink.raw_readings.max_per_second", "must not be negative")
	} else if u.RawReadings.MaxPerSecond == 0 {
		u.RawReadings.MaxPerSecond = 1
	}
	_, batchSet := p.lines["uplink.summaries.batch"]
	_, compressSet := p.lines["uplink.summaries.compress"]
	if !batchSet {
		u.Summaries.Batch = Duration(DefaultSummaryBatch)
	}
	if !compressSet && u.Summaries.Batch > 0 {
		u.Summaries.Compress = true
	}
	switch b := u.Summaries.Batch.D(); {
	case b < 0 || (b > 0 && b < time.Second) || b > MaxSummaryBatch:
		p.errf("uplink.summaries.batch", "want 0 (no batching) or 1s to 24h, got %v", b)
	case b == 0 && u.Summaries.Compress:
		p.errf("uplink.summaries.compress", "compresses batches: set uplink.summaries.batch too")
	}
	if u.Summaries.Digits == 0 {
		u.Summaries.Digits = DefaultSummaryDigits
	} else if u.Summaries.Digits < 1 || u.Summaries.Digits > MaxSummaryDigits {
		p.errf("uplink.summaries.digits", "want 1 to 17, got %d", u.Summaries.Digits)
	}
}

// uplinkCommands validates uplink.commands once the modules are known: mods maps a module's
// name to its index in c.Modules.
func (p *parser) uplinkCommands(c *Config, mods map[string]int) {
	seen := map[string]bool{}
	for i, name := range c.Uplink.Commands.Actuate {
		at := fmt.Sprintf("uplink.commands.actuate[%d]", i)
		j, ok := mods[name]
		switch {
		case !ok:
			p.errf(at, "unknown module %q", name)
		case seen[name]:
			p.errf(at, "module %q is listed twice", name)
		case c.Modules[j].Manifest.Kind == KindDriver:
			p.errf(at, "module %q is a driver and takes no input: list actuators (or filters and rules)", name)
		}
		seen[name] = true
	}
}
