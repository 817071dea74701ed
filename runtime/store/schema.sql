-- Perch flight recorder: the schema of the SQLite database the runtime writes.
--
-- This file is the documentation of the database: open the database file on the box with
--
--     sqlite3 -readonly path/to/perch.db
--
-- and every table, column and view below is what you see (`.schema` shows the column comments
-- too).
-- `perch db` prints the views without sqlite3.
--
-- Conventions used by every table
--
--   id       INTEGER PRIMARY KEY: the order in which the runtime inserted rows. "Oldest" in
--            this file means "lowest id".
--   time_ns  when the thing happened, in nanoseconds since the Unix epoch (UTC), as the record's
--            producer stamped it. To read it:
--                strftime('%Y-%m-%dT%H:%M:%fZ', time_ns / 1000000 / 1000.0, 'unixepoch')
--   source   the module (or host component) that produced the record.
--   series   the name of the measurement or stream, such as 'temperature'.
--   fields   a JSON object of the record's numeric fields, such as {"temperature_c":21.5}.
--            Query one with json_extract(fields, '$.temperature_c'). A NaN is stored as null,
--            an infinity as 9e999 (what SQLite itself writes for it). When a record repeats a
--            name, the first value is kept.
--   tags     a JSON object of the record's string tags, such as {"room":"lab"}; same rules.
--            Bytes that are not UTF-8 are replaced by U+FFFD.
--
-- Text columns are never NULL: a missing value is ''. fields and tags are '{}' when empty.
--
-- Versioning and migrations
--
--   PRAGMA user_version holds the number of the last migration applied. The runtime applies the
--   missing migrations below, in order and in one transaction, when it opens the database, and
--   refuses a database whose user_version is newer than it knows. Each migration starts with a
--   line "-- migration N: title"; never edit a migration that has shipped, append a new one.
--   The database is created with PRAGMA auto_vacuum = INCREMENTAL and journal_mode = WAL, so the
--   retention pass can give the space of deleted rows back to the file system.
--
-- Retention
--
--   readings is a ring: the runtime keeps at most ReadingsMaxRows rows (default 100000) and
--   deletes the oldest when it inserts more. Once a minute a retention pass deletes rows older
--   than MaxAge (default 7 days) from readings, summaries, scores and events; then, if the file
--   and its WAL together exceed MaxBytes (default 256 MiB), it deletes the oldest readings, then
--   scores, then summaries, then events and, last of all, alerts. Alerts are never deleted by
--   age. Each pass that deleted anything records a 'store.retention' event.

-- migration 1: initial schema

-- readings: raw samples from driver and filter modules (record kind 'reading').
-- A bounded ring, see Retention above.
CREATE TABLE readings (
    id      INTEGER PRIMARY KEY,      -- insertion order; the ring deletes the lowest first
    time_ns INTEGER NOT NULL,         -- sample time, ns since the Unix epoch
    source  TEXT    NOT NULL,         -- module that emitted it
    series  TEXT    NOT NULL,         -- measurement name
    fields  TEXT    NOT NULL DEFAULT '{}', -- JSON object of numeric fields
    tags    TEXT    NOT NULL DEFAULT '{}'  -- JSON object of string tags
);
CREATE INDEX readings_time ON readings (time_ns); -- retention by age

-- summaries: aggregates over a window, such as a minute's mean and max (record kind 'summary').
CREATE TABLE summaries (
    id      INTEGER PRIMARY KEY,      -- insertion order
    time_ns INTEGER NOT NULL,         -- time the summary stands for (usually its window's end)
    source  TEXT    NOT NULL,         -- module that emitted it
    series  TEXT    NOT NULL,         -- name of the summarised series
    fields  TEXT    NOT NULL DEFAULT '{}', -- JSON object, such as {"mean":21.4,"max":22.0}
    tags    TEXT    NOT NULL DEFAULT '{}'  -- JSON object of string tags, such as {"window":"1m"}
);
CREATE INDEX summaries_time ON summaries (time_ns); -- retention by age

-- scores: anomaly scores from model nodes (record kind 'score').
CREATE TABLE scores (
    id      INTEGER PRIMARY KEY,      -- insertion order
    time_ns INTEGER NOT NULL,         -- time of the scored sample or window
    source  TEXT    NOT NULL,         -- model node that scored it
    series  TEXT    NOT NULL,         -- scored series
    fields  TEXT    NOT NULL DEFAULT '{}', -- JSON object, such as {"score":0.93,"threshold":0.8}
    tags    TEXT    NOT NULL DEFAULT '{}'  -- JSON object, such as {"model":"ae-int8"}
);
CREATE INDEX scores_time ON scores (time_ns); -- retention by age

-- alerts: what rule modules raised (record kind 'alert'). The last rows ever deleted: never by
-- age, and by the disk quota only when nothing else is left to delete.
CREATE TABLE alerts (
    id       INTEGER PRIMARY KEY,     -- insertion order
    time_ns  INTEGER NOT NULL,        -- time of the condition, ns since the Unix epoch
    source   TEXT    NOT NULL,        -- module that raised it
    series   TEXT    NOT NULL,        -- what the alert is about, such as 'overheat'
    severity TEXT    NOT NULL DEFAULT 'warning', -- the record's tag 'severity', 'warning' if absent
    message  TEXT    NOT NULL DEFAULT '',        -- the record's tag 'message'
    fields   TEXT    NOT NULL DEFAULT '{}', -- JSON object of numeric fields
    tags     TEXT    NOT NULL DEFAULT '{}'  -- JSON object of all the record's tags
                                            -- (severity and message included)
);
CREATE INDEX alerts_time ON alerts (time_ns); -- recent_alerts

-- events: every decision the runtime took, and events that modules emitted (record kind
-- 'event'; for those, kind is the record's series and module its source).
--
-- Event kinds written by the runtime (module is the module's name unless noted):
--   module.started      a module instance started; message: its version or digest
--   module.fault        a module trapped, overran its deadline, broke a quota or returned an
--                       error; message: the reason (such as 'deadline exceeded' or 'exit 0xbad1')
--   module.restart      the supervisor restarts a faulted module; fields: {"attempt":n,
--                       "backoff_ms":n}
--   module.quarantined  the module faulted too often and is stopped until an operator acts;
--                       message: why. A later module.started ends the quarantine.
--   module.stopped      a module was stopped on purpose (shutdown, hot swap, removal)
--   config.loaded       the runtime loaded its configuration; module: ''; message: the file
--   store.migrated      this database was migrated; module: ''; fields: {"from":n,"to":n}
--   store.retention     a retention pass deleted rows; module: ''; fields: the rows deleted per
--                       table, "max_age_s" and the file's "bytes_before" and "bytes_after"
-- Other components add kinds named <component>.<what>, such as update.staged.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,      -- insertion order
    time_ns INTEGER NOT NULL,         -- when it happened, ns since the Unix epoch
    kind    TEXT    NOT NULL,         -- what happened, see the list above
    module  TEXT    NOT NULL DEFAULT '', -- the module it is about, '' for the whole runtime
    message TEXT    NOT NULL DEFAULT '', -- human-readable detail, such as a fault's reason
    fields  TEXT    NOT NULL DEFAULT '{}', -- JSON object with details (numbers, strings)
    tags    TEXT    NOT NULL DEFAULT '{}'  -- JSON object of string tags (module events)
);
CREATE INDEX events_time ON events (time_ns);                      -- retention by age
CREATE INDEX events_module_kind ON events (module, kind, time_ns); -- module_health

-- module_state: the small key/value state each module keeps across restarts (perch:state/v1).
CREATE TABLE module_state (
    module     TEXT    NOT NULL,      -- module name
    key        TEXT    NOT NULL,      -- the module's key
    value      BLOB    NOT NULL,      -- the module's bytes, opaque to the runtime
    updated_ns INTEGER NOT NULL,      -- last write, ns since the Unix epoch
    PRIMARY KEY (module, key)
) WITHOUT ROWID;

-- meta: facts about this box and database, such as 'runtime_version', 'site', 'device'.
CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- recent_alerts: alerts of the last 24 hours, newest first.
CREATE VIEW recent_alerts AS
SELECT
    strftime('%Y-%m-%dT%H:%M:%fZ', time_ns / 1000000 / 1000.0, 'unixepoch') AS time, -- UTC
    severity,
    source,
    series,
    message,
    fields,
    json_remove(tags, '$.severity', '$.message') AS tags, -- the tags not shown already
    id                                                    -- the row in alerts
FROM alerts
WHERE time_ns >= (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000000000
ORDER BY time_ns DESC, id DESC;

-- module_health: one row per module that has lifecycle events, from the events table.
--   last_started       time of the last module.started (ISO 8601, UTC)
--   last_fault         time of the last module.fault
--   last_fault_reason  message of the last module.fault
--   faults_1h          module.fault events in the last hour
--   restarts_1h        module.restart events in the last hour
--   quarantined        1 if the last module.quarantined is later than the last module.started
CREATE VIEW module_health AS
WITH per_module AS (
    SELECT
        module,
        max(CASE WHEN kind = 'module.started' THEN time_ns END)     AS started_ns,
        max(CASE WHEN kind = 'module.fault' THEN time_ns END)       AS fault_ns,
        max(CASE WHEN kind = 'module.quarantined' THEN time_ns END) AS quarantined_ns,
        sum(kind = 'module.fault' AND time_ns >= hour_ago)          AS faults_1h,
        sum(kind = 'module.restart' AND time_ns >= hour_ago)        AS restarts_1h
    FROM events,
        (SELECT (CAST(strftime('%s', 'now') AS INTEGER) - 3600) * 1000000000 AS hour_ago)
    WHERE module <> ''
      AND kind IN ('module.started', 'module.fault', 'module.restart', 'module.quarantined')
    GROUP BY module
)
SELECT
    module,
    strftime('%Y-%m-%dT%H:%M:%fZ', started_ns / 1000000 / 1000.0, 'unixepoch') AS last_started,
    strftime('%Y-%m-%dT%H:%M:%fZ', fault_ns / 1000000 / 1000.0, 'unixepoch')   AS last_fault,
    (SELECT e.message FROM events AS e
      WHERE e.module = per_module.module AND e.kind = 'module.fault'
      ORDER BY e.time_ns DESC, e.id DESC LIMIT 1)                             AS last_fault_reason,
    faults_1h,
    restarts_1h,
    (quarantined_ns IS NOT NULL AND (started_ns IS NULL OR quarantined_ns > started_ns))
                                                                             AS quarantined
FROM per_module
ORDER BY module;

-- migration 2: outbox

-- outbox: the messages waiting to go upstream over MQTT, the only source of truth of the uplink.
-- A record that goes upstream is inserted here in the same transaction that records it (an alert
-- is in outbox exactly when it is in alerts, until the broker acknowledged it). A row leaves
-- when the uplink has seen the broker's PUBACK for it, or when the outbox quota drops it (see
-- uplink.dropped below). The uplink sends rows in order of (priority, id): a new alert goes
-- before older summaries and events. Retention passes never delete outbox rows: the outbox quota
-- (Options.OutboxMaxBytes, uplink.outbox_max_bytes) bounds it.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- the message id in the payload ("id"); never
                                      -- reused, even once the outbox is empty
    priority   INTEGER NOT NULL,      -- 0 alert, 1 summary, 2 event, 3 raw reading
    topic      TEXT    NOT NULL,      -- MQTT topic, such as 'perch/site/device/alerts'
    payload    BLOB    NOT NULL,      -- JSON object without its "id" member: the uplink adds it
    bytes      INTEGER NOT NULL,      -- length of payload, for the quota
    created_ns INTEGER NOT NULL       -- when it was queued, ns since the Unix epoch
);
CREATE INDEX outbox_order ON outbox (priority, id); -- the uplink's reading order

-- uplink_counters: one row (id 1) of running totals since the database was created.
--   bytes_ingested   bytes of the record batches the pipeline recorded (encoded ABI records)
--   bytes_published  payload bytes of outbox rows the broker acknowledged
--   rows_published   outbox rows the broker acknowledged
--   rows_dropped     outbox rows the quota dropped before they were sent
--   bytes_dropped    their payload bytes
--   outbox_rows      rows now in outbox
--   outbox_bytes     payload bytes now in outbox (what the quota counts)
--   day_start_ns     the UTC day of day_bytes: its midnight, ns since the Unix epoch
--   day_bytes        payload bytes acknowledged that day (the uplink's daily budget)
--
-- Event kind written with the outbox:
--   uplink.dropped   the outbox quota dropped rows, lowest priority first and oldest first
--                    (raw readings, then events, then summaries; alerts only when nothing else
--                    is left); fields: {"readings":n,"events":n,"summaries":n,"alerts":n,
--                    "bytes":n,"outbox_max_bytes":n}
CREATE TABLE uplink_counters (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    bytes_ingested  INTEGER NOT NULL DEFAULT 0,
    bytes_published INTEGER NOT NULL DEFAULT 0,
    rows_published  INTEGER NOT NULL DEFAULT 0,
    rows_dropped    INTEGER NOT NULL DEFAULT 0,
    bytes_dropped   INTEGER NOT NULL DEFAULT 0,
    outbox_rows     INTEGER NOT NULL DEFAULT 0,
    outbox_bytes    INTEGER NOT NULL DEFAULT 0,
    day_start_ns    INTEGER NOT NULL DEFAULT 0,
    day_bytes       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO uplink_counters (id) VALUES (1);

-- outbox_backlog: what waits to go upstream, per priority.
CREATE VIEW outbox_backlog AS
SELECT
    priority,
    CASE priority WHEN 0 THEN 'alerts' WHEN 1 THEN 'summaries' WHEN 2 THEN 'events'
        ELSE 'readings' END                                                  AS what,
    count(*)                                                                 AS rows,
    sum(bytes)                                                               AS bytes,
    strftime('%Y-%m-%dT%H:%M:%fZ', min(created_ns) / 1000000 / 1000.0, 'unixepoch') AS oldest
FROM outbox
GROUP BY priority
ORDER BY priority;

-- migration 3: updates
-- update_journal: every step of the update agent (runtime/update), appended as it happens and
-- committed before the next step starts, so that after a power cut the agent knows where it
-- was: a target whose last step is neither committed, rolled_back nor failed was interrupted,
-- and the box runs what `installed` says.
--   step: found | downloaded | staged | swapped | committed | rolled_back | failed | skipped
CREATE TABLE update_journal (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns INTEGER NOT NULL,          -- when, ns since the Unix epoch
    target  TEXT    NOT NULL,          -- the TUF target name, such as 'modules/thermo'
    kind    TEXT    NOT NULL,          -- module, model, deployment or firmware
    version TEXT    NOT NULL,
    release INTEGER NOT NULL,          -- the target's release counter
    digest  TEXT    NOT NULL,          -- the OCI manifest digest the TUF target pins
    step    TEXT    NOT NULL,
    detail  TEXT    NOT NULL DEFAULT '' -- why, how long, what failed
);
CREATE INDEX update_journal_target ON update_journal (target, id);

-- installed: what the box runs in place of its config, per target: written when an update is
-- committed. At start the runtime re-verifies each file by its hash before using it.
CREATE TABLE installed (
    target       TEXT PRIMARY KEY,     -- the TUF target name
    kind         TEXT    NOT NULL,
    name         TEXT    NOT NULL,     -- what it replaces: the module's name in the config
    version      TEXT    NOT NULL,
    release      INTEGER NOT NULL,
    digest       TEXT    NOT NULL,     -- the OCI manifest digest
    path         TEXT    NOT NULL,     -- the installed file
    sha256       TEXT    NOT NULL,     -- of that file, hex
    manifest     TEXT    NOT NULL,     -- a module's manifest (YAML), as the artifact carried it
    installed_ns INTEGER NOT NULL
);

-- update_status: the last step of every target the agent has seen.
CREATE VIEW update_status AS
SELECT
    j.target, j.kind, j.version, j.release, j.step, j.detail,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.time_ns / 1000000 / 1000.0, 'unixepoch') AS time
FROM update_journal j
WHERE j.id = (SELECT max(id) FROM update_journal WHERE target = j.target)
ORDER BY j.id DESC;
