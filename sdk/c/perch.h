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
 *
 * Records cross the boundary as a batch of binary records. Read a batch with perch_iter and
 * perch_next, the fields and tags of a record with perch_fields / perch_tags and
 * perch_next_field / perch_next_tag; write one with perch_begin, perch_field, perch_tag and
 * perch_end into a perch_builder, and hand the whole batch to the host with one perch_emit call
 * at the end of perch_process or perch_poll. Nothing here allocates except perch_buf_reserve.
 *
 * Build (see modules/filters/scale/README.md):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Isdk/c \
 *         -Wl,--strip-all -o mod.wasm mod.c
 */
#ifndef PERCH_H
#define PERCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifndef PERCH_NO_MALLOC
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

/* ---- Host functions (imports) -------------------------------------------------------------- */
/* Every one returns a perch_errno except perch_now_ns. The host bounds-checks every pointer and
 * copies what it reads before returning; it never keeps a pointer. */

#define PERCH_IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

/* perch:io/v1 emit: hands the host a batch of encoded records (once per call). Past the
 * module's quota the host closes the module. */
PERCH_IMPORT("perch:io/v1", "emit")
perch_errno perch_emit(const void *batch, uint32_t len);

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
 * decode; off is then that record's offset in the batch. */
typedef struct {
    const uint8_t *p;
    uint32_t left;
    uint32_t off;
    int err;
} perch_iter;

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

/* perch_next decodes the next record into *r and returns 1, or returns 0 at the end of the batch
 * or at a record that does not decode (then it->err is set). It checks every length, so a
 * record it returns can be read with the functions below without further checks. */
static inline int perch_next(perch_iter *it, perch_record *r) {
    if (it->err || it->left == 0) return 0;
    const uint8_t *rec = it->p;
    uint32_t size;
    if (it->left < PERCH_HEADER_SIZE + 2) goto bad;
    memcpy(&size, rec, 4);
    if (size < PERCH_HEADER_SIZE + 2 || size > it->left) goto bad;
    if (rec[4] < PERCH_KIND_READING || rec[4] > PERCH_KIND_EVENT) goto bad;
    uint32_t p = PERCH_HEADER_SIZE;
    perch_str source, series;
    if (!perch__str(rec, size, &p, &source) || !perch__str(rec, size, &p, &series)) goto bad;
    uint32_t body = p;
    for (uint32_t i = 0; i < rec[5]; i++) {
        if (!perch__str(rec, size, &p, NULL) || size - p < 8) goto bad;
        p += 8;
    }
    for (uint32_t i = 0; i < 2u * rec[6]; i++)
        if (!perch__str(rec, size, &p, NULL)) goto bad;
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
    it->err = 1;
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

#endif /* PERCH_H */
