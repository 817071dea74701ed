package store

/*
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// The SQLite API calls used here, from the SQLite that github.com/mattn/go-sqlite3 compiles into
// the binary (declared rather than included: the header is in that module, not here).
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
extern int sqlite3_bind_int64(sqlite3_stmt*, int, long long);
extern int sqlite3_bind_text(sqlite3_stmt*, int, const char*, int, void (*)(void*));
extern int sqlite3_bind_blob(sqlite3_stmt*, int, const void*, int, void (*)(void*));
extern int sqlite3_step(sqlite3_stmt*);
extern int sqlite3_reset(sqlite3_stmt*);
extern int sqlite3_clear_bindings(sqlite3_stmt*);
extern sqlite3 *sqlite3_db_handle(sqlite3_stmt*);
extern long long sqlite3_last_insert_rowid(sqlite3*);
extern const char *sqlite3_errmsg(sqlite3*);
extern void *sqlite3_wal_hook(sqlite3*, int (*)(void*, sqlite3*, const char*, int), void*);
extern int sqlite3_wal_checkpoint_v2(sqlite3*, const char*, int, int*, int*);
extern int sqlite3_wal_autocheckpoint(sqlite3*, int);

// One bound parameter: an integer (kind 0: v), or text (kind 1) or a blob (kind 2) of len bytes
// at off in the arena. It matches bulkParam on the Go side.
typedef struct {
	int64_t v;
	int32_t off;
	int32_t len;
	int32_t kind;
	int32_t pad;
} perch_param;

// perch_exec binds n parameters to st (parameter i+1 from p[i]), steps it once, and resets it
// and clears its bindings, so that it keeps no pointer into the arena (the caller's memory) after
// it returns. Text and blobs are bound SQLITE_STATIC: SQLite reads them from the arena during the
// step instead of copying each one. It returns the SQLite result code (SQLITE_OK, 0, once the
// statement ran to completion; else the error's message is in errbuf) and sets *rowid to the
// connection's last inserted rowid.
static int perch_exec(sqlite3_stmt *st, const char *arena, const perch_param *p, int n, long long *rowid,
		char *errbuf, int errlen) {
	static const char empty[1] = "";
	int rc = 0; // SQLITE_OK
	for (int i = 0; i < n && rc == 0; i++) {
		const char *b = p[i].len > 0 ? arena + p[i].off : empty; // zero bytes: "", not NULL
		switch (p[i].kind) {
		case 0:
			rc = sqlite3_bind_int64(st, i + 1, p[i].v);
			break;
		case 1:
			rc = sqlite3_bind_text(st, i + 1, b, p[i].len, (void (*)(void*))0); // SQLITE_STATIC
			break;
		default:
			rc = sqlite3_bind_blob(st, i + 1, b, p[i].len, (void (*)(void*))0);
			break;
		}
	}
	if (rc == 0) {
		rc = sqlite3_step(st);
		if (rc == 101) { // SQLITE_DONE
			rc = 0;
		}
	}
	*rowid = sqlite3_last_insert_rowid(sqlite3_db_handle(st));
	if (rc != 0) {
		snprintf(errbuf, errlen, "%s", sqlite3_errmsg(sqlite3_db_handle(st)));
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

// perch_wal is what the writer's connection's WAL hook records: the frames in the WAL after the
// last commit on the connection (by the writer, or by Ack or SetState: atomic, since the writer
// reads it outside of the connection). At backstop frames or more, the hook checkpoints, as
// SQLite's default hook (wal_autocheckpoint) does at 1000: the background checkpointer has
// fallen behind.
typedef struct {
	int frames;
	int backstop;
} perch_wal;

static int perch_wal_hook(void *arg, sqlite3 *db, const char *name, int frames) {
	perch_wal *w = arg;
	__atomic_store_n(&w->frames, frames, __ATOMIC_RELAXED);
	if (w->backstop > 0 && frames >= w->backstop) {
		sqlite3_wal_checkpoint_v2(db, name, 0, 0, 0); // SQLITE_CHECKPOINT_PASSIVE
	}
	return 0;
}

// perch_wal_watch makes w the WAL hook of st's connection, in place of wal_autocheckpoint's.
static void perch_wal_watch(sqlite3_stmt *st, perch_wal *w) {
	sqlite3_wal_hook(sqlite3_db_handle(st), perch_wal_hook, w);
}

static int perch_wal_frames(perch_wal *w) {
	return __atomic_load_n(&w->frames, __ATOMIC_RELAXED);
}

// perch_wal_unwatch puts SQLite's default hook back (checkpoints every 1000 frames).
static void perch_wal_unwatch(sqlite3_stmt *st) {
	sqlite3_wal_autocheckpoint(sqlite3_db_handle(st), 1000);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"reflect"
	"unsafe"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// The writer's multi-row INSERTs bind thousands of parameters per commit. Through database/sql
// and go-sqlite3 each one is a boxed value, a conversion, a cgo call that locks the connection,
// and a copy of the text (SQLITE_TRANSIENT): that cost more than the inserts themselves
// (measured: binding ~25% of the writer's CPU, the B-tree inserts ~10%). A bulkStmt binds a
// whole statement's parameters in one cgo call, straight from the writer's buffers, without
// copies.

// Kinds of bulkParam.
const (
	paramInt  = 0
	paramText = 1
	paramBlob = 2
)

// bulkParam is one parameter of a bulkStmt: an integer, or text or a blob of len bytes at off in
// the arena that bulkStmt.exec is given. Its layout is perch_param's.
type bulkParam struct {
	v    int64
	off  int32
	len  int32
	kind int32
	_    int32
}

// intParam and bytesParam make parameters.
func intParam(v int64) bulkParam { return bulkParam{v: v} }

func bytesParam(kind int32, off, end int) bulkParam {
	return bulkParam{off: int32(off), len: int32(end - off), kind: kind}
}

// bulkStmt is a statement prepared on the writer's connection, executed with its parameters
// bound in one cgo call. It belongs to the go-sqlite3 connection it was prepared on: use it only
// inside that connection's sql.Conn.Raw, on the goroutine that holds it.
type bulkStmt struct {
	ds     *sqlite3.SQLiteStmt // keeps the statement alive; Close finalizes it
	st     *C.sqlite3_stmt
	params int
	rowid  C.longlong  // exec's results, here rather than on the stack: a pointer to a local
	msg    [256]C.char // passed to C would make it escape, an allocation per exec
}

// errSQLiteInternals is returned when go-sqlite3 no longer has the field bulkStmt reads.
var errSQLiteInternals = errors.New("store: github.com/mattn/go-sqlite3's SQLiteStmt has no " +
	"field s *C.sqlite3_stmt: this store needs the version in go.mod")

// prepareBulk prepares query on conn (a *sqlite3.SQLiteConn, from sql.Conn.Raw).
func prepareBulk(conn any, query string) (*bulkStmt, error) {
	c, ok := conn.(*sqlite3.SQLiteConn)
	if !ok {
		return nil, fmt.Errorf("store: the writer's connection is a %T, not a go-sqlite3 one", conn)
	}
	ds, err := c.Prepare(query)
	if err != nil {
		return nil, err
	}
	s, ok := ds.(*sqlite3.SQLiteStmt)
	if !ok {
		ds.Close()
		return nil, fmt.Errorf("store: go-sqlite3 prepared a %T", ds)
	}
	// go-sqlite3 exports no way to reach the sqlite3_stmt; its field is read with reflect (the
	// version is pinned in go.mod, and TestBulkStmt fails if the field goes away).
	f := reflect.ValueOf(s).Elem().FieldByName("s")
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() {
		s.Close()
		return nil, errSQLiteInternals
	}
	return &bulkStmt{ds: s, st: (*C.sqlite3_stmt)(f.UnsafePointer()), params: s.NumInput()}, nil
}

// exec binds params (one per parameter of the statement, in order; text and blobs are slices of
// arena) and runs the statement. It returns the connection's last inserted rowid: for an INSERT,
// the rowid of its last row. arena is only read during the call.
func (b *bulkStmt) exec(arena []byte, params []bulkParam) (rowid int64, err error) {
	if len(params) != b.params {
		return 0, fmt.Errorf("store: %d parameters for a statement of %d", len(params), b.params)
	}
	for i := range params {
		if p := &params[i]; p.kind != paramInt && (p.off < 0 || p.len < 0 || int(p.off)+int(p.len) > len(arena)) {
			return 0, fmt.Errorf("store: parameter %d: bytes [%d:+%d] outside of the %d-byte arena",
				i+1, p.off, p.len, len(arena))
		}
	}
	var a *C.char
	if len(arena) > 0 {
		a = (*C.char)(unsafe.Pointer(unsafe.SliceData(arena)))
	}
	var p *C.perch_param
	if len(params) > 0 {
		p = (*C.perch_param)(unsafe.Pointer(unsafe.SliceData(params)))
	}
	rc := C.perch_exec(b.st, a, p, C.int(len(params)), &b.rowid, &b.msg[0], C.int(len(b.msg)))
	if rc != 0 {
		return 0, fmt.Errorf("sqlite3 error %d: %s", int(rc), C.GoString(&b.msg[0]))
	}
	return int64(b.rowid), nil
}

// close finalizes the statement. Call it while its connection is open.
func (b *bulkStmt) close() error {
	return b.ds.Close()
}

// bulkParam must have perch_param's layout.
var _ = [1]struct{}{}[unsafe.Sizeof(bulkParam{})-unsafe.Sizeof(C.perch_param{})]

// walWatch follows the WAL of the writer's connection, so that checkpoints run on another
// connection (see Store.checkpointer) instead of inside the writer's commits. Its memory is C's:
// SQLite keeps a pointer to it. Only the writer goroutine uses it.
type walWatch struct {
	w *C.perch_wal
}

// newWALWatch allocates a walWatch whose hook checkpoints on the writer's connection once the
// WAL has backstop frames (the background checkpoints did not keep up).
func newWALWatch(backstop int) walWatch {
	w := (*C.perch_wal)(C.calloc(1, C.size_t(unsafe.Sizeof(C.perch_wal{}))))
	w.backstop = C.int(backstop)
	return walWatch{w: w}
}

// watch installs the hook on the connection of st. It replaces wal_autocheckpoint.
func (w walWatch) watch(st *bulkStmt) { C.perch_wal_watch(st.st, w.w) }

// unwatch puts wal_autocheckpoint's hook back on the connection of st: after it, the connection
// keeps no pointer to w.
func (w walWatch) unwatch(st *bulkStmt) { C.perch_wal_unwatch(st.st) }

// frames returns the frames in the WAL after the connection's last commit (0 before the hook
// saw one). It restarts from 0 when a writer starts over at the beginning of the WAL.
func (w walWatch) frames() int { return int(C.perch_wal_frames(w.w)) }

// free releases the memory. Call it only once no connection has the hook (see unwatch).
func (w walWatch) free() { C.free(unsafe.Pointer(w.w)) }
