/*
 * perch.h - the Perch module ABI v1 for C guests.
 *
 * Header-only, C11, for clang --target=wasm32-wasi with wasi-libc. It mirrors the Go package
 * github.com/perch-edge/perch/sdk/abi (names, errnos, record encoding); sdk/ABI.md is the
 * specification.
 *
 * A module is a WebAssembly reactor. The host calls _initialize (from wasi-libc's reactor start
 * file; it runs C constructors), then perch_abi_version (must return PERCH_ABI_VERSION), then
 * perch_init, then repeatedly perch_process (filters and rules) or perch_poll (drivers). Before
 * writing a batch it calls perch_buffer(size), which must return a buffer of at least size bytes
 * that stays valid until the next perch_buffer call, or 0 if there is none.
 *
 * This header declares the exports below with their export names, so a module only defines the
 * ones it has:
 *
 *   int32_t     perch_abi_version(void);                        (or PERCH_DEFINE_ABI_VERSION())
 *   uint8_t    *perch_buffer(int32_t size);                     (or PERCH_DEFINE_BUFFER(buf))
 *   perch_errno perch_init(void);
 *   perch_errno perch_process(const uint8_t *batch, int32_t len);  filters and rules
 *   perch_errno perch_poll(int32_t max);                            drivers
 *   perch_errno perch_snapshot(void);                                optional: hot swap handoff
 *   perch_errno perch_restore(const uint8_t *snap, int32_t len);     optional: hot swap handoff
 *
 * On a hot swap the host calls the old binary's perch_snapshot, which hands its in-memory state
 * to perch_save, and the new binary's perch_restore with those bytes (see "State handoff").
 *
 * Records cross the boundary as a batch of binary records. Read a batch with perch_iter and
 * perch_next, the fields and tags of a record with perch_fields / perch_tags and
 * perch_next_field / perch_next_tag; write one with perch_begin, perch_field, perch_tag and
 * perch_end into a perch_builder, and hand the whole batch to the host with one perch_emit call
 * at the end of perch_process or perch_poll. To never drop a record, write into a growable
 * perch_buf and call perch_builder_room before each record. Nothing here allocates except
 * perch_buf_reserve, perch_buf_grow (and so perch_builder_room), perch_config_read,
 * perch_config_decode and the snapshot writer (perch_snap_begin, perch_snap_put and the
 * perch_snap_u8... functions that call it).
 *
 * Speed: under the Perch runtime every loop iteration a guest runs costs a trip to the host.
 * perch_next handles records of up to four fields and two tags without a loop; "Loop-free
 * helpers" below has string comparison and hashing that run none up to 32 bytes, and says how to
 * keep the hot path free of loops (modules/filters/window/wasm/window.c does).
 *
 * Also here, for perch_init: perch_config_read and perch_config_decode read the config JSON as
 * the Go SDK does (the same rules and error messages), perch_parse_duration parses Go
 * durations, and perch_text formats messages as Go's fmt would (%q, %g, %#x).
 *
 * Build (see modules/filters/scale/README.md):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Isdk/c \
 *         -Wl,--strip-all -o mod.wasm mod.c
 */
#ifndef PERCH_H
#define PERCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifndef PERCH_NO_MALLOC
#include <stdio.h>
#include <stdlib.h>
#endif

#if !defined(__wasm32__)
#error "perch.h is for wasm32 guests: build with clang --target=wasm32-wasi"
#endif
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "perch.h assumes a little-endian target"
#endif

/* ---- Constants (sdk/abi) ------------------------------------------------------------------- */

#define PERCH_ABI_VERSION 1

/* perch_errno is the result of every host function and of perch_init, perch_process and
 * perch_poll. Zero means success. The numbers are part of ABI v1. */
typedef uint32_t perch_errno;
#define PERCH_OK        0u
#define PERCH_EPERM     1u  /* the module was not granted this device, key or capability */
#define PERCH_EINVAL    2u  /* an argument is out of range or malformed */
#define PERCH_EFAULT    3u  /* a pointer and length fall outside the module's memory */
#define PERCH_ENOSPC    4u  /* the output buffer is too small; the needed length was written */
#define PERCH_EIO       5u  /* the device failed (bus error, corrupt frame) */
#define PERCH_ETIMEDOUT 6u  /* the device did not answer in time */
#define PERCH_ENODEV    7u  /* no such device, or it is disconnected */
#define PERCH_EQUOTA    8u  /* a per-call quota (records, bytes) is exhausted */
#define PERCH_ENOENT    9u  /* no such state key */
#define PERCH_ENOSYS    10u /* the host does not implement this function */
#define PERCH_ENACK     11u /* an I2C device did not acknowledge */

/* perch_errno_name returns the errno's symbolic name, such as "EPERM" (Go: abi.Errno.String).
 * Go's abi.Errno.Error() is "perch: " followed by it. */
static inline const char *perch_errno_name(perch_errno e) {
    static const char *const names[] = {"OK",        "EPERM",  "EINVAL", "EFAULT", "ENOSPC", "EIO",
                                        "ETIMEDOUT", "ENODEV", "EQUOTA", "ENOENT", "ENOSYS", "ENACK"};
    return e < sizeof names / sizeof names[0] ? names[e] : "errno(?)";
}

/* Record kinds. */
#define PERCH_KIND_READING 1
#define PERCH_KIND_SUMMARY 2
#define PERCH_KIND_SCORE   3
#define PERCH_KIND_ALERT   4
#define PERCH_KIND_EVENT   5

/* Log levels for perch_log_write, matching Go's log/slog. */
#define PERCH_LEVEL_DEBUG (-4)
#define PERCH_LEVEL_INFO  0
#define PERCH_LEVEL_WARN  4
#define PERCH_LEVEL_ERROR 8

/* Record encoding limits. */
#define PERCH_HEADER_SIZE 16  /* size u32, kind u8, nfields u8, ntags u8, reserved u8, time i64 */
#define PERCH_MAX_STRING  255 /* bytes in one string (its length is one byte) */
#define PERCH_MAX_FIELDS  255
#define PERCH_MAX_TAGS    255

/* The most bytes perch_save takes during one perch_snapshot (sdk/abi MaxSnapshot). */
#define PERCH_MAX_SNAPSHOT (1u << 20)

/* ---- Host functions (imports) -------------------------------------------------------------- */
/* Every one returns a perch_errno except perch_now_ns. The host bounds-checks every pointer and
 * copies what it reads before returning; it never keeps a pointer. */

#define PERCH_IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

/* perch:io/v1 emit: hands the host a batch of encoded records (once per call). Past the
 * module's quota the host closes the module. */
PERCH_IMPORT("perch:io/v1", "emit")
perch_errno perch_emit(const void *batch, uint32_t len);

/* perch:io/v1 save: appends len bytes to the snapshot the module hands to its next binary on a
 * hot swap. Only during perch_snapshot (PERCH_EPERM otherwise); PERCH_EINVAL past
 * PERCH_MAX_SNAPSHOT bytes in all, and then nothing is handed over. */
PERCH_IMPORT("perch:io/v1", "save")
perch_errno perch_save(const void *data, uint32_t len);

/* perch:log/v1 write: logs len bytes of msg at level (PERCH_LEVEL_*). */
PERCH_IMPORT("perch:log/v1", "write")
perch_errno perch_log_write(int32_t level, const char *msg, uint32_t len);

/* perch:clock/v1 now_ns: the host's clock, nanoseconds since the Unix epoch. */
PERCH_IMPORT("perch:clock/v1", "now_ns")
int64_t perch_now_ns(void);

/* perch:config/v1 get: writes the module's config as JSON into buf and its length to *len;
 * PERCH_ENOSPC (with *len set to the length needed) if cap is too small. */
PERCH_IMPORT("perch:config/v1", "get")
perch_errno perch_config_get(void *buf, uint32_t cap, uint32_t *len);

/* perch:state/v1 get: writes the value of key into buf and its length to *len; PERCH_ENOENT if
 * there is none, PERCH_ENOSPC as for perch_config_get. */
PERCH_IMPORT("perch:state/v1", "get")
perch_errno perch_state_get(const char *key, uint32_t key_len, void *buf, uint32_t cap,
                            uint32_t *len);

/* perch:state/v1 set: stores val under key. */
PERCH_IMPORT("perch:state/v1", "set")
perch_errno perch_state_set(const char *key, uint32_t key_len, const void *val, uint32_t len);

/* perch:state/v1 delete: removes key. */
PERCH_IMPORT("perch:state/v1", "delete")
perch_errno perch_state_delete(const char *key, uint32_t key_len);

/* perch:hal/v1 i2c_read: writes the register byte reg to the device at the 7-bit address addr,
 * then reads len bytes into buf, as one transaction. PERCH_EPERM when not granted. */
PERCH_IMPORT("perch:hal/v1", "i2c_read")
perch_errno perch_i2c_read(int32_t bus, int32_t addr, int32_t reg, void *buf, uint32_t len);

/* perch:hal/v1 i2c_write: writes len bytes to the device at addr. */
PERCH_IMPORT("perch:hal/v1", "i2c_write")
perch_errno perch_i2c_write(int32_t bus, int32_t addr, const void *buf, uint32_t len);

/* perch:hal/v1 spi_transfer: clocks out tx and clocks in rx (both len bytes) at the same time on
 * the port (bus, chip select cs). */
PERCH_IMPORT("perch:hal/v1", "spi_transfer")
perch_errno perch_spi_transfer(int32_t bus, int32_t cs, const void *tx, void *rx, uint32_t len);

/* perch:hal/v1 gpio_read: writes the line's level to *level, 0 or 1. */
PERCH_IMPORT("perch:hal/v1", "gpio_read")
perch_errno perch_gpio_read(int32_t line, uint8_t *level);

/* perch:hal/v1 gpio_write: drives an output line to level (0 or 1). */
PERCH_IMPORT("perch:hal/v1", "gpio_write")
perch_errno perch_gpio_write(int32_t line, int32_t level);

/* perch:hal/v1 uart_read: reads up to cap bytes that have arrived on the port (a name such as
 * "/dev/ttyUSB0") into buf, their number to *len (0 when none have). */
PERCH_IMPORT("perch:hal/v1", "uart_read")
perch_errno perch_uart_read(const char *port, uint32_t port_len, void *buf, uint32_t cap,
                            uint32_t *len);

/* perch:hal/v1 uart_write: sends len bytes on the port. */
PERCH_IMPORT("perch:hal/v1", "uart_write")
perch_errno perch_uart_write(const char *port, uint32_t port_len, const void *buf, uint32_t len);

/* perch:infer/v1 open: looks up the model named name (1 to 255 bytes) among those granted to the
 * module and writes info[0] = its id, info[1] = the number of float32 values in one input row.
 * PERCH_EPERM when not granted, PERCH_ENODEV when granted but unavailable (no ONNX Runtime). */
PERCH_IMPORT("perch:infer/v1", "open")
perch_errno perch_infer_open(const char *name, uint32_t name_len, uint32_t info[2]);

/* perch:infer/v1 infer: scores the rows in (in_len float32 values, whole rows of the model's
 * width, at most 4096 rows) with the model id, one score per row into out (room for out_cap).
 * No normalisation is applied. PERCH_EINVAL for partial rows or too little room. */
PERCH_IMPORT("perch:infer/v1", "infer")
perch_errno perch_infer(uint32_t model_id, const float *in, uint32_t in_len, float *out, uint32_t out_cap);

/* perch_model is a model opened with perch_model_open. */
typedef struct {
    uint32_t id;       /* for perch_infer */
    uint32_t features; /* float32 values per input row */
} perch_model;

/* perch_model_open opens the granted model named by the NUL-terminated name. */
static inline perch_errno perch_model_open(const char *name, perch_model *m) {
    uint32_t info[2] = {0, 0};
    perch_errno e = perch_infer_open(name, (uint32_t)strlen(name), info);
    m->id = info[0];
    m->features = info[1];
    return e;
}

/* perch_model_score scores rows rows of m->features values each, back to back in in, into
 * out[0..rows). */
static inline perch_errno perch_model_score(const perch_model *m, const float *in, uint32_t rows, float *out) {
    return perch_infer(m->id, in, rows * m->features, out, rows);
}

/* perch_log logs a NUL-terminated message. */
static inline void perch_log(int32_t level, const char *msg) {
    perch_log_write(level, msg, (uint32_t)strlen(msg));
}

/* ---- Exports ------------------------------------------------------------------------------- */

#define PERCH_EXPORT(name) __attribute__((export_name(name)))

PERCH_EXPORT("perch_abi_version") int32_t perch_abi_version(void);
PERCH_EXPORT("perch_buffer") uint8_t *perch_buffer(int32_t size);
PERCH_EXPORT("perch_init") perch_errno perch_init(void);
PERCH_EXPORT("perch_process") perch_errno perch_process(const uint8_t *batch, int32_t len);
PERCH_EXPORT("perch_poll") perch_errno perch_poll(int32_t max);
PERCH_EXPORT("perch_snapshot") perch_errno perch_snapshot(void);
PERCH_EXPORT("perch_restore") perch_errno perch_restore(const uint8_t *snap, int32_t len);

/* PERCH_DEFINE_ABI_VERSION() defines perch_abi_version. */
#define PERCH_DEFINE_ABI_VERSION() \
    int32_t perch_abi_version(void) { return PERCH_ABI_VERSION; }

#ifndef PERCH_NO_MALLOC
/* perch_buf is a growable buffer on the heap (wasi-libc's malloc). The zero value is empty. */
typedef struct {
    uint8_t *ptr;
    uint32_t cap;
} perch_buf;

/* perch_buf_reserve makes b hold at least size bytes (at least 4 KiB, at least double its
 * previous capacity when it grows) and returns b->ptr, or NULL if memory is exhausted, in which
 * case b is unchanged. Its contents are not kept when it grows. */
static inline uint8_t *perch_buf_reserve(perch_buf *b, uint32_t size) {
    if (b->ptr != NULL && size <= b->cap) return b->ptr;
    uint64_t n = b->cap ? 2 * (uint64_t)b->cap : 4096;
    while (n < size) n *= 2;
    if (n > UINT32_MAX / 2) return NULL;
    uint8_t *p = (uint8_t *)malloc((size_t)n);
    if (p == NULL) return NULL;
    free(b->ptr);
    b->ptr = p;
    b->cap = (uint32_t)n;
    return p;
}

/* perch_buf_holds reports whether [p, p+len) lies inside b: check the batch perch_process is
 * given against the buffer perch_buffer handed out. */
static inline int perch_buf_holds(const perch_buf *b, const uint8_t *p, int32_t len) {
    if (len < 0) return 0;
    if (len == 0) return 1;
    uintptr_t base = (uintptr_t)b->ptr, at = (uintptr_t)p;
    return b->ptr != NULL && at >= base && at - base <= b->cap &&
           (uint32_t)len <= b->cap - (uint32_t)(at - base);
}

/* PERCH_DEFINE_BUFFER(buf) defines perch_buffer over the perch_buf named buf, which the module
 * declares (static perch_buf buf;). */
#define PERCH_DEFINE_BUFFER(buf) \
    uint8_t *perch_buffer(int32_t size) { return size < 0 ? NULL : perch_buf_reserve(&(buf), (uint32_t)size); }
#endif

/* ---- Strings ------------------------------------------------------------------------------- */

/* perch_str is a string that is not NUL-terminated: a name, series, tag key or value. In a
 * decoded record it points into the batch. */
typedef struct {
    const char *ptr;
    uint32_t len;
} perch_str;

/* PERCH_STR("literal") makes a perch_str of a string literal. */
#define PERCH_STR(lit) ((perch_str){(lit), (uint32_t)(sizeof(lit) - 1)})

/* perch_cstr makes a perch_str of a NUL-terminated string. */
static inline perch_str perch_cstr(const char *s) {
    return (perch_str){s, (uint32_t)strlen(s)};
}

/* perch_str_eq reports whether a equals the NUL-terminated string s. */
static inline int perch_str_eq(perch_str a, const char *s) {
    size_t n = strlen(s);
    return a.len == n && memcmp(a.ptr, s, n) == 0;
}

/* ---- Reading records ----------------------------------------------------------------------- */
/* Layout, little-endian:
 *   u32 size | u8 kind | u8 nfields | u8 ntags | u8 0 | i64 time_ns
 *   str source | str series | nfields x (str name, f64 value) | ntags x (str key, str value)
 *   str = u8 length | bytes */

/* perch_record is a decoded view of one record; its strings point into the batch. */
typedef struct {
    uint8_t kind;
    uint8_t nfields, ntags;
    int64_t time_ns;
    perch_str source, series;
    const uint8_t *body; /* the fields, then the tags */
    uint32_t body_len;
} perch_record;

/* perch_iter walks a batch. err is nonzero after perch_next stopped at a record that does not
 * decode: one of the PERCH_DECODE_* codes below; off is then that record's offset in the batch. */
typedef struct {
    const uint8_t *p;
    uint32_t left;
    uint32_t off;
    int err;
} perch_iter;

/* Why a record does not decode: the errors of the Go SDK's abi.Iter (see perch_decode_error). */
#define PERCH_DECODE_SHORT 1 /* "abi: record truncated" */
#define PERCH_DECODE_KIND  2 /* "abi: unknown record kind" */
#define PERCH_DECODE_SIZE  3 /* "abi: record size does not match its contents" */

/* perch_decode_error returns the message of a PERCH_DECODE_* code, worded as Go's abi package
 * words it (Go adds " at byte <off>"). */
static inline const char *perch_decode_error(int err) {
    switch (err) {
    case PERCH_DECODE_SHORT: return "abi: record truncated";
    case PERCH_DECODE_KIND: return "abi: unknown record kind";
    case PERCH_DECODE_SIZE: return "abi: record size does not match its contents";
    }
    return "abi: no error";
}

static inline perch_iter perch_iter_init(const void *batch, uint32_t len) {
    return (perch_iter){(const uint8_t *)batch, len, 0, 0};
}

/* perch__str reads a str at rec[*p], within size bytes, and advances *p. */
static inline int perch__str(const uint8_t *rec, uint32_t size, uint32_t *p, perch_str *s) {
    if (*p >= size) return 0;
    uint32_t n = rec[*p];
    if (n > size - *p - 1) return 0;
    if (s) *s = (perch_str){(const char *)rec + *p + 1, n};
    *p += 1 + n;
    return 1;
}

/* PERCH_UNROLLED: the loop after it is unrolled completely (clang). Under the Perch runtime
 * every loop a guest enters costs a trip to the host (see "Loop-free helpers" below), so the
 * decoding helpers handle the first few fields and tags with unrolled code. */
#define PERCH_UNROLLED _Pragma("clang loop unroll(full)")

/* perch__skip_fields advances *p over nf fields (str name, f64 value) within size, and returns
 * 0 if they do not fit. The first four cost no loop. */
static inline int perch__skip_fields(const uint8_t *rec, uint32_t size, uint32_t *p, uint32_t nf) {
    uint32_t q = *p;
    PERCH_UNROLLED
    for (uint32_t i = 0; i < 4; i++) {
        if (i == nf) goto done;
        if (q >= size || (uint32_t)rec[q] + 8 > size - q - 1) return 0;
        q += 9u + rec[q];
    }
    for (uint32_t i = 4; i < nf; i++) {
        if (q >= size || (uint32_t)rec[q] + 8 > size - q - 1) return 0;
        q += 9u + rec[q];
    }
done:
    *p = q;
    return 1;
}

/* perch__skip_strs advances *p over n strs within size, and returns 0 if they do not fit. The
 * first four (two tags) cost no loop. */
static inline int perch__skip_strs(const uint8_t *rec, uint32_t size, uint32_t *p, uint32_t n) {
    uint32_t q = *p;
    PERCH_UNROLLED
    for (uint32_t i = 0; i < 4; i++) {
        if (i == n) goto done;
        if (q >= size || rec[q] > size - q - 1) return 0;
        q += 1u + rec[q];
    }
    for (uint32_t i = 4; i < n; i++) {
        if (q >= size || rec[q] > size - q - 1) return 0;
        q += 1u + rec[q];
    }
done:
    *p = q;
    return 1;
}

/* perch_next decodes the next record into *r and returns 1, or returns 0 at the end of the batch
 * or at a record that does not decode (then it->err is set). It checks every length, so a
 * record it returns can be read with the functions below without further checks. It checks
 * exactly what Go's abi.Iter checks, in the same order, and runs no loop for a record with at
 * most four fields and two tags. */
static inline int perch_next(perch_iter *it, perch_record *r) {
    if (it->err || it->left == 0) return 0;
    const uint8_t *rec = it->p;
    uint32_t size;
    int err = PERCH_DECODE_SHORT;
    if (it->left < PERCH_HEADER_SIZE + 2) goto bad;
    memcpy(&size, rec, 4);
    if (size < PERCH_HEADER_SIZE + 2 || size > it->left) goto bad;
    err = PERCH_DECODE_KIND;
    if (rec[4] < PERCH_KIND_READING || rec[4] > PERCH_KIND_EVENT) goto bad;
    err = PERCH_DECODE_SIZE;
    uint32_t p = PERCH_HEADER_SIZE;
    perch_str source, series;
    if (!perch__str(rec, size, &p, &source) || !perch__str(rec, size, &p, &series)) goto bad;
    uint32_t body = p;
    if (!perch__skip_fields(rec, size, &p, rec[5]) || !perch__skip_strs(rec, size, &p, 2u * rec[6]))
        goto bad;
    if (p != size) goto bad;
    r->kind = rec[4];
    r->nfields = rec[5];
    r->ntags = rec[6];
    memcpy(&r->time_ns, rec + 8, 8);
    r->source = source;
    r->series = series;
    r->body = rec + body;
    r->body_len = size - body;
    it->p += size;
    it->left -= size;
    it->off += size;
    return 1;
bad:
    it->err = err;
    return 0;
}

/* perch_cursor walks the fields, then the tags, of a record from perch_next. */
typedef struct {
    const uint8_t *p;
    uint32_t fields, tags; /* left to read */
} perch_cursor;

/* perch_fields returns a cursor at the record's first field. */
static inline perch_cursor perch_fields(const perch_record *r) {
    return (perch_cursor){r->body, r->nfields, r->ntags};
}

/* perch_next_field reads the next field and returns 1, or returns 0 after the last one. */
static inline int perch_next_field(perch_cursor *c, perch_str *name, double *v) {
    if (c->fields == 0) return 0;
    uint32_t n = c->p[0];
    *name = (perch_str){(const char *)c->p + 1, n};
    memcpy(v, c->p + 1 + n, 8);
    c->p += 9 + n;
    c->fields--;
    return 1;
}

/* perch_tags returns a cursor at the record's first tag. */
static inline perch_cursor perch_tags(const perch_record *r) {
    perch_cursor c = perch_fields(r);
    perch_str name;
    double v;
    while (perch_next_field(&c, &name, &v)) {
    }
    return c;
}

/* perch_next_tag reads the next tag and returns 1, or returns 0 after the last one. It skips any
 * fields the cursor has not read yet. */
static inline int perch_next_tag(perch_cursor *c, perch_str *key, perch_str *value) {
    perch_str name;
    double v;
    while (perch_next_field(c, &name, &v)) {
    }
    if (c->tags == 0) return 0;
    uint32_t n = c->p[0];
    *key = (perch_str){(const char *)c->p + 1, n};
    c->p += 1 + n;
    n = c->p[0];
    *value = (perch_str){(const char *)c->p + 1, n};
    c->p += 1 + n;
    c->tags--;
    return 1;
}

/* perch_record_field finds the first field named name and stores its value in *v; it returns 0
 * if there is none. */
static inline int perch_record_field(const perch_record *r, const char *name, double *v) {
    perch_cursor c = perch_fields(r);
    perch_str n;
    double x;
    while (perch_next_field(&c, &n, &x)) {
        if (perch_str_eq(n, name)) {
            *v = x;
            return 1;
        }
    }
    return 0;
}

/* ---- Writing records ----------------------------------------------------------------------- */

/* perch_builder writes records into a caller-owned buffer of fixed capacity. A record that does
 * not fit is dropped whole at perch_end and counted in dropped; the batch stays valid. Strings
 * longer than PERCH_MAX_STRING are cut; fields and tags past the limits are ignored, and so are
 * fields after the first tag. */
typedef struct {
    uint8_t *buf;
    uint32_t cap, len;
    uint32_t start;   /* offset of the record being written */
    uint8_t in_tags;  /* a tag has been written: no more fields */
    uint8_t full;     /* the record being written did not fit */
    uint32_t dropped; /* records dropped because they did not fit */
} perch_builder;

static inline void perch_builder_init(perch_builder *b, void *buf, uint32_t cap) {
    *b = (perch_builder){(uint8_t *)buf, cap, 0, 0, 0, 0, 0};
}

/* perch__room reports whether n more bytes fit, and marks the record as not fitting if not. */
static inline int perch__room(perch_builder *b, uint32_t n) {
    if (b->full || n > b->cap - b->len) {
        b->full = 1;
        return 0;
    }
    return 1;
}

static inline void perch__put_str(perch_builder *b, perch_str s) {
    uint32_t n = s.len > PERCH_MAX_STRING ? PERCH_MAX_STRING : s.len;
    b->buf[b->len] = (uint8_t)n;
    memcpy(b->buf + b->len + 1, s.ptr, n);
    b->len += 1 + n;
}

static inline uint32_t perch__str_size(perch_str s) {
    return 1 + (s.len > PERCH_MAX_STRING ? PERCH_MAX_STRING : s.len);
}

/* perch_begin starts a record. Leave source empty (PERCH_STR("")) in records a module emits: the
 * host fills it in. */
static inline void perch_begin(perch_builder *b, uint8_t kind, int64_t time_ns, perch_str source,
                               perch_str series) {
    b->start = b->len;
    b->full = 0;
    b->in_tags = 0;
    if (!perch__room(b, PERCH_HEADER_SIZE + perch__str_size(source) + perch__str_size(series)))
        return;
    uint8_t *h = b->buf + b->len;
    memset(h, 0, 8);
    h[4] = kind;
    memcpy(h + 8, &time_ns, 8);
    b->len += PERCH_HEADER_SIZE;
    perch__put_str(b, source);
    perch__put_str(b, series);
}

/* perch_field adds a numeric field. Fields must all come before the first tag. */
static inline void perch_field(perch_builder *b, perch_str name, double v) {
    if (b->full || b->in_tags || b->buf[b->start + 5] == PERCH_MAX_FIELDS) return;
    if (!perch__room(b, perch__str_size(name) + 8)) return;
    perch__put_str(b, name);
    memcpy(b->buf + b->len, &v, 8);
    b->len += 8;
    b->buf[b->start + 5]++;
}

/* perch_tag adds a string tag. */
static inline void perch_tag(perch_builder *b, perch_str key, perch_str value) {
    if (b->full || b->buf[b->start + 6] == PERCH_MAX_TAGS) return;
    if (!perch__room(b, perch__str_size(key) + perch__str_size(value))) return;
    perch__put_str(b, key);
    perch__put_str(b, value);
    b->buf[b->start + 6]++;
    b->in_tags = 1;
}

/* perch_end finishes the record, or drops it if it did not fit. */
static inline void perch_end(perch_builder *b) {
    if (b->full) {
        b->len = b->start;
        b->dropped++;
        return;
    }
    uint32_t size = b->len - b->start;
    memcpy(b->buf + b->start, &size, 4);
}

/* ---- Loop-free helpers ----------------------------------------------------------------------- */
/* The Perch runtime runs wazero with close-on-context-done on (it is what lets a deadline stop a
 * spinning guest). In wazero v1.12 that makes the compiled code call out to the host at every
 * loop header it executes (the first entry included): each iteration of each loop exits to Go
 * and back, which costs more than a typical loop body (about 3.5 ns on an x86 build server;
 * 25-30 ns has been quoted for slower machines). Straight-line code and function calls cost
 * nothing extra. So hot paths should run as few loop iterations per record as possible:
 *
 *   - compare and hash strings 8 bytes at a time (perch_mem_eq, perch_hash): a memcpy of a
 *     constant size compiles to a load, not a loop; up to 32 bytes they run no loop at all;
 *   - never call memcmp or strlen on the hot path (wasi-libc's are byte loops);
 *   - build with -mbulk-memory, so that a memcpy of a variable size is one memory.copy
 *     instruction (wazero runs it as a call to Go's memmove, no exit) instead of libc's loops;
 *   - unroll small loops of known bound (PERCH_UNROLLED), as perch_next does. */

/* perch_load64 returns the 8 bytes at p (any alignment) as a little-endian integer. */
static inline uint64_t perch_load64(const void *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* perch_load_upto8 returns the n <= 8 bytes at p as a little-endian integer, zero above them.
 * It reads only [p, p+n), with at most three loads and no loop. */
static inline uint64_t perch_load_upto8(const void *p, uint32_t n) {
    const uint8_t *b = (const uint8_t *)p;
    if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, b, 4);
        memcpy(&hi, b + n - 4, 4);
        return (uint64_t)lo | (uint64_t)hi << (8 * (n - 4)); /* the overlap holds the same bytes */
    }
    if (n == 0) return 0;
    return (uint64_t)b[0] | (uint64_t)b[n >> 1] << (8 * (n >> 1)) | (uint64_t)b[n - 1] << (8 * (n - 1));
}

/* perch__mem_eq_long is perch_mem_eq for n > 32: a loop over 8-byte words. */
static inline __attribute__((noinline)) int perch__mem_eq_long(const uint8_t *a, const uint8_t *b,
                                                               uint32_t n) {
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (perch_load64(a + i) != perch_load64(b + i)) return 0;
    return perch_load64(a + n - 8) == perch_load64(b + n - 8);
}

/* perch_mem_eq reports whether the n bytes at a and at b are equal. It reads only those bytes,
 * 8 at a time, and runs no loop for n <= 32. */
static inline int perch_mem_eq(const void *a, const void *b, uint32_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    if (n <= 8) return perch_load_upto8(x, n) == perch_load_upto8(y, n);
    uint64_t d = (perch_load64(x) ^ perch_load64(y)) | (perch_load64(x + n - 8) ^ perch_load64(y + n - 8));
    if (n <= 16) return d == 0;
    if (n <= 32)
        return (d | (perch_load64(x + 8) ^ perch_load64(y + 8)) |
                (perch_load64(x + n - 16) ^ perch_load64(y + n - 16))) == 0;
    return d == 0 && perch__mem_eq_long(x, y, n);
}

/* perch_str_equal reports whether two perch_strs are equal (perch_mem_eq: no loop up to 32 bytes). */
static inline int perch_str_equal(perch_str a, perch_str b) {
    return a.len == b.len && perch_mem_eq(a.ptr, b.ptr, a.len);
}

static inline uint64_t perch__mix(uint64_t h, uint64_t v) {
    h = (h ^ v) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static inline __attribute__((noinline)) uint64_t perch__hash_long(const uint8_t *p, uint32_t n, uint64_t h) {
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) h = perch__mix(h, perch_load64(p + i));
    return perch__mix(h, perch_load64(p + n - 8));
}

/* perch_hash returns a 64-bit hash of the n bytes at p (not a cryptographic one: for hash
 * tables). It reads only those bytes and runs no loop for n <= 32. */
static inline uint64_t perch_hash(const void *p, uint32_t n) {
    const uint8_t *b = (const uint8_t *)p;
    uint64_t h = perch__mix(0x243F6A8885A308D3ull, n);
    if (n <= 8) return perch__mix(h, perch_load_upto8(b, n));
    h = perch__mix(perch__mix(h, perch_load64(b)), perch_load64(b + n - 8));
    if (n <= 16) return h;
    if (n <= 32) return perch__mix(perch__mix(h, perch_load64(b + 8)), perch_load64(b + n - 16));
    return perch__hash_long(b + 8, n - 16, h);
}

#ifndef PERCH_NO_MALLOC
/* ---- Growing output -------------------------------------------------------------------------- */

/* perch_buf_grow makes b hold at least size bytes like perch_buf_reserve, but keeps its first
 * keep bytes (keep <= b->cap) when it grows. It returns b->ptr, or NULL (b unchanged). */
static inline uint8_t *perch_buf_grow(perch_buf *b, uint32_t size, uint32_t keep) {
    if (b->ptr != NULL && size <= b->cap) return b->ptr;
    uint64_t n = b->cap ? 2 * (uint64_t)b->cap : 4096;
    while (n < size) n *= 2;
    if (n > UINT32_MAX / 2) return NULL;
    uint8_t *p = (uint8_t *)malloc((size_t)n);
    if (p == NULL) return NULL;
    if (keep && b->ptr) memcpy(p, b->ptr, keep < b->cap ? keep : b->cap);
    free(b->ptr);
    b->ptr = p;
    b->cap = (uint32_t)n;
    return p;
}

/* perch_builder_room makes room for n more bytes in b, a builder over the growable buffer buf
 * (perch_builder_init(b, buf->ptr, buf->cap)), growing buf and keeping what b holds. Call it
 * before perch_begin with the size of the record to come, so that no record is dropped. It
 * returns 0 when memory is exhausted; the record is then dropped whole by perch_end, as usual. */
static inline int perch_builder_room(perch_builder *b, perch_buf *buf, uint32_t n) {
    if (n <= b->cap - b->len) return 1;
    if (n > UINT32_MAX / 4 - b->len || perch_buf_grow(buf, b->len + n, b->len) == NULL) return 0;
    b->buf = buf->ptr;
    b->cap = buf->cap;
    return 1;
}
#endif

/* ---- Text: messages worded as Go would word them --------------------------------------------- */
/* perch_text appends to a fixed char buffer and silently cuts what does not fit; it is for log
 * and error messages (not the hot path). Its functions format as Go's fmt does, so that a C
 * module can log the same messages as a Go one. */
typedef struct {
    char *p;
    uint32_t len, cap;
} perch_text;

static inline perch_text perch_text_init(char *buf, uint32_t cap) {
    return (perch_text){buf, 0, cap};
}

/* perch_text_put appends n bytes. */
static inline void perch_text_put(perch_text *t, const char *s, uint32_t n) {
    if (n > t->cap - t->len) n = t->cap - t->len;
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

/* perch_text_cstr appends a NUL-terminated string. */
static inline void perch_text_cstr(perch_text *t, const char *s) {
    perch_text_put(t, s, (uint32_t)strlen(s));
}

static inline void perch_text_str(perch_text *t, perch_str s) { perch_text_put(t, s.ptr, s.len); }

static inline void perch_text_byte(perch_text *t, char c) { perch_text_put(t, &c, 1); }

/* perch_text_u64 appends v in decimal. */
static inline void perch_text_u64(perch_text *t, uint64_t v) {
    char d[20];
    int i = 20;
    do d[--i] = (char)('0' + v % 10); while ((v /= 10) != 0);
    perch_text_put(t, d + i, (uint32_t)(20 - i));
}

/* perch_text_i64 appends v in decimal (Go: %d). */
static inline void perch_text_i64(perch_text *t, int64_t v) {
    if (v < 0) perch_text_byte(t, '-');
    perch_text_u64(t, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

/* perch_text_hex appends v as Go's %#x does: 0x2a, -0x2a. */
static inline void perch_text_hex(perch_text *t, int64_t v) {
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    char d[16];
    int i = 16;
    do d[--i] = "0123456789abcdef"[u & 15]; while ((u >>= 4) != 0);
    perch_text_put(t, v < 0 ? "-0x" : "0x", v < 0 ? 3 : 2);
    perch_text_put(t, d + i, (uint32_t)(16 - i));
}

/* perch_utf8 decodes the UTF-8 sequence at s (n > 0 bytes) as Go's utf8.DecodeRune does: it
 * returns the rune and stores its length in *size, or returns -1 with *size 1 for an invalid
 * byte (a bad, overlong or surrogate sequence, or one past U+10FFFF). */
static inline int32_t perch_utf8(const uint8_t *s, uint32_t n, uint32_t *size) {
    *size = 1;
    uint8_t c = s[0];
    if (c < 0x80) return c;
    uint32_t need;
    int32_t r, min;
    if (c >= 0xC2 && c <= 0xDF) need = 1, r = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) need = 2, r = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) need = 3, r = c & 0x07, min = 0x10000;
    else return -1;
    if (n <= need) return -1;
    for (uint32_t i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80) return -1;
        r = r << 6 | (s[i] & 0x3F);
    }
    if (r < min || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF)) return -1;
    *size = need + 1;
    return r;
}

/* perch__unprintable approximates the complement of Go's unicode.IsPrint for runes >= U+0080
 * without Unicode's tables: the controls, spaces, format characters and private-use and
 * non-character code points Go escapes, and the unassigned planes. It misses the unassigned code
 * points of the other planes, which Go escapes too. */
static inline int perch__unprintable(int32_t r) {
    return r <= 0xA0 || r == 0xAD || r == 0x061C || r == 0x180E || r == 0x1680 ||
           (r >= 0x2000 && r <= 0x200F) || (r >= 0x2028 && r <= 0x202F) || (r >= 0x205F && r <= 0x206F) ||
           r == 0x3000 || (r >= 0xE000 && r <= 0xF8FF) || r == 0xFEFF || (r >= 0xFFF0 && r <= 0xFFFB) ||
           (r & 0xFFFE) == 0xFFFE || (r >= 0x323B0 && r <= 0xE00FF) || (r >= 0xE01F0 && r <= 0xEFFFF) ||
           r >= 0xF0000; /* 0x323B0..0xDFFFF: the unassigned planes 4 to 13 */
}

/* perch_text_quote appends s quoted as Go's strconv.Quote (and %q) does: the quote and the
 * backslash escaped, \a \b \f \n \r \t \v, other ASCII controls and invalid UTF-8 bytes as \xNN,
 * runes that are not printable as \uNNNN or \UNNNNNNNN, printable ones as they are (with the
 * approximation of perch__unprintable). */
static inline void perch_text_quote(perch_text *t, const char *s, uint32_t n) {
    static const char hex[] = "0123456789abcdef";
    perch_text_byte(t, '"');
    for (uint32_t i = 0; i < n;) {
        uint32_t size;
        int32_t r = perch_utf8((const uint8_t *)s + i, n - i, &size);
        char e[10];
        uint32_t en = 0;
        if (r < 0) {
            uint8_t b = (uint8_t)s[i];
            e[0] = '\\', e[1] = 'x', e[2] = hex[b >> 4], e[3] = hex[b & 15], en = 4;
        } else if (r == '"' || r == '\\') {
            e[0] = '\\', e[1] = (char)r, en = 2;
        } else if (r >= 0x20 && r < 0x7F) {
            e[0] = (char)r, en = 1;
        } else if (r < 0x80 || perch__unprintable(r)) {
            const char *esc = NULL;
            switch (r) {
            case '\a': esc = "\\a"; break;
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            case '\v': esc = "\\v"; break;
            }
            if (esc) {
                e[0] = esc[0], e[1] = esc[1], en = 2;
            } else if (r < 0x20 || r == 0x7F) {
                e[0] = '\\', e[1] = 'x', e[2] = hex[r >> 4], e[3] = hex[r & 15], en = 4;
            } else {
                int digits = r < 0x10000 ? 4 : 8;
                e[0] = '\\', e[1] = r < 0x10000 ? 'u' : 'U', en = 2;
                for (int k = digits - 1; k >= 0; k--) e[en++] = hex[(r >> (4 * k)) & 15];
            }
        } else {
            perch_text_put(t, s + i, size); /* a printable rune: as it is */
        }
        perch_text_put(t, e, en);
        i += size;
    }
    perch_text_byte(t, '"');
}


/* perch_parse_duration parses a duration as Go's time.ParseDuration does: a possibly signed
 * sequence of decimal numbers with optional fraction and a unit each, such as "300ms", "-1.5h"
 * or "2h45m" (units ns, us, µs, μs, ms, s, m, h; "0" alone needs none). It stores the duration
 * in nanoseconds in *d and returns 1, or returns 0 for a string Go refuses (also on overflow). */
static inline int perch_parse_duration(const char *str, uint32_t n, int64_t *d) {
    const uint64_t max = 1ull << 63;
    const char *s = str, *end = str + n;
    uint64_t total = 0;
    int neg = 0;
    if (s < end && (*s == '-' || *s == '+')) neg = *s++ == '-';
    if (end - s == 1 && *s == '0') {
        *d = 0;
        return 1;
    }
    if (s == end) return 0;
    while (s < end) {
        uint64_t v = 0, f = 0;
        double scale = 1;
        if (!(*s == '.' || (*s >= '0' && *s <= '9'))) return 0;
        const char *q = s;
        for (; s < end && *s >= '0' && *s <= '9'; s++) {
            if (v > max / 10) return 0;
            v = v * 10 + (uint64_t)(*s - '0');
            if (v > max) return 0;
        }
        int pre = s != q, post = 0;
        if (s < end && *s == '.') {
            int overflow = 0;
            for (q = ++s; s < end && *s >= '0' && *s <= '9'; s++) {
                if (overflow) continue;
                if (f > (max - 1) / 10) {
                    overflow = 1;
                    continue;
                }
                uint64_t y = f * 10 + (uint64_t)(*s - '0');
                if (y > max) {
                    overflow = 1;
                    continue;
                }
                f = y;
                scale *= 10;
            }
            post = s != q;
        }
        if (!pre && !post) return 0;
        for (q = s; s < end && *s != '.' && !(*s >= '0' && *s <= '9'); s++) {
        }
        uint64_t unit = 0;
        perch_str u = {q, (uint32_t)(s - q)};
        if (perch_str_eq(u, "ns")) unit = 1;
        else if (perch_str_eq(u, "us") || perch_str_eq(u, "\xC2\xB5s") || perch_str_eq(u, "\xCE\xBCs"))
            unit = 1000; /* us, µs (U+00B5), μs (U+03BC) */
        else if (perch_str_eq(u, "ms")) unit = 1000000;
        else if (perch_str_eq(u, "s")) unit = 1000000000ull;
        else if (perch_str_eq(u, "m")) unit = 60000000000ull;
        else if (perch_str_eq(u, "h")) unit = 3600000000000ull;
        else return 0; /* a missing or unknown unit */
        if (v > max / unit) return 0;
        v *= unit;
        if (f > 0) {
            v += (uint64_t)((double)f * ((double)unit / scale));
            if (v > max) return 0;
        }
        total += v;
        if (total > max) return 0;
    }
    if (neg) {
        *d = (int64_t)(0 - total); /* -(1<<63) is the smallest duration */
        return 1;
    }
    if (total > max - 1) return 0;
    *d = (int64_t)total;
    return 1;
}

/* perch_log_text logs what t holds at level. */
static inline void perch_log_text(int32_t level, const perch_text *t) {
    perch_log_write(level, t->p, t->len);
}

#ifndef PERCH_NO_MALLOC
/* perch_text_g appends v as Go's strconv.FormatFloat(v, 'g', -1, 64) and fmt's %g do: the
 * shortest decimal that reads back as v ("30", "0.1", "1.5e-07", "1e+21", "+Inf", "NaN"). It
 * uses snprintf and strtod (correctly rounded in wasi-libc), so it is for messages, not for the
 * hot path. */
static inline void perch_text_g(perch_text *t, double v) {
    if (v != v || __builtin_isinf(v)) {
        perch_text_cstr(t, v != v ? "NaN" : v > 0 ? "+Inf" : "-Inf");
        return;
    }
    int neg = __builtin_signbit(v) != 0;
    double a = neg ? -v : v;
    char d[24]; /* the shortest digits, without trailing zeros */
    int nd = 0, dp = 0;
    if (a != 0) {
        char buf[48];
        for (int prec = 1; prec <= 17 && nd == 0; prec++) {
            snprintf(buf, sizeof buf, "%.*e", prec - 1, a);
            /* buf is d[.ddd]e±XX: read the digits as an integer m and the exponent. */
            uint64_t m = 0;
            const char *q = buf;
            for (; *q != 'e'; q++)
                if (*q != '.') m = m * 10 + (uint64_t)(*q - '0');
            int e = atoi(q + 1) - (prec - 1); /* a ~ m * 10^e */
            /* The nearest prec-digit decimal is the best candidate; at the edges of a binade the
             * rounding interval is lopsided, so a neighbour can read back when it does not. */
            uint64_t cand[3] = {m, m + 1, m - 1};
            for (int c = 0; c < 3 && nd == 0; c++) {
                snprintf(buf, sizeof buf, "%llue%d", (unsigned long long)cand[c], e);
                if (strtod(buf, NULL) != a) continue;
                char digits[24];
                int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)cand[c]);
                dp = n + e;
                while (n > 1 && digits[n - 1] == '0') n--;
                memcpy(d, digits, (size_t)n);
                nd = n;
            }
        }
    }
    if (neg) perch_text_byte(t, '-');
    int exp = dp - 1;
    if (nd != 0 && (exp < -4 || exp >= 6)) { /* %e with the shortest digits */
        perch_text_byte(t, d[0]);
        if (nd > 1) {
            perch_text_byte(t, '.');
            perch_text_put(t, d + 1, (uint32_t)(nd - 1));
        }
        perch_text_byte(t, 'e');
        perch_text_byte(t, exp < 0 ? '-' : '+');
        if (exp < 0) exp = -exp;
        if (exp < 10) perch_text_byte(t, '0');
        perch_text_u64(t, (uint64_t)exp);
        return;
    }
    /* %f with as many decimals as the shortest digits need */
    if (dp > 0) {
        for (int i = 0; i < dp; i++) perch_text_byte(t, i < nd ? d[i] : '0');
    } else {
        perch_text_byte(t, '0');
    }
    if (nd > dp) {
        perch_text_byte(t, '.');
        for (int i = dp; i < nd; i++) perch_text_byte(t, i >= 0 ? d[i] : '0');
    }
}

/* ---- Config ----------------------------------------------------------------------------------- */
/* A module's config is a JSON object (perch:config/v1 get). perch_config_decode decodes it into
 * C variables the way the Go SDK's perch.Config decodes it into a Go struct (encoding/json with
 * DisallowUnknownFields), with the same errors in the same words, so that a module ported from
 * Go to C keeps its config and its messages:
 *
 *   static perch_str window;           // Go: Window string `json:"window"`
 *   perch_cfg_field f[] = {{"window", PERCH_CFG_STRING, &window}};
 *   if (!perch_config_decode(json, len, f, 1, "window.Config", &msg, &arena)) ... log msg
 *
 * What it accepts and does, as encoding/json does:
 *   - an empty config (nothing but white space) or null leaves every variable as it is;
 *   - member names match a field exactly or else case-insensitively (ASCII, and the two
 *     non-ASCII runes that fold to ASCII letters, U+017F and U+212A); a later duplicate wins;
 *   - null leaves a string, int or float64 as it is and unsets an optional float64;
 *   - a number is exact for float64 (strtod: correctly rounded; one too large for a float64 is
 *     an error), and must be an integer literal in range for int ("1.0" and "1e3" are errors);
 *   - strings are unescaped (\uXXXX with surrogate pairs), invalid UTF-8 and lone surrogates
 *     become U+FFFD;
 *   - the first error in document order wins ("perch: config field "x": a JSON string cannot be
 *     a float64", "perch: config: json: unknown field "y""), but a syntax error anywhere wins
 *     over it; nesting deeper than 10000 is an error; after the object only white space (or,
 *     as Go's Decoder.More has it, a ']' or '}') may follow.
 * Syntax errors are worded like Go's ("invalid character 'x' looking for beginning of value",
 * "unexpected EOF"), not always identically. */

typedef enum {
    PERCH_CFG_STRING = 1, /* Go string:   dst is a perch_str *, pointing into the arena */
    PERCH_CFG_INT,        /* Go int:      dst is an int64_t * */
    PERCH_CFG_FLOAT,      /* Go float64:  dst is a double * */
    PERCH_CFG_OPT_FLOAT,  /* Go *float64: dst is a perch_opt_float * */
    PERCH_CFG_BOOL        /* Go bool:     dst is an int * (0 or 1) */
} perch_cfg_kind;

/* perch_opt_float is an optional number: Go's *float64 (set 0 is nil). */
typedef struct {
    int set;
    double v;
} perch_opt_float;

/* perch_cfg_field is one member of the config object: its JSON name (the Go struct tag's), its
 * kind and where to store it. */
typedef struct {
    const char *name;
    perch_cfg_kind kind;
    void *dst;
} perch_cfg_field;

#define PERCH__JSON_MAX_DEPTH 10000

typedef struct {
    const char *p, *end;
    char *arena;
    uint32_t used, cap;
    perch_text *err;
    uint32_t err_start;
    int failed; /* a decoding error has been written to err */
    int syntax; /* a syntax error has been written to err: stop */
} perch__json;

static inline void perch__json_ws(perch__json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* perch__json_syntax writes a syntax error (replacing any decoding error) and returns 0. */
static inline int perch__json_syntax(perch__json *j, const char *context) {
    j->err->len = j->err_start;
    perch_text_cstr(j->err, "perch: config: ");
    if (j->p >= j->end) {
        perch_text_cstr(j->err, "unexpected EOF");
    } else {
        uint8_t c = (uint8_t)*j->p;
        perch_text_cstr(j->err, "invalid character ");
        if (c == '\'') perch_text_cstr(j->err, "'\\''");
        else if (c == '"') perch_text_cstr(j->err, "'\"'");
        else { /* Go quotes the byte as the rune U+0000..U+00FF */
            char rune[2] = {(char)c, 0};
            if (c >= 0x80) rune[0] = (char)(0xC0 | c >> 6), rune[1] = (char)(0x80 | (c & 0x3F));
            uint32_t mark = j->err->len;
            perch_text_quote(j->err, rune, c < 0x80 ? 1 : 2);
            if (j->err->len - mark >= 2) { /* "x" -> 'x' */
                j->err->p[mark] = '\'';
                j->err->p[j->err->len - 1] = '\'';
            }
        }
        perch_text_byte(j->err, ' ');
        perch_text_cstr(j->err, context);
    }
    j->syntax = j->failed = 1;
    return 0;
}

/* perch__json_fail writes a decoding error, unless there is one already. */
static inline perch_text *perch__json_fail(perch__json *j) {
    static char scratch[1];
    static perch_text none;
    if (j->failed) {
        none = perch_text_init(scratch, 0);
        return &none;
    }
    j->failed = 1;
    return j->err;
}

static inline void perch__json_put(perch__json *j, const void *b, uint32_t n, uint32_t *w) {
    if (*w <= j->cap - j->used && n <= j->cap - j->used - *w) memcpy(j->arena + j->used + *w, b, n);
    *w += n; /* more than fits cannot happen (the arena is 4x the input); it is cut below */
}

static inline int perch__json_hex4(perch__json *j, const char *p, int32_t *r) {
    *r = 0;
    for (int i = 0; i < 4; i++, p++) {
        j->p = p;
        if (p >= j->end) return perch__json_syntax(j, "");
        char c = *p;
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0) return perch__json_syntax(j, "in \\u hexadecimal character escape");
        *r = *r << 4 | v;
    }
    return 1;
}

static inline void perch__json_rune(perch__json *j, int32_t r, uint32_t *w) {
    uint8_t b[4];
    uint32_t n;
    if (r < 0x80) b[0] = (uint8_t)r, n = 1;
    else if (r < 0x800) b[0] = (uint8_t)(0xC0 | r >> 6), b[1] = (uint8_t)(0x80 | (r & 0x3F)), n = 2;
    else if (r < 0x10000)
        b[0] = (uint8_t)(0xE0 | r >> 12), b[1] = (uint8_t)(0x80 | ((r >> 6) & 0x3F)),
        b[2] = (uint8_t)(0x80 | (r & 0x3F)), n = 3;
    else
        b[0] = (uint8_t)(0xF0 | r >> 18), b[1] = (uint8_t)(0x80 | ((r >> 12) & 0x3F)),
        b[2] = (uint8_t)(0x80 | ((r >> 6) & 0x3F)), b[3] = (uint8_t)(0x80 | (r & 0x3F)), n = 4;
    perch__json_put(j, b, n, w);
}

/* perch__json_string reads the string at j->p (a '"'), decoded into the arena as *out if out is
 * not NULL (the arena space is then kept). */
static inline int perch__json_string(perch__json *j, perch_str *out) {
    const char *p = j->p + 1;
    uint32_t w = 0;
    for (;;) {
        if (p >= j->end) {
            j->p = p;
            return perch__json_syntax(j, "");
        }
        uint8_t c = (uint8_t)*p;
        if (c == '"') break;
        if (c < 0x20) {
            j->p = p;
            return perch__json_syntax(j, "in string literal");
        }
        if (c == '\\') {
            if (++p >= j->end) {
                j->p = p;
                return perch__json_syntax(j, "");
            }
            char e = *p;
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *k = e ? strchr(from, e) : NULL;
            if (k != NULL) {
                perch__json_put(j, to + (k - from), 1, &w);
                p++;
                continue;
            }
            if (e != 'u') {
                j->p = p;
                return perch__json_syntax(j, "in string escape code");
            }
            int32_t r, r2;
            if (!perch__json_hex4(j, p + 1, &r)) return 0;
            p += 5;
            if (r >= 0xD800 && r < 0xE000) {
                /* a surrogate: a valid pair makes one rune, anything else U+FFFD */
                if (r < 0xDC00 && j->end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                    perch__json_hex4(j, p + 2, &r2) && r2 >= 0xDC00 && r2 < 0xE000) {
                    r = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00);
                    p += 6;
                } else {
                    if (j->syntax) return 0;
                    r = 0xFFFD;
                }
            }
            perch__json_rune(j, r, &w);
            continue;
        }
        if (c < 0x80) {
            perch__json_put(j, p++, 1, &w);
            continue;
        }
        uint32_t size;
        int32_t r = perch_utf8((const uint8_t *)p, (uint32_t)(j->end - p), &size);
        if (r < 0) perch__json_put(j, "\xEF\xBF\xBD", 3, &w);
        else perch__json_put(j, p, size, &w);
        p += size;
    }
    j->p = p + 1;
    if (w > j->cap - j->used) w = j->cap - j->used; /* cannot happen: the arena is 4x the input */
    if (out != NULL) {
        *out = (perch_str){j->arena + j->used, w};
        j->used += w;
    }
    return 1;
}

/* perch__json_number reads the number at j->p; *lit is its text. */
static inline int perch__json_number(perch__json *j, perch_str *lit) {
    const char *s = j->p;
#define PERCH__DIGIT (j->p < j->end && *j->p >= '0' && *j->p <= '9')
    if (*j->p == '-') {
        j->p++;
        if (!PERCH__DIGIT) return perch__json_syntax(j, "in numeric literal");
    }
    if (*j->p == '0') j->p++;
    else
        while (PERCH__DIGIT) j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!PERCH__DIGIT) return perch__json_syntax(j, "after decimal point in numeric literal");
        while (PERCH__DIGIT) j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!PERCH__DIGIT) return perch__json_syntax(j, "in exponent of numeric literal");
        while (PERCH__DIGIT) j->p++;
    }
#undef PERCH__DIGIT
    *lit = (perch_str){s, (uint32_t)(j->p - s)};
    return 1;
}

/* perch__json_literal reads true, false or null (word) at j->p. */
static inline int perch__json_literal(perch__json *j, const char *word) {
    for (const char *w = word; *w; w++, j->p++) {
        if (j->p < j->end && *j->p == *w) continue;
        if (w == word) return perch__json_syntax(j, "looking for beginning of value");
        char ctx[40] = "in literal ";
        size_t n = strlen(ctx);
        memcpy(ctx + n, word, strlen(word));
        n += strlen(word);
        memcpy(ctx + n, " (expecting 'x')", 17);
        ctx[n + 13] = *w;
        return perch__json_syntax(j, ctx);
    }
    return 1;
}

/* JSON value types, in the words of encoding/json's errors. */
#define PERCH__JSON_STRING 1
#define PERCH__JSON_NUMBER 2
#define PERCH__JSON_BOOL   3
#define PERCH__JSON_NULL   4
#define PERCH__JSON_ARRAY  5
#define PERCH__JSON_OBJECT 6

static inline const char *perch__json_type_name(int type) {
    static const char *names[] = {"", "string", "number", "bool", "null", "array", "object"};
    return names[type];
}

/* perch__json_value reads one value at j->p (white space skipped) and returns its type, or 0
 * after a syntax error. A string is decoded into *s (when s is not NULL), a number's text is
 * stored in *s; arrays and objects are checked and skipped, without recursion. */
static inline int perch__json_value(perch__json *j, perch_str *s, uint32_t depth) {
    uint8_t kinds[PERCH__JSON_MAX_DEPTH / 8 + 1]; /* bit set: the open container is an object */
    uint32_t open = 0;
    int type = 0;
    perch_str tmp;
value:
    perch__json_ws(j);
    if (j->p >= j->end) return perch__json_syntax(j, "");
    switch (*j->p) {
    case '"':
        if (!perch__json_string(j, open ? NULL : s)) return 0;
        if (type == 0) type = PERCH__JSON_STRING; /* the outermost value's */
        break;
    case 't':
    case 'f':
        if (!perch__json_literal(j, *j->p == 't' ? "true" : "false")) return 0;
        if (type == 0) type = PERCH__JSON_BOOL; /* the outermost value's */
        break;
    case 'n':
        if (!perch__json_literal(j, "null")) return 0;
        if (type == 0) type = PERCH__JSON_NULL; /* the outermost value's */
        break;
    case '[':
    case '{': {
        if (depth + open + 1 > PERCH__JSON_MAX_DEPTH) return perch__json_syntax(j, "exceeded max depth");
        int obj = *j->p == '{';
        if (type == 0) type = obj ? PERCH__JSON_OBJECT : PERCH__JSON_ARRAY;
        if (obj) kinds[open / 8] |= (uint8_t)(1u << (open % 8));
        else kinds[open / 8] &= (uint8_t)~(1u << (open % 8));
        open++;
        j->p++;
        perch__json_ws(j);
        if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
            j->p++;
            open--;
            break;
        }
        if (!obj) goto value;
        goto key;
    }
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) {
            if (!perch__json_number(j, open ? &tmp : s ? s : &tmp)) return 0;
            if (type == 0) type = PERCH__JSON_NUMBER; /* the outermost value's */
            break;
        }
        return perch__json_syntax(j, "looking for beginning of value");
    }
    /* after a value */
    while (open > 0) {
        int obj = (kinds[(open - 1) / 8] >> ((open - 1) % 8)) & 1;
        perch__json_ws(j);
        if (j->p >= j->end) return perch__json_syntax(j, "");
        if (*j->p == ',') {
            j->p++;
            if (!obj) goto value;
            perch__json_ws(j);
            goto key;
        }
        if (*j->p != (obj ? '}' : ']'))
            return perch__json_syntax(j, obj ? "after object key:value pair" : "after array element");
        j->p++;
        open--;
    }
    return type;
key:
    if (j->p >= j->end) return perch__json_syntax(j, "");
    if (*j->p != '"') return perch__json_syntax(j, "looking for beginning of object key string");
    if (!perch__json_string(j, NULL)) return 0;
    perch__json_ws(j);
    if (j->p >= j->end) return perch__json_syntax(j, "");
    if (*j->p != ':') return perch__json_syntax(j, "after object key");
    j->p++;
    goto value;
}

/* perch__fold_eq reports whether the key matches the ASCII name as encoding/json's
 * case-insensitive match does. */
static inline int perch__fold_eq(perch_str key, const char *name) {
    const uint8_t *k = (const uint8_t *)key.ptr, *end = k + key.len;
    for (; *name; name++) {
        if (k >= end) return 0;
        int c = *k++;
        if (c == 0xC5 && end - k >= 1 && k[0] == 0xBF) c = 'S', k += 1;                         /* U+017F */
        else if (c == 0xE2 && end - k >= 2 && k[0] == 0x84 && k[1] == 0xAA) c = 'K', k += 2; /* U+212A */
        int n = *name;
        if (c >= 'a' && c <= 'z') c -= 32;
        if (n >= 'a' && n <= 'z') n -= 32;
        if (c != n) return 0;
    }
    return k == end;
}

/* perch__json_int parses an integer literal as strconv.ParseInt(s, 10, 64) does. */
static inline int perch__json_int(perch_str s, int64_t *v) {
    uint32_t i = 0;
    int neg = s.len > 0 && s.ptr[0] == '-';
    i += (uint32_t)neg;
    if (i == s.len) return 0;
    uint64_t u = 0, lim = neg ? 1ull << 63 : (1ull << 63) - 1;
    for (; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9') return 0;
        uint64_t d = (uint64_t)(s.ptr[i] - '0');
        if (u > (lim - d) / 10) return 0;
        u = u * 10 + d;
    }
    *v = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 1;
}

/* perch_config_decode decodes the config JSON (len bytes) into the variables of fields, as the
 * Go SDK decodes it into a struct of type type_name (such as "window.Config", for messages) with
 * those fields; see above. Decoded strings live in a buffer from malloc that *arena receives
 * (free it when done with them; it is set, possibly to NULL, in every case). It returns 1, or
 * 0 with the Go SDK's message appended to err (variables may then be partly set). */
static inline int perch_config_decode(const char *json, uint32_t len, const perch_cfg_field *fields,
                                      uint32_t nfields, const char *type_name, perch_text *err,
                                      char **arena) {
    perch__json j = {json, json + len, NULL, 0, 0, err, err->len, 0, 0};
    *arena = NULL;
    perch__json_ws(&j);
    if (j.p == j.end) return 1; /* no config: the defaults */
    if (len > UINT32_MAX / 4 - 16 || (j.arena = (char *)malloc((size_t)len * 4 + 16)) == NULL) {
        perch_text_cstr(err, "perch: config: out of memory");
        return 0;
    }
    *arena = j.arena;
    j.cap = len * 4 + 16;
    if (*j.p != '{') {
        int type = perch__json_value(&j, NULL, 0);
        if (type == 0) return 0;
        if (type != PERCH__JSON_NULL) {
            perch_text *e = perch__json_fail(&j);
            perch_text_cstr(e, "perch: config: json: cannot unmarshal ");
            perch_text_cstr(e, perch__json_type_name(type));
            perch_text_cstr(e, " into Go value of type ");
            perch_text_cstr(e, type_name);
        }
        goto end;
    }
    j.p++;
    perch__json_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        goto end;
    }
    for (;;) {
        perch__json_ws(&j);
        if (j.p >= j.end) return perch__json_syntax(&j, "");
        if (*j.p != '"') return perch__json_syntax(&j, "looking for beginning of object key string");
        uint32_t mark = j.used;
        perch_str key;
        if (!perch__json_string(&j, &key)) return 0;
        perch__json_ws(&j);
        if (j.p >= j.end) return perch__json_syntax(&j, "");
        if (*j.p != ':') return perch__json_syntax(&j, "after object key");
        j.p++;
        const perch_cfg_field *f = NULL;
        for (uint32_t i = 0; i < nfields && f == NULL; i++)
            if (perch_str_eq(key, fields[i].name)) f = &fields[i];
        for (uint32_t i = 0; i < nfields && f == NULL; i++)
            if (perch__fold_eq(key, fields[i].name)) f = &fields[i];
        if (f == NULL) {
            perch_text *e = perch__json_fail(&j);
            perch_text_cstr(e, "perch: config: json: unknown field ");
            perch_text_quote(e, key.ptr, key.len);
        }
        j.used = mark; /* the key is no longer needed */
        perch_str v = {NULL, 0};
        perch__json_ws(&j);
        int is_true = j.p < j.end && *j.p == 't';
        int type = perch__json_value(&j, &v, 1);
        if (type == 0) return 0;
        if (f != NULL) {
            const char *want = f->kind == PERCH_CFG_STRING ? "string"
                               : f->kind == PERCH_CFG_INT  ? "int"
                               : f->kind == PERCH_CFG_BOOL ? "bool"
                                                           : "float64";
            int ok = 0, with_text = 0;
            if (type == PERCH__JSON_NULL) {
                ok = 1;
                if (f->kind == PERCH_CFG_OPT_FLOAT) ((perch_opt_float *)f->dst)->set = 0;
            } else if (type == PERCH__JSON_BOOL && f->kind == PERCH_CFG_BOOL) {
                ok = 1;
                *(int *)f->dst = is_true;
            } else if (type == PERCH__JSON_STRING && f->kind == PERCH_CFG_STRING) {
                ok = 1;
                *(perch_str *)f->dst = v;
            } else if (type == PERCH__JSON_NUMBER && f->kind == PERCH_CFG_INT) {
                ok = perch__json_int(v, (int64_t *)f->dst);
                with_text = 1;
            } else if (type == PERCH__JSON_NUMBER && f->kind != PERCH_CFG_STRING && f->kind != PERCH_CFG_BOOL) {
                char *lit = j.arena + j.used; /* room: the arena is 4x the input */
                double x = 0;
                if (v.len < j.cap - j.used) {
                    memcpy(lit, v.ptr, v.len);
                    lit[v.len] = 0;
                    x = strtod(lit, NULL);
                    ok = !__builtin_isinf(x);
                }
                with_text = 1;
                if (ok && f->kind == PERCH_CFG_FLOAT) *(double *)f->dst = x;
                if (ok && f->kind == PERCH_CFG_OPT_FLOAT)
                    *(perch_opt_float *)f->dst = (perch_opt_float){1, x};
            }
            if (!ok) {
                perch_text *e = perch__json_fail(&j);
                perch_text_cstr(e, "perch: config field ");
                perch_text_quote(e, f->name, (uint32_t)strlen(f->name));
                perch_text_cstr(e, ": a JSON ");
                perch_text_cstr(e, perch__json_type_name(type));
                if (with_text) {
                    perch_text_byte(e, ' ');
                    perch_text_str(e, v);
                }
                perch_text_cstr(e, " cannot be a ");
                perch_text_cstr(e, want);
            }
        }
        perch__json_ws(&j);
        if (j.p >= j.end) return perch__json_syntax(&j, "");
        if (*j.p == ',') {
            j.p++;
            continue;
        }
        if (*j.p != '}') return perch__json_syntax(&j, "after object key:value pair");
        j.p++;
        break;
    }
end:
    if (j.failed) return 0;
    perch__json_ws(&j);
    if (j.p < j.end && *j.p != ']' && *j.p != '}') {
        perch_text_cstr(err, "perch: config: data after the JSON object");
        return 0;
    }
    return 1;
}

/* perch_config_read reads the module's config (JSON) into a NUL-terminated buffer from malloc,
 * *json, of *len bytes (free it when done). It returns the errno of perch:config/v1 get. */
static inline perch_errno perch_config_read(char **json, uint32_t *len) {
    uint32_t cap = 1024;
    *json = NULL;
    *len = 0;
    for (int tries = 0; tries < 4; tries++) { /* the config can change between calls */
        char *buf = (char *)malloc((size_t)cap + 1);
        if (buf == NULL) return PERCH_ENOSPC;
        uint32_t n = 0;
        perch_errno e = perch_config_get(buf, cap, &n);
        if (e == PERCH_OK && n <= cap) {
            buf[n] = 0;
            *json = buf;
            *len = n;
            return PERCH_OK;
        }
        free(buf);
        if (e == PERCH_OK) return PERCH_EFAULT;
        if (e != PERCH_ENOSPC || n <= cap || n > (64u << 20)) return e;
        cap = n;
    }
    return PERCH_ENOSPC;
}
#endif /* PERCH_NO_MALLOC */


/* ---- Module boilerplate: init, process and poll helpers -------------------------------------- */
/*
 * What the first-party modules (the C files under modules/) share around their own logic. None
 * of it runs on a per-record path: it is the start and end of perch_init and the error paths of
 * perch_process and perch_poll, worded as the Go SDK worded them.
 *
 *   perch_errno perch_init(void) {
 *       static char msgbuf[1024];
 *       perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
 *       perch_text_cstr(&msg, "perch_init failed: ");
 *       char *json = NULL, *arena = NULL;
 *       uint32_t n = 0;
 *       perch_errno e = perch_init_config(&msg, &json, &n);
 *       if (e != PERCH_OK) return e;
 *       ... decode, check, set up; on an error append why to msg and goto done ...
 *   done:
 *       return perch_init_finish(e, &msg, json, arena);
 *   }
 */

/* perch_text_errno appends "<prefix><op>: perch: <ERRNO>" to t and returns e: with prefix
 * "bme280: ", such as "bme280: read data: perch: ENACK", as the Go drivers wrap a host call's
 * error. */
static inline perch_errno perch_text_errno(perch_text *t, const char *prefix, const char *op, perch_errno e) {
    perch_text_cstr(t, prefix);
    perch_text_cstr(t, op);
    perch_text_cstr(t, ": perch: ");
    perch_text_cstr(t, perch_errno_name(e));
    return e;
}

/* perch_log_will_retry logs at warning level "perch_init: <why>; will retry at each poll", written
 * into buf (cap bytes; it may be perch_init's message buffer, which is then no longer needed): for
 * a driver whose device does not answer at init, which is not an error. */
static inline void perch_log_will_retry(char *buf, uint32_t cap, const perch_text *why) {
    perch_text warn = perch_text_init(buf, cap);
    perch_text_cstr(&warn, "perch_init: ");
    perch_text_put(&warn, why->p, why->len);
    perch_text_cstr(&warn, "; will retry at each poll");
    perch_log_text(PERCH_LEVEL_WARN, &warn);
}

/* perch_reading_template writes into rec (cap bytes) the reading a driver emits at every sample,
 * for perch_poll to copy and fill in: kind reading, time 0 (the host stamps it), empty source (the
 * host fills in the module's name), series (cut at 255 bytes) and the n fields names, valued 0.
 * value_at[i] receives the offset in rec of field i's value (8 bytes, a little-endian double,
 * for memcpy). It returns the record's length. cap must hold the record (perch_begin). */
static inline uint32_t perch_reading_template(uint8_t *rec, uint32_t cap, perch_str series,
                                              const perch_str *names, uint32_t n, uint32_t *value_at) {
    perch_builder t;
    perch_builder_init(&t, rec, cap);
    perch_begin(&t, PERCH_KIND_READING, 0, PERCH_STR(""), series);
    for (uint32_t i = 0; i < n; i++) {
        perch_field(&t, names[i], 0);
        value_at[i] = t.len - 8;
    }
    perch_end(&t);
    return t.len;
}

/* perch_process_batch_ok reports whether the batch perch_process was handed lies inside in (the
 * buffer perch_buffer returned), and logs at error level when it does not (return PERCH_EFAULT
 * then). */
static inline int perch_process_batch_ok(const perch_buf *in, const uint8_t *batch, int32_t len) {
    if (perch_buf_holds(in, batch, len)) return 1;
    perch_log(PERCH_LEVEL_ERROR, "perch_process failed: the batch is not inside the perch_buffer buffer");
    return 0;
}

/* perch_process_decode_failed logs at error level "perch_process failed: <decode error> at byte
 * <offset>" for a batch that did not decode (it->err set) and returns PERCH_EIO: as the Go SDK,
 * the call's output is dropped. */
static inline perch_errno perch_process_decode_failed(const perch_iter *it) {
    char buf[160];
    perch_text t = perch_text_init(buf, sizeof buf);
    perch_text_cstr(&t, "perch_process failed: ");
    perch_text_cstr(&t, perch_decode_error(it->err));
    perch_text_cstr(&t, " at byte ");
    perch_text_u64(&t, it->off);
    perch_log_text(PERCH_LEVEL_ERROR, &t);
    return PERCH_EIO;
}

/* perch_process_each is the whole of perch_process for a filter or rule that handles records one
 * at a time: it checks that the batch lies inside in (perch_process_batch_ok; PERCH_EFAULT), starts
 * the builder b on out, calls each on every record, two records per loop iteration (under the
 * runtime a loop iteration costs a trip to the host), and emits what b then holds, if anything. A
 * batch that does not decode fails with PERCH_EIO (perch_process_decode_failed), whatever each
 * wrote dropped. It is always inlined, so that each, a constant, is called directly (and inlined
 * where each is):
 *
 *   perch_errno perch_process(const uint8_t *batch, int32_t len) {
 *       return perch_process_each(&in, &b, &out, batch, len, reading);
 *   }
 */
static inline __attribute__((always_inline)) perch_errno
perch_process_each(const perch_buf *in, perch_builder *b, const perch_buf *out, const uint8_t *batch, int32_t len,
                   void (*each)(const perch_record *)) {
    if (!perch_process_batch_ok(in, batch, len)) return PERCH_EFAULT;
    perch_builder_init(b, out->ptr, out->cap);
    perch_iter it = perch_iter_init(batch, (uint32_t)len);
    perch_record r;
    while (perch_next(&it, &r)) {
        each(&r);
        if (!perch_next(&it, &r)) break;
        each(&r);
    }
    if (it.err) return perch_process_decode_failed(&it);
    return b->len ? perch_emit(b->buf, b->len) : PERCH_OK;
}

/* ---- State handoff: perch_snapshot and perch_restore ----------------------------------------- */
/*
 * On a hot swap the host calls the old binary's perch_snapshot between two calls; it writes its
 * in-memory state (a partial window, raised alerts) with perch_save. The host then starts the new
 * binary (perch_init as usual), writes the bytes into its perch_buffer buffer and calls
 * perch_restore(ptr, len). Both exports are optional: without them the new binary starts fresh.
 *
 * The bytes are the module's own: start them with a magic and a format version of yours
 * (perch_snap_begin), and have perch_restore refuse (PERCH_EINVAL, perch_restore_refuse) any
 * snapshot it does not understand, wholly, before changing any state; the host then starts a
 * fresh instance and records why. perch_snap_w writes a snapshot, perch_snap_r reads one with
 * every read bounds-checked:
 *
 *   perch_errno perch_snapshot(void) {
 *       perch_snap_w w = perch_snap_begin(MAGIC, 1, config_hash);
 *       perch_snap_u64(&w, count);
 *       return perch_snap_save(&w);
 *   }
 *   perch_errno perch_restore(const uint8_t *p, int32_t len) {
 *       perch_snap_r r;
 *       if (!perch_snap_open(&r, &in, p, len, MAGIC, 1, config_hash)) return perch_restore_refuse(r.why);
 *       uint64_t n = perch_snap_get_u64(&r);
 *       if (!perch_snap_done(&r)) return perch_restore_refuse(r.why);
 *       count = n;
 *       return PERCH_OK;
 *   }
 */

#ifndef PERCH_NO_MALLOC
/* perch_snap_r reads a snapshot. A read past the end or a bad value sets why (and every later
 * read returns zeroes); perch_snap_done checks that all was read and nothing failed. */
typedef struct {
    const uint8_t *p;
    uint32_t len, off;
    const char *why; /* NULL while all is well */
} perch_snap_r;

/* perch_snap_fail records why the snapshot cannot be read (the first reason wins). */
static inline void perch_snap_fail(perch_snap_r *r, const char *why) {
    if (r->why == NULL) r->why = why;
    r->off = r->len;
}

/* perch_snap_get returns the next n bytes, or NULL (and why is set) past the end. */
static inline const uint8_t *perch_snap_get(perch_snap_r *r, uint32_t n) {
    if (r->why != NULL || n > r->len - r->off) {
        perch_snap_fail(r, "the snapshot is truncated");
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static inline uint8_t perch_snap_get_u8(perch_snap_r *r) {
    const uint8_t *p = perch_snap_get(r, 1);
    return p ? p[0] : 0;
}

static inline uint32_t perch_snap_get_u32(perch_snap_r *r) {
    uint32_t v = 0;
    const uint8_t *p = perch_snap_get(r, 4);
    if (p) memcpy(&v, p, 4);
    return v;
}

static inline uint64_t perch_snap_get_u64(perch_snap_r *r) {
    uint64_t v = 0;
    const uint8_t *p = perch_snap_get(r, 8);
    if (p) memcpy(&v, p, 8);
    return v;
}

static inline double perch_snap_get_f64(perch_snap_r *r) {
    double v = 0;
    const uint8_t *p = perch_snap_get(r, 8);
    if (p) memcpy(&v, p, 8);
    return v;
}

/* perch_snap_open starts reading the snapshot perch_restore was handed: it checks that it lies
 * inside in (the perch_buffer buffer) and that its header is magic (4 bytes), version and config
 * (a hash of the config the snapshot was taken under, or 0 to skip the check). It returns 0, with
 * r->why set, for a snapshot this module cannot take. */
static inline int perch_snap_open(perch_snap_r *r, const perch_buf *in, const uint8_t *p, int32_t len,
                                  const char magic[4], uint32_t version, uint64_t config) {
    *r = (perch_snap_r){p, len < 0 ? 0 : (uint32_t)len, 0, NULL};
    if (!perch_buf_holds(in, p, len)) {
        perch_snap_fail(r, "the snapshot is not inside the perch_buffer buffer");
        return 0;
    }
    const uint8_t *m = perch_snap_get(r, 4);
    if (m == NULL || memcmp(m, magic, 4) != 0) {
        perch_snap_fail(r, "the snapshot is not one of this module's (unknown magic)");
        return 0;
    }
    if (perch_snap_get_u32(r) != version) {
        perch_snap_fail(r, "the snapshot's format version is not one this binary reads");
        return 0;
    }
    uint64_t c = perch_snap_get_u64(r);
    if (r->why == NULL && config != 0 && c != config) perch_snap_fail(r, "the snapshot was taken under another config");
    return r->why == NULL;
}

/* perch_snap_done reports whether the snapshot was read to its end without a problem. */
static inline int perch_snap_done(perch_snap_r *r) {
    if (r->why == NULL && r->off != r->len) perch_snap_fail(r, "the snapshot has bytes after its end");
    return r->why == NULL;
}

/* perch_restore_refuse logs "perch_restore: refused: <why>" at warning level and returns
 * PERCH_EINVAL, for perch_restore to return: the host then starts the module fresh. */
static inline perch_errno perch_restore_refuse(const char *why) {
    char buf[200];
    perch_text t = perch_text_init(buf, sizeof buf);
    perch_text_cstr(&t, "perch_restore: refused: ");
    perch_text_cstr(&t, why ? why : "unknown");
    perch_log_text(PERCH_LEVEL_WARN, &t);
    return PERCH_EINVAL;
}

/* perch_snap_w writes a snapshot into a growing heap buffer; failed is set when memory ran out
 * or the snapshot grew past PERCH_MAX_SNAPSHOT. */
typedef struct {
    perch_buf buf;
    uint32_t len;
    int failed;
} perch_snap_w;

/* perch_snap_put appends n bytes. */
static inline void perch_snap_put(perch_snap_w *w, const void *p, uint32_t n) {
    if (w->failed) return;
    if (n > PERCH_MAX_SNAPSHOT - w->len) {
        w->failed = 1;
        return;
    }
    if (w->len + n > w->buf.cap) {
        uint8_t *q = perch_buf_grow(&w->buf, w->len + n, w->len);
        if (q == NULL) {
            w->failed = 1;
            return;
        }
    }
    memcpy(w->buf.ptr + w->len, p, n);
    w->len += n;
}

static inline void perch_snap_u8(perch_snap_w *w, uint8_t v) { perch_snap_put(w, &v, 1); }
static inline void perch_snap_u32(perch_snap_w *w, uint32_t v) { perch_snap_put(w, &v, 4); }
static inline void perch_snap_u64(perch_snap_w *w, uint64_t v) { perch_snap_put(w, &v, 8); }
static inline void perch_snap_f64(perch_snap_w *w, double v) { perch_snap_put(w, &v, 8); }

/* perch_snap_begin starts a snapshot with its header: magic (4 bytes), format version and config
 * (see perch_snap_open). */
static inline perch_snap_w perch_snap_begin(const char magic[4], uint32_t version, uint64_t config) {
    perch_snap_w w = {{NULL, 0}, 0, 0};
    perch_snap_put(&w, magic, 4);
    perch_snap_u32(&w, version);
    perch_snap_u64(&w, config);
    return w;
}

/* perch_snap_save hands the snapshot to the host (perch_save), frees it and returns the errno for
 * perch_snapshot to return: PERCH_ENOSPC (logged at warning level) when it could not be written
 * whole, and then nothing is handed over. */
static inline perch_errno perch_snap_save(perch_snap_w *w) {
    perch_errno e = PERCH_ENOSPC;
    if (w->failed) {
        perch_log(PERCH_LEVEL_WARN, "perch_snapshot: the state does not fit in a snapshot (out of memory, or over 1 MiB)");
    } else {
        e = perch_save(w->buf.ptr, w->len);
    }
    free(w->buf.ptr);
    *w = (perch_snap_w){{NULL, 0}, 0, 0};
    return e;
}

/* perch_init_config reads the config for perch_init (perch_config_read). On an error it appends
 * "perch: config: perch: <ERRNO>" to msg (which holds "perch_init failed: "), logs msg at error
 * level and returns the errno, for perch_init to return; nothing is then allocated. */
static inline perch_errno perch_init_config(perch_text *msg, char **json, uint32_t *len) {
    perch_errno e = perch_config_read(json, len);
    if (e != PERCH_OK) {
        perch_text_cstr(msg, "perch: config: perch: ");
        perch_text_cstr(msg, perch_errno_name(e));
        perch_log_text(PERCH_LEVEL_ERROR, msg);
    }
    return e;
}

/* perch_init_finish ends perch_init: unless e is PERCH_OK it logs msg at error level; it frees
 * the config (perch_init_config) and the decoder's arena (perch_config_decode), and returns e. */
static inline perch_errno perch_init_finish(perch_errno e, const perch_text *msg, char *json, char *arena) {
    if (e != PERCH_OK) perch_log_text(PERCH_LEVEL_ERROR, msg);
    free(arena);
    free(json);
    return e;
}
#endif /* PERCH_NO_MALLOC */

#endif /* PERCH_H */
