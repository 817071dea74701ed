// Package api is Perch's local HTTP API: /healthz, /readyz, /metrics (Prometheus text format
// 0.0.4), /api/v1/status, /api/v1/modules and /api/v1/alerts (JSON), /api/v1/stream (a live
// stream of records as server-sent events, fed by a [Hub]) and, at /, one page with live plots.
// It listens on 127.0.0.1:8686 by default; beyond loopback it requires a bearer token (config
// section api:).
//
// # Live stream
//
// GET /api/v1/stream is a stream of server-sent events (text/event-stream), one per record the
// pipeline emits, named by its kind (reading, summary, score, alert, event), with one line of
// JSON as data: {"kind", "module" (the node that emitted it), "time" (RFC 3339, UTC), "time_ms"
// (milliseconds since the Unix epoch), "source", "series", "fields" (numbers; null for NaN or
// infinity), "tags" (strings)}. A "health" event ({"modules": [{"name", "health", ...}]}) comes
// on connect and whenever a module's health changes (checked every 2 s); a "dropped" event
// ({"dropped": n, "total": n}) tells a client that fell behind how many events it lost. A
// comment line every 15 s keeps the connection alive. Query parameters:
//
//   - kinds: a comma-separated list of reading, summary, score, alert, event and health;
//     default reading,score,alert,health.
//   - series: a comma-separated list of series names; default all.
//   - max_rate: readings per second per module and series, at most 1000; default 10; 0 for
//     every reading. Other kinds are never thinned.
//
// The [Hub] behind it never blocks the pipeline (see [Hub.Publish]).
//
// # Token
//
// With a token, every request must carry it, as the header Authorization: Bearer <token> or, for
// a browser (whose EventSource cannot set headers), as the query parameter access_token
// (RFC 6750 section 2.3): open http://host:8686/?access_token=<token> and the page passes it on.
// A token in a URL can end up in browser history and proxy logs: prefer the header elsewhere.
// The page's own files (/ and /page/...) are static and served without the token.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
)

// Serve listens on cfg.Listen (default 127.0.0.1:8686) and serves the API for rt, with the
// live stream of hub (nil: the stream answers 503), until ctx is done; then it shuts the server
// down and returns nil. It refuses an address beyond loopback without a token.
func Serve(ctx context.Context, cfg config.API, rt *runtime.Runtime, hub *Hub) error {
	if cfg.Listen == "" {
		cfg.Listen = config.DefaultAPIListen
	}
	if err := config.CheckAPIListen(cfg.Listen, cfg.Token); err != nil {
		return errors.New("api: " + err.Error())
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return errors.New("api: " + err.Error())
	}
	return ServeListener(ctx, ln, cfg.Token, rt, hub)
}

// ServeListener serves the API for rt and hub (nil: no stream) on ln until ctx is done, then
// shuts the server down (closing ln; open streams end at once) and returns nil. A non-empty
// token is required of every request.
func ServeListener(ctx context.Context, ln net.Listener, token string, rt *runtime.Runtime, hub *Hub) error {
	// Streams never go idle, so Shutdown would wait for them: the base context of every
	// request is canceled when Shutdown starts, which ends them.
	base, stopStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStreams()
	srv := &http.Server{Handler: Handler(rt, token, hub), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	srv.RegisterOnShutdown(stopStreams)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-done
	return err
}

// Handler returns the API's handler for rt, with the live stream of hub (nil: the stream
// answers 503). A non-empty token is required of every request, as Authorization: Bearer
// <token> or as the query parameter access_token.
func Handler(rt *runtime.Runtime, token string, hub *Hub) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", pageHandler())
	mux.Handle("GET /page/", pageHandler())
	mux.HandleFunc("GET /api/v1/stream", func(w http.ResponseWriter, r *http.Request) {
		serveStream(w, r, hub, rt)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !rt.Metrics().Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: the modules have not started\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		WriteMetrics(&b, rt.Metrics(), outbox(r.Context(), rt))
		if hub != nil {
			p := &promWriter{w: &b}
			writeStreamMetrics(p, hub.Stats())
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(b.Bytes())
	})
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, status(rt.Metrics(), outbox(r.Context(), rt)))
	})
	mux.HandleFunc("GET /api/v1/modules", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"modules": rt.Metrics().Modules})
	})
	mux.HandleFunc("GET /api/v1/alerts", func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				http.Error(w, "limit: want a whole number from 1 to 1000", http.StatusBadRequest)
				return
			}
			limit = n
		}
		alerts, err := recentAlerts(r.Context(), rt, limit)
		if err != nil {
			http.Error(w, "reading the recorder: "+err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]any{"alerts": alerts})
	})
	if token == "" {
		return mux
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/page/") {
			mux.ServeHTTP(w, r) // the page's static files (page.go)
			return
		}
		got := r.Header.Get("Authorization")
		if got == "" && r.URL.Query().Has("access_token") {
			got = "Bearer " + r.URL.Query().Get("access_token")
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="perch"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// alertDoc is one alert of /api/v1/alerts, from the recorder's recent_alerts view.
type alertDoc struct {
	ID       int64           `json:"id"`
	Time     string          `json:"time"` // RFC 3339, UTC
	Severity string          `json:"severity"`
	Source   string          `json:"source"`
	Series   string          `json:"series"`
	Message  string          `json:"message"`
	Fields   json.RawMessage `json:"fields"`
	Tags     json.RawMessage `json:"tags"`
}

// recentAlerts reads up to limit alerts of the last 24 hours, newest first.
func recentAlerts(ctx context.Context, rt *runtime.Runtime, limit int) ([]alertDoc, error) {
	rows, err := rt.Store().DB().QueryContext(ctx,
		`SELECT id, time, severity, source, series, message, fields, tags FROM recent_alerts LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []alertDoc{}
	for rows.Next() {
		var a alertDoc
		var fields, tags string
		if err := rows.Scan(&a.ID, &a.Time, &a.Severity, &a.Source, &a.Series, &a.Message, &fields, &tags); err != nil {
			return nil, err
		}
		a.Fields, a.Tags = json.RawMessage(fields), json.RawMessage(tags)
		out = append(out, a)
	}
	return out, rows.Err()
}

// outbox returns the recorder's outbox statistics, or nil if they cannot be read.
func outbox(ctx context.Context, rt *runtime.Runtime) *store.OutboxStats {
	st := rt.Store()
	if st == nil {
		return nil
	}
	s, err := st.OutboxStats(ctx)
	if err != nil {
		return nil
	}
	return &s
}

// StatusDoc is /api/v1/status: what `perch status --api` prints.
type StatusDoc struct {
	Site          string                  `json:"site"`
	Device        string                  `json:"device"`
	Ready         bool                    `json:"ready"`
	Started       *time.Time              `json:"started,omitempty"`
	UptimeSeconds float64                 `json:"uptime_seconds"`
	Modules       []ModuleHealth          `json:"modules"`
	Sources       []runtime.SourceMetrics `json:"sources"`
	Outbox        *OutboxDoc              `json:"outbox,omitempty"`
	Models        []ModelHealth           `json:"models"`
}

// ModelHealth is one model node's state in [StatusDoc].
type ModelHealth struct {
	Name      string `json:"name"`
	Model     string `json:"model"` // the card's name and version
	Available bool   `json:"available"`
	Error     string `json:"error,omitempty"`
	Samples   uint64 `json:"samples"`
	Alerts    uint64 `json:"alerts"`
}

// ModuleHealth is one module's state in [StatusDoc].
type ModuleHealth struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Health     string `json:"health"` // ok, restarted or quarantined
	Restarts   uint64 `json:"restarts"`
	Faults     uint64 `json:"faults"`
	RecordsIn  uint64 `json:"records_in"`
	RecordsOut uint64 `json:"records_out"`
	QueueDepth int    `json:"queue_depth"`
}

// OutboxDoc is the uplink outbox in [StatusDoc].
type OutboxDoc struct {
	BytesIngested  int64            `json:"bytes_ingested"`
	BytesPublished int64            `json:"bytes_published"`
	Rows           int64            `json:"rows"`
	Bytes          int64            `json:"bytes"`
	Backlog        map[string]int64 `json:"backlog_rows"`
}

func status(m runtime.Metrics, ob *store.OutboxStats) StatusDoc {
	d := StatusDoc{Site: m.Site, Device: m.Device, Ready: m.Ready, Sources: m.Sources, Modules: []ModuleHealth{},
		Models: []ModelHealth{}}
	for _, mm := range m.Models {
		d.Models = append(d.Models, ModelHealth{Name: mm.Name, Model: mm.Model, Available: mm.Available, Error: mm.Error,
			Samples: mm.Samples, Alerts: mm.Alerts})
	}
	if m.Ready {
		d.Started = &m.Started
		d.UptimeSeconds = time.Since(m.Started).Seconds()
	}
	for _, mm := range m.Modules {
		h := ModuleHealth{Name: mm.Name, Kind: mm.Kind, Health: "ok", Restarts: mm.Restarts,
			RecordsIn: mm.RecordsIn, RecordsOut: mm.RecordsOut, QueueDepth: mm.QueueDepth}
		for _, n := range mm.Faults {
			h.Faults += n
		}
		switch {
		case mm.Quarantined:
			h.Health = "quarantined"
		case mm.Restarts > 0:
			h.Health = "restarted"
		}
		d.Modules = append(d.Modules, h)
	}
	if ob != nil {
		d.Outbox = &OutboxDoc{BytesIngested: ob.BytesIngested, BytesPublished: ob.BytesPublished,
			Rows: ob.Rows, Bytes: ob.Bytes, Backlog: map[string]int64{}}
		for _, b := range ob.Backlog {
			d.Outbox.Backlog[b.Name] = b.Rows
		}
	}
	return d
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}
