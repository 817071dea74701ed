package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/perch-edge/perch/runtime/api"
	"github.com/perch-edge/perch/runtime/store"
)

// statusAlerts is how many of the latest alerts `perch status` shows.
const statusAlerts = 10

// Status is what `perch status` reports, read from the recorder alone (read-only, so it works
// beside a running perch or after it). --json prints it as is.
type Status struct {
	DB       string         `json:"db"`
	Runtime  RuntimeStatus  `json:"runtime"`
	Versions VersionsStatus `json:"versions"`
	Modules  []ModuleStatus `json:"modules"`
	Sources  []SourceStatus `json:"sources"` // southbound MQTT sources
	Alerts   []AlertStatus  `json:"alerts"`  // the latest, newest first
	Outbox   OutboxStatus   `json:"outbox"`
	Bytes    BytesStatus    `json:"bytes"`
	Updates  []UpdateStatus `json:"updates"` // the last step of every target the update agent saw
}

// RuntimeStatus is the runtime's lifecycle from its runtime.started and runtime.stopped events.
type RuntimeStatus struct {
	// State is "running" (the last runtime.started has no runtime.stopped after it: the runtime
	// runs, or it ended without stopping, by kill -9 or a power cut), "stopped", or "never
	// started".
	State     string     `json:"state"`
	Site      string     `json:"site,omitempty"`
	Device    string     `json:"device,omitempty"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	StoppedAt *time.Time `json:"stopped_at,omitempty"`
	// UptimeS is the seconds since StartedAt when running, or from StartedAt to StoppedAt.
	UptimeS float64 `json:"uptime_s"`
}

// VersionsStatus are the versions the recorder holds and this binary's.
type VersionsStatus struct {
	Runtime string `json:"runtime,omitempty"` // meta runtime_version: the perch that last ran
	Schema  int    `json:"schema"`            // PRAGMA user_version
	CLI     string `json:"cli"`               // this binary
}

// ModuleStatus is one row of the module_health view, with a one-word health.
type ModuleStatus struct {
	Module          string `json:"module"`
	Health          string `json:"health"` // "ok", "faulting" (faults in the last hour) or "quarantined"
	LastStarted     string `json:"last_started,omitempty"`
	LastFault       string `json:"last_fault,omitempty"`
	LastFaultReason string `json:"last_fault_reason,omitempty"`
	Faults1h        int64  `json:"faults_1h"`
	Restarts1h      int64  `json:"restarts_1h"`
}

// SourceStatus is a southbound MQTT source, from its source.* events.
type SourceStatus struct {
	Source string `json:"source"`
	// State is "connected" (its last source.connected is later than its last
	// source.disconnected), "disconnected", or "stopped" when the runtime is.
	State          string `json:"state"`
	LastConnected  string `json:"last_connected,omitempty"`
	LastBadMessage string `json:"last_bad_message,omitempty"` // time and message of the last source.bad_message
}

// AlertStatus is one alert.
type AlertStatus struct {
	ID       int64     `json:"id"`
	Time     time.Time `json:"time"`
	Severity string    `json:"severity"`
	State    string    `json:"state,omitempty"` // the tag "state": raised or cleared
	Source   string    `json:"source"`
	Series   string    `json:"series"`
	Message  string    `json:"message,omitempty"`
}

// UpdateStatus is the update agent's last step for one registry target (view update_status).
type UpdateStatus struct {
	Target  string `json:"target"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
	Release int64  `json:"release"`
	Step    string `json:"step"` // committed, rolled_back, failed, skipped, or a step in progress
	Detail  string `json:"detail,omitempty"`
	Time    string `json:"time"`
}

// OutboxStatus is what waits to go upstream.
type OutboxStatus struct {
	Rows    int64           `json:"rows"`
	Bytes   int64           `json:"bytes"`
	Backlog []BacklogStatus `json:"backlog"` // every priority, alerts first
}

// BacklogStatus is the backlog of one priority.
type BacklogStatus struct {
	Priority string     `json:"priority"` // alerts, summaries, events, readings
	Rows     int64      `json:"rows"`
	Bytes    int64      `json:"bytes"`
	Oldest   *time.Time `json:"oldest,omitempty"`
}

// BytesStatus are the uplink's counters since the recorder was created.
type BytesStatus struct {
	Ingested      int64 `json:"ingested"`  // bytes of record batches recorded
	Published     int64 `json:"published"` // payload bytes the broker acknowledged
	Dropped       int64 `json:"dropped"`   // payload bytes the outbox quota dropped
	RowsDropped   int64 `json:"rows_dropped"`
	RowsPublished int64 `json:"rows_published"`
}

// cmdStatus prints the status of a runtime from its recorder.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("db", "/var/lib/perch/perch.db", "the recorder `file`")
	apiURL := fs.String("api", "", "ask a running instance at this `URL` (such as http://127.0.0.1:8686) instead of reading the recorder")
	token := fs.String("token", "", "the API's bearer `token`, if it has one")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("perch status: unexpected arguments %q", fs.Args())
	}
	if *apiURL != "" {
		return statusFromAPI(ctx, *apiURL, *token, *asJSON, stdout)
	}
	db, err := store.OpenReadOnly(*path)
	if err != nil {
		return fmt.Errorf("perch status: %w", err)
	}
	defer db.Close()
	st, err := readStatus(ctx, db, time.Now())
	if err != nil {
		return fmt.Errorf("perch status: %s: %w", *path, err)
	}
	st.DB = *path
	if *asJSON {
		js, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", js)
		return err
	}
	return printStatus(stdout, st)
}

// readStatus reads the status from a recorder opened read-only; now is the time uptime is
// counted to.
func readStatus(ctx context.Context, db *sql.DB, now time.Time) (*Status, error) {
	st := &Status{Modules: []ModuleStatus{}, Sources: []SourceStatus{}, Alerts: []AlertStatus{}}
	st.Versions.CLI = Version
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&st.Versions.Schema); err != nil {
		return nil, err
	}
	meta := map[string]string{}
	rows, err := db.QueryContext(ctx, "SELECT key, value FROM meta")
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, err
		}
		meta[k] = v
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	st.Versions.Runtime = meta["runtime_version"]
	st.Runtime.Site, st.Runtime.Device = meta["site"], meta["device"]

	// Uptime: the last runtime.started, and a runtime.stopped after it.
	var started, stopped sql.NullInt64
	err = db.QueryRowContext(ctx, `SELECT
		(SELECT max(id) FROM events WHERE kind = 'runtime.started'),
		(SELECT max(id) FROM events WHERE kind = 'runtime.stopped')`).Scan(&started, &stopped)
	if err != nil {
		return nil, err
	}
	st.Runtime.State = "never started"
	if started.Valid {
		t, err := eventTime(ctx, db, started.Int64)
		if err != nil {
			return nil, err
		}
		st.Runtime.StartedAt = &t
		st.Runtime.State = "running"
		end := now
		if stopped.Valid && stopped.Int64 > started.Int64 {
			s, err := eventTime(ctx, db, stopped.Int64)
			if err != nil {
				return nil, err
			}
			st.Runtime.State, st.Runtime.StoppedAt, end = "stopped", &s, s
		}
		st.Runtime.UptimeS = max(0, end.Sub(t).Seconds())
	}

	rows, err = db.QueryContext(ctx, `SELECT module, coalesce(last_started, ''), coalesce(last_fault, ''),
		coalesce(last_fault_reason, ''), coalesce(faults_1h, 0), coalesce(restarts_1h, 0), coalesce(quarantined, 0)
		FROM module_health ORDER BY module`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var m ModuleStatus
		var quarantined bool
		if err := rows.Scan(&m.Module, &m.LastStarted, &m.LastFault, &m.LastFaultReason, &m.Faults1h,
			&m.Restarts1h, &quarantined); err != nil {
			rows.Close()
			return nil, err
		}
		switch {
		case quarantined:
			m.Health = "quarantined"
		case m.Faults1h > 0:
			m.Health = "faulting"
		default:
			m.Health = "ok"
		}
		st.Modules = append(st.Modules, m)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}

	rows, err = db.QueryContext(ctx, `SELECT module,
		coalesce(max(CASE WHEN kind = 'source.connected' THEN time_ns END), 0),
		coalesce(max(CASE WHEN kind = 'source.disconnected' THEN time_ns END), 0),
		(SELECT e.time_ns || ' ' || e.message FROM events AS e WHERE e.module = events.module
			AND e.kind = 'source.bad_message' ORDER BY e.id DESC LIMIT 1)
		FROM events WHERE module <> '' AND kind IN ('source.connected', 'source.disconnected', 'source.bad_message')
		GROUP BY module ORDER BY module`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var src SourceStatus
		var conn, disc int64
		var bad sql.NullString
		if err := rows.Scan(&src.Source, &conn, &disc, &bad); err != nil {
			rows.Close()
			return nil, err
		}
		switch {
		case st.Runtime.State != "running":
			src.State = "stopped"
		case conn > disc:
			src.State = "connected"
		default:
			src.State = "disconnected"
		}
		if conn > 0 {
			src.LastConnected = time.Unix(0, conn).UTC().Format(time.RFC3339Nano)
		}
		if ns, msg, ok := strings.Cut(bad.String, " "); ok {
			if n, err := strconv.ParseInt(ns, 10, 64); err == nil {
				src.LastBadMessage = time.Unix(0, n).UTC().Format(time.RFC3339) + " " + msg
			}
		}
		st.Sources = append(st.Sources, src)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}

	rows, err = db.QueryContext(ctx, `SELECT id, time_ns, severity, coalesce(json_extract(tags, '$.state'), ''),
		source, series, message FROM alerts ORDER BY id DESC LIMIT ?`, statusAlerts)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var a AlertStatus
		var ns int64
		if err := rows.Scan(&a.ID, &ns, &a.Severity, &a.State, &a.Source, &a.Series, &a.Message); err != nil {
			rows.Close()
			return nil, err
		}
		a.Time = time.Unix(0, ns).UTC()
		st.Alerts = append(st.Alerts, a)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}

	// The outbox and its counters came with schema version 2.
	for _, name := range []string{"alerts", "summaries", "events", "readings"} {
		st.Outbox.Backlog = append(st.Outbox.Backlog, BacklogStatus{Priority: name})
	}
	if st.Versions.Schema < 2 {
		return st, nil
	}
	rows, err = db.QueryContext(ctx, `SELECT priority, count(*), coalesce(sum(bytes), 0), min(created_ns)
		FROM outbox GROUP BY priority ORDER BY priority`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var p, n, b int64
		var oldest sql.NullInt64
		if err := rows.Scan(&p, &n, &b, &oldest); err != nil {
			rows.Close()
			return nil, err
		}
		if p < 0 || p >= int64(len(st.Outbox.Backlog)) {
			continue
		}
		bl := &st.Outbox.Backlog[p]
		bl.Rows, bl.Bytes = n, b
		if oldest.Valid {
			t := time.Unix(0, oldest.Int64).UTC()
			bl.Oldest = &t
		}
		st.Outbox.Rows += n
		st.Outbox.Bytes += b
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	b := &st.Bytes
	err = db.QueryRowContext(ctx, `SELECT bytes_ingested, bytes_published, bytes_dropped, rows_dropped,
		rows_published FROM uplink_counters WHERE id = 1`).Scan(&b.Ingested, &b.Published, &b.Dropped,
		&b.RowsDropped, &b.RowsPublished)
	if err != nil && err != sql.ErrNoRows {
		return nil, err
	}
	// update_status exists from schema migration 3 on.
	st.Updates = []UpdateStatus{}
	if urows, err := db.QueryContext(ctx, `SELECT target, kind, version, release, step, detail, time FROM update_status`); err == nil {
		defer urows.Close()
		for urows.Next() {
			var u UpdateStatus
			if err := urows.Scan(&u.Target, &u.Kind, &u.Version, &u.Release, &u.Step, &u.Detail, &u.Time); err != nil {
				return nil, err
			}
			st.Updates = append(st.Updates, u)
		}
		if err := urows.Err(); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func eventTime(ctx context.Context, db *sql.DB, id int64) (time.Time, error) {
	var ns int64
	if err := db.QueryRowContext(ctx, "SELECT time_ns FROM events WHERE id = ?", id).Scan(&ns); err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns).UTC(), nil
}

// printStatus prints st as text.
func printStatus(w io.Writer, st *Status) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	r := &st.Runtime
	fmt.Fprintf(&b, "perch status of %s\n\n", st.DB)
	switch r.State {
	case "running":
		fmt.Fprintf(tw, "runtime\trunning since %s, up %s (or ended without stopping)\n",
			r.StartedAt.Format(time.RFC3339), uptime(r.UptimeS))
	case "stopped":
		fmt.Fprintf(tw, "runtime\tstopped at %s, after running %s\n", r.StoppedAt.Format(time.RFC3339), uptime(r.UptimeS))
	default:
		fmt.Fprintf(tw, "runtime\t%s\n", r.State)
	}
	if r.Site != "" || r.Device != "" {
		fmt.Fprintf(tw, "site/device\t%s/%s\n", r.Site, r.Device)
	}
	rv := st.Versions.Runtime
	if rv == "" {
		rv = "unknown"
	}
	fmt.Fprintf(tw, "versions\tperch %s (this binary %s), schema %d\n", rv, st.Versions.CLI, st.Versions.Schema)
	fmt.Fprintf(tw, "bytes\tingested %d, published %d, dropped %d (%d rows)\n",
		st.Bytes.Ingested, st.Bytes.Published, st.Bytes.Dropped, st.Bytes.RowsDropped)
	tw.Flush()

	fmt.Fprintf(&b, "\nmodules\n")
	if len(st.Modules) == 0 {
		b.WriteString("  (none)\n")
	} else {
		fmt.Fprintln(tw, "  MODULE\tHEALTH\tLAST STARTED\tFAULTS 1H\tRESTARTS 1H\tLAST FAULT")
		for _, m := range st.Modules {
			fault := m.LastFault
			if m.LastFaultReason != "" {
				fault += " " + m.LastFaultReason
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\n", m.Module, m.Health, m.LastStarted, m.Faults1h,
				m.Restarts1h, oneLine(fault))
		}
		tw.Flush()
	}

	if len(st.Sources) > 0 {
		fmt.Fprintf(&b, "\nsources\n")
		fmt.Fprintln(tw, "  SOURCE\tSTATE\tLAST CONNECTED\tLAST BAD MESSAGE")
		for _, src := range st.Sources {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", src.Source, src.State, src.LastConnected, oneLine(src.LastBadMessage))
		}
		tw.Flush()
	}

	fmt.Fprintf(&b, "\nalerts (latest %d, newest first)\n", statusAlerts)
	if len(st.Alerts) == 0 {
		b.WriteString("  (none)\n")
	} else {
		fmt.Fprintln(tw, "  TIME\tSEVERITY\tSTATE\tSOURCE\tSERIES\tMESSAGE")
		for _, a := range st.Alerts {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", a.Time.Format("2006-01-02T15:04:05.000Z"),
				a.Severity, a.State, a.Source, a.Series, oneLine(a.Message))
		}
		tw.Flush()
	}

	fmt.Fprintf(&b, "\noutbox backlog: %d rows, %d bytes\n", st.Outbox.Rows, st.Outbox.Bytes)
	fmt.Fprintln(tw, "  PRIORITY\tROWS\tBYTES\tOLDEST")
	for _, p := range st.Outbox.Backlog {
		oldest := ""
		if p.Oldest != nil {
			oldest = p.Oldest.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\n", p.Priority, p.Rows, p.Bytes, oldest)
	}
	tw.Flush()
	if len(st.Updates) > 0 {
		fmt.Fprintf(&b, "\nupdates:\n")
		fmt.Fprintln(tw, "  TARGET\tKIND\tVERSION\tRELEASE\tSTEP\tTIME\tDETAIL")
		for _, u := range st.Updates {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\n", u.Target, u.Kind, u.Version, u.Release, u.Step, u.Time, oneLine(u.Detail))
		}
		tw.Flush()
	}
	// tabwriter pads empty last cells; drop the trailing blanks.
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

// uptime formats seconds as a duration rounded to the second.
func uptime(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}

func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", " ").Replace(s)
}

// statusFromAPI prints the status a running instance serves on /api/v1/status.
func statusFromAPI(ctx context.Context, base, token string, asJSON bool, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/api/v1/status", nil)
	if err != nil {
		return fmt.Errorf("perch status: --api: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("perch status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("perch status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("perch status: %s: %s: %s", req.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	var d api.StatusDoc
	if err := json.Unmarshal(body, &d); err != nil {
		return fmt.Errorf("perch status: %s: %w", req.URL, err)
	}
	if asJSON {
		_, err := stdout.Write(append(body, '\n'))
		return err
	}
	var b strings.Builder
	state := "starting"
	if d.Ready {
		state = "running"
	}
	fmt.Fprintf(&b, "perch %s/%s: %s, up %s (from %s)\n\n", d.Site, d.Device, state, uptime(d.UptimeSeconds), base)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  MODULE\tKIND\tHEALTH\tIN\tOUT\tFAULTS\tRESTARTS\tQUEUE")
	for _, m := range d.Modules {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", m.Name, m.Kind, m.Health, m.RecordsIn, m.RecordsOut, m.Faults, m.Restarts, m.QueueDepth)
	}
	tw.Flush()
	if len(d.Models) > 0 {
		fmt.Fprintln(&b)
		fmt.Fprintln(tw, "  MODEL\tCARD\tAVAILABLE\tSAMPLES\tALERTS\tERROR")
		for _, m := range d.Models {
			fmt.Fprintf(tw, "  %s\t%s\t%v\t%d\t%d\t%s\n", m.Name, m.Model, m.Available, m.Samples, m.Alerts, oneLine(m.Error))
		}
		tw.Flush()
	}
	if o := d.Outbox; o != nil {
		fmt.Fprintf(&b, "\noutbox: %d rows, %d bytes; bytes in %d, published %d\n", o.Rows, o.Bytes, o.BytesIngested, o.BytesPublished)
	}
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err = io.WriteString(stdout, strings.Join(lines, "\n"))
	return err
}
