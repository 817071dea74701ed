// Package store is Perch's flight recorder: one SQLite database (WAL mode) that holds the records
// the pipeline produced, every lifecycle decision the runtime took, and the modules' state, in a
// documented schema that anyone can open with sqlite3 on the box.
//
// # Overview
//
// The schema is the embedded file schema.sql: one commented file that explains every table,
// column, view and event kind. It is versioned with PRAGMA user_version; [Open] applies the missing
// migrations in one transaction and refuses a database newer than the code ([ErrSchemaTooNew]).
//
// Records arrive as encoded batches of the module ABI (see the sdk/abi package) through
// [Store.Write]. Each kind lands in its table: readings (a bounded ring), summaries, scores,
// alerts and events; numeric fields and string tags are stored as JSON text so that
// json_extract works on them. A single writer goroutine group-commits: everything queued is
// committed in one transaction at most every [Options.CommitInterval] or as soon as
// [Options.MaxBatchRows] rows are pending. The queue is bounded, so a producer that outruns the
// disk blocks in Write (backpressure) instead of growing memory.
//
// Commits use synchronous=FULL: a row is on disk before [Store.Flush] returns, so what Flush
// acknowledged survives kill -9 and power loss. A retention pass, once a minute,
// deletes rows older than [Options.MaxAge] and brings the file back under [Options.MaxBytes],
// dropping readings first and alerts last of all.
//
// With an [Options].Upstream hook, the records that go upstream (and lifecycle events) are also
// inserted into the outbox table in the same transaction that records them, so an alert is in
// the outbox exactly when it is in alerts. The uplink reads it in order of priority then id
// ([Store.OutboxPending]), deletes rows whose PUBACK it saw ([Store.Ack]), and reads the counters
// of bytes ingested, published and dropped ([Store.OutboxStats]). [Options].OutboxMaxBytes is
// the outbox quota: past it a commit drops raw readings, then events, then summaries, oldest
// first, alerts only when nothing else is left, and records an uplink.dropped event.
//
// # Usage
//
//	st, err := store.Open(ctx, store.Options{Path: "/var/lib/perch/perch.db"})
//	if err != nil { ... }
//	defer st.Close()
//
//	batch := abi.Append(nil, abi.KindReading, time.Now().UnixNano(), "bme280", "climate",
//		[]abi.Field{{Name: "temperature_c", Value: 21.5}}, nil)
//	if err := st.Write(batch); err != nil { ... }  // queued; st.Flush(ctx) waits for the commit
//	st.Event(ctx, store.Event{Kind: store.EventModuleStarted, Module: "bme280"})
//
//	// Read-only queries by other packages, and the views for people:
//	rows, err := st.DB().QueryContext(ctx, "SELECT * FROM module_health")
//	store.PrintViews(ctx, os.Stdout, st.DB())
//
// A [Store] is safe for concurrent use by multiple goroutines.
package store
