/*
 * window - the Perch window filter in C: count, mean, min, max and standard deviation of every
 * numeric field of readings over tumbling time windows, per (source, series).
 *
 * It does what the Go package github.com/perch-edge/perch/modules/filters/window does (the
 * reference logic; the differential tests in ../module_test.go hold the two to the same output),
 * with the same config, the same summaries and the same errors, within the limits below. See
 * ../README.md.
 *
 * Config (JSON): {"window": "10s", "series": "environment"}; window is required (a Go duration),
 * series is optional (empty: every series).
 *
 * Limits (the Go version has none; past them readings are dropped and counted, and the count is
 * logged at warning level when it reaches 1, 2, 4, 8, ...):
 *   - MAX_GROUPS (source, series) pairs over the module's life: readings of a new pair are
 *     dropped once there are that many;
 *   - MAX_FIELDS distinct field names per (source, series): the values of further fields are
 *     dropped. 51 is what fits anyway: a summary has 5 fields per input field and a record at
 *     most 255 fields.
 *
 * The hot path runs no loop of its own for records of at most four fields and two tags, and the
 * walk over the batch takes one iteration per two records (every loop iteration costs a trip to
 * the host under the Perch runtime; see perch.h): fields are
 * matched by their position in the previous record of the same (source, series), strings are
 * compared 8 bytes at a time, and the (source, series) of the previous record is cached.
 *
 * Hot swap: perch_snapshot hands the open window (every group and field, in order, with its
 * running count, mean, M2, min and max) and the drop counters to the next binary, and
 * perch_restore takes them back, so that a window that spans a swap is summarized exactly as
 * without it. The snapshot is format "PWIN" version 1 (see snapshot below); perch_restore refuses
 * another format, another config, or one that does not check out.
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/window.wasm \
 *         modules/filters/window/wasm/window.c
 */
#include "perch.h"

#define MAX_GROUPS 1024
#define MAX_FIELDS 51
#define SLOTS      2048 /* hash table slots: a power of two, at least 2 * MAX_GROUPS */

/* acc accumulates one field in the current window (Welford's algorithm for the variance). */
typedef struct {
    int64_t n;
    double mean, m2, lo, hi;
    uint8_t len;
    char name[PERCH_MAX_STRING];
} acc;

/* group is the state of one (source, series). key holds the bytes of a record from the source's
 * length byte to the end of the series: u8 len, source, u8 len, series. */
typedef struct {
    uint64_t hash;
    acc *fields; /* in order of first appearance */
    uint32_t nfields, cap;
    int has_data; /* some field has values in the current window */
    uint32_t key_len;
    uint8_t key[];
} group;

/* Config. */
static char tag[PERCH_MAX_STRING]; /* the window tag: the configured duration, as written */
static uint32_t tag_len;
static char series_filter[PERCH_MAX_STRING];
static uint32_t series_len;
static int64_t length; /* ns, > 0 */
static uint64_t config_hash; /* of the config JSON, never 0: a snapshot is for this config only */

/* State. */
static int is_open; /* a window is open: start is valid */
static int64_t start; /* the current window is [start, start+length) */
static group *groups[MAX_GROUPS]; /* in order of first appearance, which is the output's */
static uint32_t ngroups;
static uint16_t slots[SLOTS]; /* 1 + index in groups; 0: empty */
static group *last;           /* the group of the previous reading */
static uint64_t late, dropped_groups, dropped_fields, dropped_summaries;

/* Buffers: the batch the host writes in, and one call's output. */
static perch_buf in, out;
static perch_builder b;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

/* ---- Init ------------------------------------------------------------------------------------ */

/* problem starts the next line of an error message: errors.Join puts a newline between. */
static void problem(perch_text *t, uint32_t first) {
    if (t->len > first) perch_text_byte(t, '\n');
}

perch_errno perch_init(void) {
    static char msgbuf[4096];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    uint32_t first = msg.len;
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_init_config(&msg, &json, &n);
    if (e != PERCH_OK) return e;
    perch_str window = {"", 0}, series = {"", 0};
    perch_cfg_field fields[] = {{"window", PERCH_CFG_STRING, &window}, {"series", PERCH_CFG_STRING, &series}};
    if (!perch_config_decode(json, n, fields, 2, "window.Config", &msg, &arena)) {
        e = PERCH_EINVAL;
        goto done;
    }
    /* window.New: every problem, each naming its field. */
    int64_t d = 0;
    if (window.len == 0) {
        perch_text_cstr(&msg, "window: field \"window\" is required: a duration such as \"10s\"");
    } else if (!perch_parse_duration(window.ptr, window.len, &d)) {
        perch_text_cstr(&msg, "window: field \"window\": ");
        perch_text_quote(&msg, window.ptr, window.len);
        perch_text_cstr(&msg, " is not a duration such as \"10s\"");
    } else if (d <= 0) {
        perch_text_cstr(&msg, "window: field \"window\": ");
        perch_text_quote(&msg, window.ptr, window.len);
        perch_text_cstr(&msg, " must be positive");
    } else if (window.len > PERCH_MAX_STRING) {
        perch_text_cstr(&msg, "window: field \"window\" is longer than 255 bytes");
    }
    if (series.len > PERCH_MAX_STRING) {
        problem(&msg, first);
        perch_text_cstr(&msg, "window: field \"series\" is longer than 255 bytes");
    }
    if (msg.len > first) {
        e = PERCH_EINVAL;
        goto done;
    }
    memcpy(tag, window.ptr, window.len);
    tag_len = window.len;
    memcpy(series_filter, series.ptr, series.len);
    series_len = series.len;
    length = d;
    config_hash = perch_hash(json, n) | 1;
done:
    return perch_init_finish(e, &msg, json, arena);
}

/* dropped counts a drop and logs the count when it reaches a power of two. */
__attribute__((noinline)) static void dropped(uint64_t *count, const char *what) {
    *count += 1;
    if ((*count & (*count - 1)) != 0) return;
    char buf[200];
    perch_text t = perch_text_init(buf, sizeof buf);
    perch_text_cstr(&t, "window: ");
    perch_text_u64(&t, *count);
    perch_text_cstr(&t, what);
    perch_log_text(PERCH_LEVEL_WARN, &t);
}

/* ---- Summaries ------------------------------------------------------------------------------- */

static const char *const suffix[5] = {"_count", "_mean", "_min", "_max", "_std"};
static const uint32_t suffix_len[5] = {6, 5, 4, 4, 4};

/* summary_room returns at least the encoded size of g's summary, without a loop: every field
 * written in full, 5 per input field. */
static uint32_t summary_room(const group *g) {
    return PERCH_HEADER_SIZE + 1 + 1 + PERCH_MAX_STRING + g->nfields * 5 * (1 + PERCH_MAX_STRING + 8) +
           2 * (1 + 6 + 1 + PERCH_MAX_STRING);
}

/* emit writes a summary for every group with data in the current window and resets them. */
__attribute__((noinline)) static void emit(void) {
    int64_t end = (int64_t)((uint64_t)start + (uint64_t)length);
    for (uint32_t gi = 0; gi < ngroups; gi++) {
        group *g = groups[gi];
        if (!g->has_data) continue;
        perch_str source = {(const char *)g->key + 1, g->key[0]};
        perch_str series = {(const char *)g->key + 2 + g->key[0], g->key[1 + g->key[0]]};
        perch_builder_room(&b, &out, summary_room(g));
        perch_begin(&b, PERCH_KIND_SUMMARY, end, PERCH_STR(""), series);
        for (uint32_t i = 0; i < g->nfields; i++) {
            acc *a = &g->fields[i];
            if (a->n == 0) continue;
            double v[5] = {(double)a->n, a->mean, a->lo, a->hi, __builtin_sqrt(a->m2 / (double)a->n)};
            PERCH_UNROLLED
            for (int k = 0; k < 5; k++) {
                char name[PERCH_MAX_STRING + 8];
                uint32_t sn = suffix_len[k];
                memcpy(name, a->name, a->len);
                memcpy(name + a->len, suffix[k], sn);
                perch_field(&b, (perch_str){name, a->len + sn}, v[k]); /* cut at 255 bytes */
            }
            a->n = 0, a->mean = 0, a->m2 = 0;
        }
        perch_tag(&b, PERCH_STR("window"), (perch_str){tag, tag_len});
        perch_tag(&b, PERCH_STR("source"), source);
        uint32_t before = b.dropped;
        perch_end(&b);
        if (b.dropped != before) dropped(&dropped_summaries, " summaries dropped: out of memory");
        g->has_data = 0;
    }
}

/* ---- Groups and fields ----------------------------------------------------------------------- */

static int key_is(const group *g, uint64_t h, const uint8_t *key, uint32_t n) {
    return g->hash == h && g->key_len == n && perch_mem_eq(g->key, key, n);
}

/* find_group returns the group of the key, creating it on first sight, or NULL when it cannot
 * (the reading is then dropped). */
__attribute__((noinline)) static group *find_group(const uint8_t *key, uint32_t n) {
    uint64_t h = perch_hash(key, n);
    uint32_t i = (uint32_t)h & (SLOTS - 1);
    if (slots[i] != 0 && key_is(groups[slots[i] - 1], h, key, n)) return groups[slots[i] - 1];
    while (slots[i] != 0) { /* a collision (the table is at most half full): probe on */
        group *g = groups[slots[i] - 1];
        if (key_is(g, h, key, n)) return g;
        i = (i + 1) & (SLOTS - 1);
    }
    group *g = NULL;
    if (ngroups < MAX_GROUPS) g = (group *)malloc(sizeof(group) + n);
    if (g == NULL) {
        dropped(&dropped_groups,
                " readings dropped: more than 1024 (source, series) pairs, or out of memory");
        return NULL;
    }
    memset(g, 0, sizeof(group));
    g->hash = h;
    g->key_len = n;
    memcpy(g->key, key, n);
    groups[ngroups++] = g;
    slots[i] = (uint16_t)ngroups;
    return g;
}

/* find_field returns the accumulator of the field name in g, adding it on first sight, or NULL
 * when it cannot (the value is then dropped). */
__attribute__((noinline)) static acc *find_field(group *g, const char *name, uint32_t n) {
    for (uint32_t i = 0; i < g->nfields; i++)
        if (g->fields[i].len == n && perch_mem_eq(g->fields[i].name, name, n)) return &g->fields[i];
    if (g->nfields == g->cap) {
        uint32_t cap = g->cap ? 2 * g->cap : 4;
        if (cap > MAX_FIELDS) cap = MAX_FIELDS;
        acc *f = g->nfields < MAX_FIELDS ? (acc *)realloc(g->fields, cap * sizeof(acc)) : NULL;
        if (f == NULL) {
            dropped(&dropped_fields,
                    " values dropped: more than 51 fields in a (source, series), or out of memory");
            return NULL;
        }
        g->fields = f;
        g->cap = cap;
    }
    acc *a = &g->fields[g->nfields++];
    *a = (acc){.len = (uint8_t)n};
    memcpy(a->name, name, n);
    return a;
}

/* add adds the value v of the field at *p (the i-th of its record) to g and moves *p on. */
static inline __attribute__((always_inline)) void add(group *g, uint32_t i, const uint8_t **p) {
    const uint8_t *f = *p;
    uint32_t n = f[0];
    double v;
    memcpy(&v, f + 1 + n, 8);
    *p = f + 9 + n;
    if (!(v - v == 0)) return; /* NaN or infinite */
    /* Records of a series usually list their fields in the same order: try the i-th first. */
    acc *a = i < g->nfields ? &g->fields[i] : NULL;
    if (a == NULL || !(a->len == n && perch_mem_eq(a->name, f + 1, n))) {
        a = find_field(g, (const char *)f + 1, n);
        if (a == NULL) return;
    }
    if (++a->n == 1) {
        a->lo = a->hi = v;
    } else { /* Go's min and max: -0 is less than +0 */
        if (v < a->lo || (v == a->lo && __builtin_signbit(v))) a->lo = v;
        if (v > a->hi || (v == a->hi && !__builtin_signbit(v))) a->hi = v;
    }
    double d = v - a->mean;
    a->mean += d / (double)a->n;
    a->m2 += d * (v - a->mean);
    g->has_data = 1;
}

/* align returns the start of the window that contains t: the largest multiple of length not
 * after t (wrapping around as Go's int64 arithmetic does). */
static int64_t align(int64_t t) {
    int64_t r = t % length;
    uint64_t s = (uint64_t)t - (uint64_t)r;
    if (r < 0) s -= (uint64_t)length;
    return (int64_t)s;
}

/* reading handles one decoded record. */
static inline __attribute__((always_inline)) void reading(const perch_record *r) {
    if (r->kind != PERCH_KIND_READING) return;
    if (series_len != 0 &&
        !(r->series.len == series_len && perch_mem_eq(r->series.ptr, series_filter, series_len)))
        return;
    int64_t t = r->time_ns;
    if (!is_open) {
        start = align(t);
        is_open = 1;
    } else if (t < start) {
        late++;
        return;
    } else if ((uint64_t)t - (uint64_t)start >= (uint64_t)length) { /* t is past the window */
        emit();
        start = align(t);
    }
    const uint8_t *key = (const uint8_t *)r->source.ptr - 1;
    uint32_t key_len = 2 + r->source.len + r->series.len;
    group *g = last;
    if (g == NULL || g->key_len != key_len || !perch_mem_eq(g->key, key, key_len)) {
        if ((g = find_group(key, key_len)) == NULL) return;
        last = g;
    }
    const uint8_t *p = r->body;
    uint32_t nf = r->nfields;
    PERCH_UNROLLED
    for (uint32_t i = 0; i < 4; i++) {
        if (i == nf) return;
        add(g, i, &p);
    }
    for (uint32_t i = 4; i < nf; i++) add(g, i, &p);
}

/* ---- Processing ------------------------------------------------------------------------------ */

perch_errno perch_process(const uint8_t *batch, int32_t len) {
    return perch_process_each(&in, &b, &out, batch, len, reading); /* two records per loop iteration */
}

/* ---- Hot swap: snapshot and restore ---------------------------------------------------------- */

/* The snapshot, after perch_snap_begin's header ("PWIN", version 1, the config's hash), all
 * little-endian:
 *   u8 is_open | i64 start | i64 length | u64 late, dropped_groups, dropped_fields,
 *   dropped_summaries | u32 ngroups | ngroups x group
 *   group: u32 key_len | key (u8 len, source, u8 len, series) | u8 has_data | u32 nfields |
 *          nfields x (u8 len | name | i64 n | f64 mean, m2, lo, hi) */
static const char magic[4] = {'P', 'W', 'I', 'N'};
#define SNAP_VERSION 1

perch_errno perch_snapshot(void) {
    perch_snap_w w = perch_snap_begin(magic, SNAP_VERSION, config_hash);
    perch_snap_u8(&w, (uint8_t)is_open);
    perch_snap_u64(&w, (uint64_t)start);
    perch_snap_u64(&w, (uint64_t)length);
    perch_snap_u64(&w, late);
    perch_snap_u64(&w, dropped_groups);
    perch_snap_u64(&w, dropped_fields);
    perch_snap_u64(&w, dropped_summaries);
    perch_snap_u32(&w, ngroups);
    for (uint32_t gi = 0; gi < ngroups; gi++) {
        const group *g = groups[gi];
        perch_snap_u32(&w, g->key_len);
        perch_snap_put(&w, g->key, g->key_len);
        perch_snap_u8(&w, (uint8_t)g->has_data);
        perch_snap_u32(&w, g->nfields);
        for (uint32_t i = 0; i < g->nfields; i++) {
            const acc *a = &g->fields[i];
            perch_snap_u8(&w, a->len);
            perch_snap_put(&w, a->name, a->len);
            perch_snap_u64(&w, (uint64_t)a->n);
            perch_snap_f64(&w, a->mean);
            perch_snap_f64(&w, a->m2);
            perch_snap_f64(&w, a->lo);
            perch_snap_f64(&w, a->hi);
        }
    }
    return perch_snap_save(&w);
}

/* restore_groups reads the groups of a snapshot; with apply 0 it only checks them, with apply 1
 * it creates them (the module must be fresh). It returns 0 with r->why set on a problem. */
static int restore_groups(perch_snap_r *r, uint32_t n, int apply) {
    for (uint32_t gi = 0; gi < n && r->why == NULL; gi++) {
        uint32_t key_len = perch_snap_get_u32(r);
        const uint8_t *key = perch_snap_get(r, key_len);
        if (key == NULL) break;
        if (key_len < 2 || key[0] > key_len - 2 || 2u + key[0] + key[1 + key[0]] != key_len) {
            perch_snap_fail(r, "a group's key is malformed");
            break;
        }
        uint8_t has_data = perch_snap_get_u8(r);
        uint32_t nf = perch_snap_get_u32(r);
        if (nf > MAX_FIELDS) {
            perch_snap_fail(r, "a group has more than 51 fields");
            break;
        }
        group *g = NULL;
        if (apply && (g = find_group(key, key_len)) == NULL) {
            perch_snap_fail(r, "out of memory");
            break;
        }
        for (uint32_t i = 0; i < nf && r->why == NULL; i++) {
            uint8_t len = perch_snap_get_u8(r);
            const uint8_t *name = perch_snap_get(r, len);
            int64_t cnt = (int64_t)perch_snap_get_u64(r);
            double mean = perch_snap_get_f64(r), m2 = perch_snap_get_f64(r);
            double lo = perch_snap_get_f64(r), hi = perch_snap_get_f64(r);
            if (r->why != NULL) break;
            if (cnt < 0) {
                perch_snap_fail(r, "a field has a negative count");
                break;
            }
            if (apply) {
                acc *a = find_field(g, (const char *)name, len);
                if (a == NULL) {
                    perch_snap_fail(r, "out of memory");
                    break;
                }
                a->n = cnt, a->mean = mean, a->m2 = m2, a->lo = lo, a->hi = hi;
            }
        }
        if (apply && r->why == NULL) g->has_data = has_data != 0;
    }
    return r->why == NULL;
}

/* restore_from reads the whole snapshot, checking it (apply 0) or taking it (apply 1). */
static int restore_from(perch_snap_r *r, const uint8_t *snap, int32_t len, int apply) {
    if (!perch_snap_open(r, &in, snap, len, magic, SNAP_VERSION, config_hash)) return 0;
    uint8_t open = perch_snap_get_u8(r);
    int64_t s = (int64_t)perch_snap_get_u64(r);
    int64_t l = (int64_t)perch_snap_get_u64(r);
    uint64_t c[4];
    for (int i = 0; i < 4; i++) c[i] = perch_snap_get_u64(r);
    uint32_t n = perch_snap_get_u32(r);
    if (r->why == NULL && (open > 1 || l != length)) perch_snap_fail(r, "the snapshot's window is not this one's");
    if (r->why == NULL && n > MAX_GROUPS) perch_snap_fail(r, "the snapshot has more than 1024 groups");
    if (r->why != NULL) return 0;
    if (apply) {
        is_open = open, start = s;
        late = c[0], dropped_groups = c[1], dropped_fields = c[2], dropped_summaries = c[3];
    }
    return restore_groups(r, n, apply) && perch_snap_done(r);
}

perch_errno perch_restore(const uint8_t *snap, int32_t len) {
    if (is_open || ngroups != 0) return perch_restore_refuse("the module has state already: restore into a fresh one");
    perch_snap_r r;
    if (!restore_from(&r, snap, len, 0)) return perch_restore_refuse(r.why); /* nothing changed */
    if (!restore_from(&r, snap, len, 1)) return perch_restore_refuse(r.why); /* out of memory */
    return PERCH_OK;
}
