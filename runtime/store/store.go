package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perch-edge/perch/sdk/abi"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Defaults for the zero values of [Options].
const (
	DefaultReadingsMaxRows = 100_000
	DefaultMaxAge          = 7 * 24 * time.Hour
	DefaultMaxBytes        = 256 << 20 // bytes
	DefaultCommitInterval  = 50 * time.Millisecond
	DefaultMaxBatchRows    = 1000
)

// RetentionInterval is how often the writer runs a retention pass on its own.
const RetentionInterval = time.Minute

const (
	// busyTimeoutMS is how long a statement waits for a lock another connection holds (an
	// operator's sqlite3, say) before it fails with SQLITE_BUSY.
	busyTimeoutMS = 5000
	// queueLen bounds the writer's queue, in requests (a batch, an event, a flush). The queue
	// is also bounded in rows (see rowBudget), which is what blocks first unless the batches
	// are of a row or two: a full queue blocks Write, the backpressure on producers that
	// outrun the disk.
	queueLen = 1024
	// queuedBatches is how many group commits' worth of rows (MaxBatchRows each) may wait in
	// the queue: enough that the writer finds a full commit queued when it finishes one, few
	// enough that an alert waits behind few commits of rows queued before it. Batches with
	// an alert may take twice as many (see rowBudget.acquire).
	queuedBatches = 1
)

// Errors returned by the store.
var (
	// ErrClosed is returned (possibly wrapped) by every method called after [Store.Close].
	ErrClosed = errors.New("store: closed")
	// ErrSchemaTooNew is wrapped by [Open] when the database's user_version is newer than the
	// migrations this build knows.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this build of perch")
)

// Event kinds written by the runtime; schema.sql documents each (message, fields).
const (
	EventModuleStarted     = "module.started"
	EventModuleFault       = "module.fault"
	EventModuleRestart     = "module.restart"
	EventModuleQuarantined = "module.quarantined"
	EventModuleStopped     = "module.stopped"
	EventConfigLoaded      = "config.loaded"
	EventStoreMigrated     = "store.migrated"
	EventStoreRetention    = "store.retention"
)

// Options configures [Open]. The zero value of every field but Path selects its default.
type Options struct {
	// Path is the database file. Its directory must exist; the file is created if missing.
	Path string
	// ReadingsMaxRows bounds the readings table, a ring: past it the oldest rows are deleted.
	// Zero means DefaultReadingsMaxRows (100000).
	ReadingsMaxRows int
	// MaxAge is how long readings, summaries, scores and events are kept. Zero means
	// DefaultMaxAge (7 days); a negative value keeps them until the disk quota needs the space.
	// Alerts are never deleted by age.
	MaxAge time.Duration
	// MaxBytes is the disk quota of the database file and its WAL together, in bytes, enforced
	// by each retention pass (between two passes the file may grow past it). Zero means
	// DefaultMaxBytes (256 MiB); a negative value means no quota.
	MaxBytes int64
	// CommitInterval is the longest a queued row waits for its group commit. Zero means
	// DefaultCommitInterval (50 ms).
	CommitInterval time.Duration
	// MaxBatchRows commits at once when this many rows are pending, without waiting for
	// CommitInterval. Zero means DefaultMaxBatchRows (1000).
	MaxBatchRows int
	// Logger receives failed commits and retention passes. Nil discards them.
	Logger *slog.Logger
	// Upstream, if set, is called for each record the writer inserts (and each lifecycle event,
	// as an event record whose source is the module and series the kind); the records it sends
	// upstream are inserted into the outbox in the same transaction. Nil means no uplink.
	// With a hook, a batch that holds an alert is committed at once (with whatever else is
	// queued), not after CommitInterval: alerts reach the broker in about a millisecond.
	Upstream UpstreamFunc
	// OutboxMaxBytes is the outbox quota, in payload bytes: past it, each commit drops the
	// lowest-priority, oldest rows (alerts last) and records an uplink.dropped event. Zero or
	// negative means no quota.
	OutboxMaxBytes int64
}

// withDefaults fills in the zero values and checks the rest, reporting every problem at once.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.Path == "" {
		errs = append(errs, errors.New("store: Options.Path is empty"))
	}
	if o.ReadingsMaxRows < 0 {
		errs = append(errs, fmt.Errorf("store: Options.ReadingsMaxRows is negative (%d)", o.ReadingsMaxRows))
	}
	if o.CommitInterval < 0 {
		errs = append(errs, fmt.Errorf("store: Options.CommitInterval is negative (%v)", o.CommitInterval))
	}
	if o.MaxBatchRows < 0 {
		errs = append(errs, fmt.Errorf("store: Options.MaxBatchRows is negative (%d)", o.MaxBatchRows))
	}
	if o.ReadingsMaxRows == 0 {
		o.ReadingsMaxRows = DefaultReadingsMaxRows
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.CommitInterval == 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.MaxBatchRows == 0 {
		o.MaxBatchRows = DefaultMaxBatchRows
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, errors.Join(errs...)
}

// Event is one lifecycle decision to record with [Store.Event].
type Event struct {
	TimeNS  int64          // when it happened, ns since the Unix epoch; 0 means now
	Kind    string         // such as EventModuleFault; required
	Module  string         // the module it is about; "" for the whole runtime
	Message string         // human-readable detail, such as a fault's reason
	Fields  map[string]any // details, stored as a JSON object; must marshal with encoding/json
}

// Stats are the store's counters since Open. Every field counts rows unless its name says
// otherwise.
type Stats struct {
	RowsWritten      uint64 // rows committed, all tables
	Commits          uint64 // group commits that succeeded
	Skipped          uint64 // records of a kind this store does not know, skipped
	FailedRows       uint64 // rows lost because their commit failed (reported by the next Flush)
	FailedCommits    uint64 // group commits that failed after their retries
	RingDeleted      uint64 // readings deleted to keep the ring under ReadingsMaxRows
	RetentionDeleted uint64 // rows deleted by retention passes (age and disk quota)
	RetentionPasses  uint64 // retention passes run, whether they deleted anything or not
	Checkpoints      uint64 // WAL checkpoints the background checkpointer ran (passes, not rows)
}

// Store is an open flight recorder. It is safe for concurrent use by multiple goroutines. Close
// it when done.
type Store struct {
	opts Options
	log  *slog.Logger
	rw   *sql.DB // the one connection that writes: the writer goroutine, state and meta
	ro   *sql.DB // read-only connections: DB() and GetState
	ck   *sql.DB // the checkpointer's connection

	wal     walWatch      // the WAL of rw's connection, for the writer
	walFree bool          // set by the writer when rw's connection no longer has wal's hook
	ckWake  chan struct{} // wakes the checkpointer; closed by the writer when it stops
	ckDone  chan struct{} // closed by the checkpointer when it has returned

	queue   chan request
	budget  rowBudget    // the rows in queue
	mu      sync.RWMutex // held for reading while sending on queue; Close takes it to set closed
	closed  bool
	stop    chan struct{} // closed by Close: the writer drains the queue and returns
	stopped chan struct{} // closed by the writer when it has returned
	runErr  error         // the writer's last failure, set before stopped is closed

	closeOnce sync.Once
	closeErr  error

	rowsWritten, commits, skipped, failedRows, failedCommits atomic.Uint64
	ringDeleted, retentionDeleted, retentionPasses           atomic.Uint64
	checkpoints                                              atomic.Uint64

	outboxReady chan struct{} // see OutboxNotify
}

// request is one entry of the writer's queue.
type request struct {
	batch  []byte     // records to insert: a copy, decoded without error by Write
	rows   int        // rows it adds: known records in batch, or 1 for an event
	event  *eventRow  // or an event to insert
	reply  chan error // for Flush and Retain: answered once everything queued before is committed
	retain bool       // run a retention pass before replying
	urgent bool       // commit without waiting for CommitInterval (an alert that goes upstream)
}

// Open opens (creating if needed) the database at opts.Path, migrates its schema to the latest
// version in one transaction, and starts the writer goroutine. A database whose user_version is
// newer than this build knows is refused with an error wrapping [ErrSchemaTooNew].
func Open(ctx context.Context, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	rw, err := sql.Open("sqlite3", writerDSN(opts.Path))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", opts.Path, err)
	}
	// One connection: writes never wait on each other inside SQLite (whose busy handler polls),
	// they queue in database/sql instead.
	rw.SetMaxOpenConns(1)
	rw.SetMaxIdleConns(1)
	if err := checkWAL(ctx, rw); err != nil {
		rw.Close()
		return nil, fmt.Errorf("store: open %s: %w", opts.Path, err)
	}
	from, to, err := migrate(ctx, rw, migrations)
	if err != nil {
		rw.Close()
		return nil, fmt.Errorf("store: open %s: %w", opts.Path, err)
	}
	ro, err := sql.Open("sqlite3", readOnlyDSN(opts.Path))
	if err != nil {
		rw.Close()
		return nil, fmt.Errorf("store: open %s read-only: %w", opts.Path, err)
	}
	ro.SetMaxOpenConns(4)
	ro.SetMaxIdleConns(2)
	if err := ro.PingContext(ctx); err != nil {
		ro.Close()
		rw.Close()
		return nil, fmt.Errorf("store: open %s read-only: %w", opts.Path, err)
	}
	// The checkpointer's connection: it copies the WAL into the database file beside the
	// writer (SQLite lets one checkpoint run while one transaction writes), so that commits
	// do not stop for it. The same settings as the writer's: synchronous=FULL fsyncs what a
	// checkpoint copies before the WAL starts over.
	ck, err := sql.Open("sqlite3", writerDSN(opts.Path))
	if err == nil {
		ck.SetMaxOpenConns(1)
		ck.SetMaxIdleConns(1)
		err = ck.PingContext(ctx)
	}
	if err != nil {
		if ck != nil {
			ck.Close()
		}
		ro.Close()
		rw.Close()
		return nil, fmt.Errorf("store: open %s for checkpoints: %w", opts.Path, err)
	}
	s := &Store{
		opts:    opts,
		log:     opts.Logger,
		rw:      rw,
		ro:      ro,
		ck:      ck,
		wal:     newWALWatch(walBackstopFrames),
		ckWake:  make(chan struct{}, 1),
		ckDone:  make(chan struct{}),
		queue:   make(chan request, queueLen),
		budget:  rowBudget{max: queuedBatches * opts.MaxBatchRows},
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),

		outboxReady: make(chan struct{}, 1),
	}
	if from != to {
		s.log.Info("store: migrated schema", "path", opts.Path, "from", from, "to", to)
	}
	go s.checkpointer()
	go s.run()
	return s, nil
}

// Checkpoints of the WAL: the checkpointer runs one each time the writer's commits have added
// walCheckpointFrames frames (pages) to the WAL, as SQLite's wal_autocheckpoint would inside a
// commit. The WAL starts over only when a transaction begins with every frame copied, which
// the writer's next commit usually prevents while the checkpointer copies: under a sustained
// load the WAL grows to walBackstopFrames (16 MiB of 4 KiB pages), where the writer's
// connection checkpoints what is left itself (a short stall: most frames are copied already).
const (
	walCheckpointFrames = 1000 // SQLite's default wal_autocheckpoint
	walBackstopFrames   = 4 * walCheckpointFrames
)

// checkpointer runs a PASSIVE checkpoint, which never waits for the writer nor makes it wait, on
// its own connection each time the writer wakes it, until ckWake is closed.
func (s *Store) checkpointer() {
	defer close(s.ckDone)
	for range s.ckWake {
		var busy, frames, copied int
		err := s.ck.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
		if err != nil {
			s.log.Warn("store: checkpoint failed", "err", err)
			continue
		}
		s.checkpoints.Add(1)
	}
}

// writerDSN is the connection string of the connection that commits.
//
//   - journal_mode=WAL: readers (sqlite3 on the box, DB()) never block the writer nor it them.
//   - synchronous=FULL: every commit fsyncs the WAL, so a row is on disk when Flush returns and
//     survives a power cut, not only kill -9. The recorder is what we acknowledge to operators,
//     so we pay for it: NORMAL is several times faster per commit (no fsync until a checkpoint)
//     but can lose the last commits on power loss. Group commit makes the fsync cost per
//     transaction, not per row.
//   - busy_timeout: wait that long for a lock held by another process before SQLITE_BUSY.
//   - foreign_keys=ON: enforce the foreign keys later migrations declare.
//   - _txlock=immediate: BEGIN takes the write lock at once, so a transaction never fails
//     halfway when it upgrades from read to write.
//   - auto_vacuum=INCREMENTAL: takes effect only when the file is created (before the first
//     table); it lets retention give deleted space back to the file system.
func writerDSN(path string) string {
	return fileURI(path) + "?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=1&_txlock=immediate" +
		fmt.Sprintf("&_busy_timeout=%d", busyTimeoutMS) + "&_auto_vacuum=incremental"
}

// readOnlyDSN is the connection string of read-only connections: SQLite refuses any write.
func readOnlyDSN(path string) string {
	return fileURI(path) + fmt.Sprintf("?mode=ro&_busy_timeout=%d", busyTimeoutMS)
}

// fileURI makes path a SQLite URI filename, escaping the characters that a URI reserves.
func fileURI(path string) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath()
}

// checkWAL makes sure the database is in WAL mode: setting it fails quietly on file systems
// without shared memory.
func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, not wal (does the file system support it?)", mode)
	}
	return nil
}

// Write queues an encoded batch of records (see the sdk/abi package) for the next group commit.
// It copies the batch: the caller may reuse it as soon as Write returns. Each record lands in
// the table of its kind; records of a kind the store does not know are counted in
// [Stats].Skipped and skipped.
//
// Write returns once the batch is queued, not committed: call [Store.Flush] to wait for the
// commit. It blocks while the queue is full (backpressure). A batch that does not decode is
// an error that names the byte offset of the bad record (it wraps an *abi.DecodeError); the
// records before it are still stored. After Close, Write returns an error wrapping
// [ErrClosed]. Write is safe for concurrent use.
func (s *Store) Write(batch []byte) error {
	// An alert that goes upstream is committed at once, not after CommitInterval: its latency
	// to the broker matters more than the batching.
	sc := batchScans.Get().(*batchScan)
	sc.alert = false
	var scan func(*abi.Record) error
	if s.opts.Upstream != nil {
		scan = sc.scan
	}
	rows, skipped, decodeErr := walk(batch, &sc.it, scan)
	urgent := sc.alert
	sc.it = abi.Iter{} // do not keep batch alive
	batchScans.Put(sc)
	valid := len(batch)
	var de *abi.DecodeError
	if errors.As(decodeErr, &de) {
		valid = de.Offset
	}
	var err error
	if rows > 0 {
		err = s.send(context.Background(), request{batch: bytes.Clone(batch[:valid]), rows: rows, urgent: urgent})
	} else {
		err = s.checkOpen()
	}
	if err != nil {
		return err
	}
	s.skipped.Add(uint64(skipped))
	if decodeErr != nil {
		return fmt.Errorf("store: bad batch, kept the %d records before it: %w", rows, decodeErr)
	}
	return nil
}

// batchScan is what Write needs to walk a batch: an iterator, and whether the batch holds an
// alert. Write takes one from batchScans, so that walking allocates nothing.
type batchScan struct {
	it    abi.Iter
	alert bool
}

var batchScans = sync.Pool{New: func() any { return new(batchScan) }}

func (b *batchScan) scan(r *abi.Record) error {
	b.alert = b.alert || r.Kind == abi.KindAlert
	return nil
}

// Event queues a lifecycle event for the next group commit, in order with the batches queued
// before it. It returns once the event is queued; [Store.Flush] waits for the commit. It fails
// if e.Kind is empty or e.Fields does not marshal to JSON. Event is safe for concurrent use.
func (s *Store) Event(ctx context.Context, e Event) error {
	if e.Kind == "" {
		return errors.New("store: event without a kind")
	}
	fields := []byte("{}")
	if len(e.Fields) > 0 {
		var err error
		if fields, err = json.Marshal(e.Fields); err != nil {
			return fmt.Errorf("store: event %s: fields: %w", e.Kind, err)
		}
	}
	if e.TimeNS == 0 {
		e.TimeNS = time.Now().UnixNano()
	}
	row := &eventRow{timeNS: e.TimeNS, kind: e.Kind, module: e.Module, message: e.Message,
		fields: string(fields), tags: "{}"}
	if s.opts.Upstream != nil {
		row.upstream = eventRecord(&e)
	}
	return s.send(ctx, request{event: row, rows: 1})
}

// Flush returns once every batch and event queued before the call is committed, or with the
// context's error. If a group commit failed since the previous Flush returned, Flush returns
// that error (the rows are counted in [Stats].FailedRows). Use it in tests and on shutdown.
func (s *Store) Flush(ctx context.Context) error {
	return s.roundTrip(ctx, request{})
}

// Retain commits what is queued and runs a retention pass now (the writer also runs one every
// [RetentionInterval]): rows older than MaxAge go, then, if the file and its WAL exceed
// MaxBytes, the oldest readings, scores, summaries, events and alerts, in that order. A pass that
// deleted anything records a store.retention event.
func (s *Store) Retain(ctx context.Context) error {
	return s.roundTrip(ctx, request{retain: true})
}

// roundTrip queues r with a reply channel and waits for the writer's answer.
func (s *Store) roundTrip(ctx context.Context, r request) error {
	r.reply = make(chan error, 1)
	if err := s.send(ctx, r); err != nil {
		return err
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send queues r, blocking while the queue is full, in requests or in rows.
func (s *Store) send(ctx context.Context, r request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	// Close waits for this send (it takes mu), and the writer keeps taking requests off the
	// queue, releasing their rows, until Close has it stop: the wait ends.
	if err := s.budget.acquire(ctx, r.rows, r.urgent); err != nil {
		return err
	}
	select {
	case s.queue <- r:
		return nil
	case <-ctx.Done():
		s.budget.release(r.rows)
		return ctx.Err()
	}
}

// dequeued is called by the writer for each request it takes off the queue.
func (s *Store) dequeued(r request) request {
	s.budget.release(r.rows)
	return r
}

// rowBudget bounds the rows of the requests in the writer's queue: a Write waits while its rows
// would take the queue past max. A batch of more than max rows goes in alone, when the queue
// holds no rows. It is safe for concurrent use.
type rowBudget struct {
	mu      sync.Mutex
	max     int
	used    int           // rows queued
	waiters int           // acquires waiting on freed
	freed   chan struct{} // closed when rows are released while someone waits; then replaced
}

// acquire takes n rows from the budget, waiting until they fit or ctx is done. A batch with an
// alert (urgent) may take the queue to twice max: it does not wait behind a queue that other
// batches filled (it is committed with them at once), yet a storm of alerts is bounded too.
func (b *rowBudget) acquire(ctx context.Context, n int, urgent bool) error {
	if n <= 0 {
		return nil
	}
	limit := b.max
	if urgent {
		limit *= 2
	}
	b.mu.Lock()
	for b.used > 0 && b.used+n > limit {
		if b.freed == nil {
			b.freed = make(chan struct{})
		}
		freed := b.freed
		b.waiters++
		b.mu.Unlock()
		var err error
		select {
		case <-freed:
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		b.waiters--
		if err != nil {
			b.mu.Unlock()
			return err
		}
	}
	b.used += n
	b.mu.Unlock()
	return nil
}

// release returns n rows to the budget and wakes the acquires that wait.
func (b *rowBudget) release(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.waiters > 0 && b.freed != nil {
		close(b.freed)
		b.freed = nil
	}
	b.mu.Unlock()
}

func (s *Store) checkOpen() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Close commits everything queued, stops the writer, checkpoints the WAL into the database
// file and closes the connections. It returns a failed group commit that no Flush reported yet.
// Later calls return the first call's result. Methods called after Close return an error
// wrapping [ErrClosed]; [Store.Stats] still works.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock() // waits for senders in flight: the writer is still draining the queue
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		<-s.stopped
		s.closeErr = errors.Join(s.runErr, s.ro.Close(), s.rw.Close(), s.ck.Close())
		if s.walFree {
			s.wal.free()
		}
	})
	return s.closeErr
}

// DB returns a pool of read-only connections for queries by other packages (SQLite refuses
// writes on them). It is safe for concurrent use; do not close it: Close does.
func (s *Store) DB() *sql.DB { return s.ro }

// Stats returns the counters. It is safe to call at any time, also after Close.
func (s *Store) Stats() Stats {
	return Stats{
		RowsWritten:      s.rowsWritten.Load(),
		Commits:          s.commits.Load(),
		Skipped:          s.skipped.Load(),
		FailedRows:       s.failedRows.Load(),
		FailedCommits:    s.failedCommits.Load(),
		RingDeleted:      s.ringDeleted.Load(),
		RetentionDeleted: s.retentionDeleted.Load(),
		RetentionPasses:  s.retentionPasses.Load(),
		Checkpoints:      s.checkpoints.Load(),
	}
}
