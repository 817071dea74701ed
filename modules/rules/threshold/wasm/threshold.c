/*
 * threshold - the Perch threshold rule in C: one alert when a field stays beyond a limit, one
 * when it comes back, with hysteresis and hold-off, per (source, series).
 *
 * It does what the Go package github.com/perch-edge/perch/modules/rules/threshold does (the
 * reference logic; the differential tests in ../module_test.go hold the two to the same output),
 * with the same config, the same alerts and the same errors, within the limit below. See
 * ../README.md.
 *
 * Config (JSON): {"series": "environment", "field": "temperature_c", "above": 30, "below": 0,
 * "hysteresis": 1.5, "hold_off": "30s", "severity": "critical", "message": "too hot"}; field and
 * one of above and below are required.
 *
 * Limit (the Go version has none): at most MAX_STATES (source, series) pairs over the module's
 * life; records of a new pair past that are dropped and counted, and the count is logged at
 * warning level when it reaches 1, 2, 4, 8, ...
 *
 * The hot path runs no loop of its own when the watched field is among a record's first four
 * fields and the record has at most two tags, and the walk over the batch takes one iteration
 * per two records (every loop iteration costs a trip to the host under the Perch runtime; see
 * perch.h): strings are compared and hashed 8 bytes at a time and
 * the (source, series) of the previous record is cached.
 *
 * Hot swap: perch_snapshot hands every (source, series)'s state (the raised alert's side, the side
 * the value is pending beyond and since when) and the drop counter to the next binary, and
 * perch_restore takes them back, so that an alert raised before a swap is not raised again after
 * it and is cleared when the value comes back. The snapshot is format "PTHR" version 1 (see
 * snapshot below); perch_restore refuses another format, another config, or one that does not
 * check out.
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/threshold.wasm \
 *         modules/rules/threshold/wasm/threshold.c
 */
#include "perch.h"

#define MAX_STATES 1024
#define SLOTS      2048 /* hash table slots: a power of two, at least 2 * MAX_STATES */
#define ALERT_MAX  2048 /* an alert's encoded size is at most about 1.7 KB */

/* Sides of the band. */
enum { INSIDE, HIGH, LOW };

/* state is the rule's state for one (source, series); key holds the bytes of a record from the
 * source's length byte to the end of the series: u8 len, source, u8 len, series. */
typedef struct {
    uint64_t hash;
    uint8_t raised;  /* the side of the raised alert; INSIDE when none is raised */
    uint8_t pending; /* the side beyond whose limit the value has been since since */
    int64_t since;   /* ns */
    uint32_t key_len;
    uint8_t key[];
} state;

/* Config. */
static char series_filter[PERCH_MAX_STRING], field[PERCH_MAX_STRING], severity[PERCH_MAX_STRING];
static uint32_t series_len, field_len, severity_len;
static double above, below, hysteresis, clear_high, clear_low, limit[3];
static int64_t hold_off;                              /* ns */
static uint64_t config_hash; /* of the config JSON, never 0: a snapshot is for this config only */
static char message[3][PERCH_MAX_STRING + 40];        /* by side; cut to 255 bytes when written */
static uint32_t message_len[3];
static const perch_str direction[3] = {{"", 0}, {"above", 5}, {"below", 5}};

/* State. */
static state *states[MAX_STATES];
static uint32_t nstates;
static uint16_t slots[SLOTS]; /* 1 + index in states; 0: empty */
static state *last;           /* the state of the previous record */
static uint64_t dropped;

static perch_buf in, out;
static perch_builder b;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

/* ---- Init ------------------------------------------------------------------------------------ */

/* bad starts a problem about a field, as threshold.New words it. */
static void bad(perch_text *t, uint32_t first, const char *name) {
    if (t->len > first) perch_text_byte(t, '\n'); /* errors.Join */
    perch_text_cstr(t, "threshold: field \"");
    perch_text_cstr(t, name);
    perch_text_cstr(t, "\": ");
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
    perch_str c_series = {"", 0}, c_field = {"", 0}, c_hold_off = {"", 0}, c_severity = {"", 0},
              c_message = {"", 0};
    perch_opt_float c_above = {0, 0}, c_below = {0, 0};
    double c_hysteresis = 0;
    perch_cfg_field fields[] = {
        {"series", PERCH_CFG_STRING, &c_series},          {"field", PERCH_CFG_STRING, &c_field},
        {"above", PERCH_CFG_OPT_FLOAT, &c_above},         {"below", PERCH_CFG_OPT_FLOAT, &c_below},
        {"hysteresis", PERCH_CFG_FLOAT, &c_hysteresis},   {"hold_off", PERCH_CFG_STRING, &c_hold_off},
        {"severity", PERCH_CFG_STRING, &c_severity},      {"message", PERCH_CFG_STRING, &c_message},
    };
    if (!perch_config_decode(json, n, fields, sizeof fields / sizeof fields[0], "threshold.Config", &msg,
                             &arena)) {
        e = PERCH_EINVAL;
        goto done;
    }
    /* threshold.New: every problem, each naming its field. */
    if (c_field.len == 0) {
        bad(&msg, first, "field");
        perch_text_cstr(&msg, "is required: the name of the field to watch");
    }
    const struct {
        const char *name;
        perch_str v;
    } strs[] = {{"series", c_series}, {"field", c_field}, {"severity", c_severity}, {"message", c_message}};
    for (int i = 0; i < 4; i++) {
        if (strs[i].v.len > PERCH_MAX_STRING) {
            bad(&msg, first, strs[i].name);
            perch_text_cstr(&msg, "is longer than 255 bytes");
        }
    }
    if (!c_above.set && !c_below.set) {
        if (msg.len > first) perch_text_byte(&msg, '\n');
        perch_text_cstr(&msg, "threshold: one of the fields \"above\" and \"below\" is required");
    } else if (c_above.set && c_below.set && !(c_below.v < c_above.v)) {
        bad(&msg, first, "below");
        perch_text_g(&msg, c_below.v);
        perch_text_cstr(&msg, " must be less than above (");
        perch_text_g(&msg, c_above.v);
        perch_text_cstr(&msg, ")");
    }
    if (c_above.set && !(c_above.v - c_above.v == 0)) {
        bad(&msg, first, "above");
        perch_text_cstr(&msg, "must be a finite number");
    }
    if (c_below.set && !(c_below.v - c_below.v == 0)) {
        bad(&msg, first, "below");
        perch_text_cstr(&msg, "must be a finite number");
    }
    if (!(c_hysteresis >= 0) || __builtin_isinf(c_hysteresis)) {
        bad(&msg, first, "hysteresis");
        perch_text_g(&msg, c_hysteresis);
        perch_text_cstr(&msg, " must be a finite number, zero or more");
    }
    int64_t d = 0;
    if (c_hold_off.len != 0) {
        if (!perch_parse_duration(c_hold_off.ptr, c_hold_off.len, &d)) {
            bad(&msg, first, "hold_off");
            perch_text_quote(&msg, c_hold_off.ptr, c_hold_off.len);
            perch_text_cstr(&msg, " is not a duration such as \"30s\"");
        } else if (d < 0) {
            bad(&msg, first, "hold_off");
            perch_text_quote(&msg, c_hold_off.ptr, c_hold_off.len);
            perch_text_cstr(&msg, " must not be negative");
        }
    }
    if (msg.len > first) {
        e = PERCH_EINVAL;
        goto done;
    }
    memcpy(series_filter, c_series.ptr, series_len = c_series.len);
    memcpy(field, c_field.ptr, field_len = c_field.len);
    if (c_severity.len == 0) c_severity = PERCH_STR("warning");
    memcpy(severity, c_severity.ptr, severity_len = c_severity.len);
    above = c_above.set ? c_above.v : __builtin_inf();
    below = c_below.set ? c_below.v : -__builtin_inf();
    hysteresis = c_hysteresis;
    clear_high = above - hysteresis;
    clear_low = below + hysteresis;
    hold_off = d;
    limit[HIGH] = above;
    limit[LOW] = below;
    for (int s = HIGH; s <= LOW; s++) {
        perch_text t = perch_text_init(message[s], sizeof message[s]);
        if (c_message.len != 0) {
            perch_text_str(&t, c_message);
        } else { /* "<field> above <limit>" */
            perch_text_str(&t, c_field);
            perch_text_byte(&t, ' ');
            perch_text_str(&t, direction[s]);
            perch_text_byte(&t, ' ');
            perch_text_g(&t, limit[s]);
        }
        message_len[s] = t.len;
    }
    config_hash = perch_hash(json, n) | 1;
done:
    return perch_init_finish(e, &msg, json, arena);
}

/* ---- Alerts ---------------------------------------------------------------------------------- */

__attribute__((noinline)) static void alert(const state *s, int64_t ts, double v, int side, perch_str st) {
    perch_str source = {(const char *)s->key + 1, s->key[0]};
    perch_str series = {(const char *)s->key + 2 + s->key[0], s->key[1 + s->key[0]]};
    perch_builder_room(&b, &out, ALERT_MAX);
    perch_begin(&b, PERCH_KIND_ALERT, ts, PERCH_STR(""), series);
    perch_field(&b, PERCH_STR("value"), v);
    perch_field(&b, PERCH_STR("threshold"), limit[side]);
    perch_tag(&b, PERCH_STR("state"), st);
    perch_tag(&b, PERCH_STR("severity"), (perch_str){severity, severity_len});
    perch_tag(&b, PERCH_STR("message"), (perch_str){message[side], message_len[side]});
    perch_tag(&b, PERCH_STR("field"), (perch_str){field, field_len});
    perch_tag(&b, PERCH_STR("source"), source);
    perch_tag(&b, PERCH_STR("direction"), direction[side]);
    perch_end(&b);
}

/* step advances one state with the value v at time ts (threshold.step). */
static inline __attribute__((always_inline)) void step(state *s, int64_t ts, double v) {
    if ((s->raised == HIGH && v < clear_high) || (s->raised == LOW && v > clear_low)) {
        alert(s, ts, v, s->raised, PERCH_STR("cleared"));
        s->raised = INSIDE;
    } else if (s->raised != INSIDE) {
        return;
    }
    int beyond = v > above ? HIGH : v < below ? LOW : INSIDE;
    if (beyond != s->pending) {
        s->pending = (uint8_t)beyond;
        s->since = ts;
    }
    if (beyond != INSIDE && (int64_t)((uint64_t)ts - (uint64_t)s->since) >= hold_off) {
        alert(s, ts, v, beyond, PERCH_STR("raised"));
        s->raised = (uint8_t)beyond;
        s->pending = INSIDE;
    }
}

/* ---- States ---------------------------------------------------------------------------------- */

/* find_state returns the state of the key, creating it on first sight, or NULL when it cannot
 * (the record is then dropped). */
__attribute__((noinline)) static state *find_state(const uint8_t *key, uint32_t n) {
    uint64_t h = perch_hash(key, n);
    uint32_t i = (uint32_t)h & (SLOTS - 1);
    state *s = states[slots[i] ? slots[i] - 1 : 0];
    if (slots[i] != 0 && s->hash == h && s->key_len == n && perch_mem_eq(s->key, key, n)) return s;
    while (slots[i] != 0) { /* a collision: probe on */
        s = states[slots[i] - 1];
        if (s->hash == h && s->key_len == n && perch_mem_eq(s->key, key, n)) return s;
        i = (i + 1) & (SLOTS - 1);
    }
    s = nstates < MAX_STATES ? (state *)malloc(sizeof(state) + n) : NULL;
    if (s == NULL) {
        dropped++;
        if ((dropped & (dropped - 1)) == 0) { /* log the count when it reaches a power of two */
            char buf[160];
            perch_text t = perch_text_init(buf, sizeof buf);
            perch_text_cstr(&t, "threshold: ");
            perch_text_u64(&t, dropped);
            perch_text_cstr(&t, " records dropped: more than 1024 (source, series) pairs, or out of memory");
            perch_log_text(PERCH_LEVEL_WARN, &t);
        }
        return NULL;
    }
    memset(s, 0, sizeof(state));
    s->hash = h;
    s->key_len = n;
    memcpy(s->key, key, n);
    states[nstates++] = s;
    slots[i] = (uint16_t)nstates;
    return s;
}

/* field_is reports whether the field at f (u8 length, name) is the watched one. */
static inline __attribute__((always_inline)) int field_is(const uint8_t *f) {
    return f[0] == field_len && perch_mem_eq(f + 1, field, field_len);
}

/* record handles one decoded record (threshold.Process). */
static inline __attribute__((always_inline)) void record(const perch_record *r) {
    if (r->kind != PERCH_KIND_READING && r->kind != PERCH_KIND_SUMMARY) return;
    if (series_len != 0 &&
        !(r->series.len == series_len && perch_mem_eq(r->series.ptr, series_filter, series_len)))
        return;
    /* The value of the first field of that name. */
    const uint8_t *p = r->body;
    uint32_t nf = r->nfields, i = 0;
    PERCH_UNROLLED
    for (uint32_t k = 0; k < 4; k++, i++) {
        if (i == nf) return;
        if (field_is(p)) goto found;
        p += 9u + p[0];
    }
    for (; i < nf; i++) {
        if (field_is(p)) goto found;
        p += 9u + p[0];
    }
    return;
found:;
    double v;
    memcpy(&v, p + 1 + p[0], 8);
    if (v != v) return; /* NaN */
    const uint8_t *key = (const uint8_t *)r->source.ptr - 1;
    uint32_t key_len = 2 + r->source.len + r->series.len;
    state *s = last;
    if (s == NULL || s->key_len != key_len || !perch_mem_eq(s->key, key, key_len)) {
        if ((s = find_state(key, key_len)) == NULL) return;
        last = s;
    }
    step(s, r->time_ns, v);
}

/* ---- Processing ------------------------------------------------------------------------------ */

perch_errno perch_process(const uint8_t *batch, int32_t len) {
    return perch_process_each(&in, &b, &out, batch, len, record); /* two records per loop iteration */
}

/* ---- Hot swap: snapshot and restore ---------------------------------------------------------- */

/* The snapshot, after perch_snap_begin's header ("PTHR", version 1, the config's hash), all
 * little-endian:
 *   u64 dropped | u32 nstates | nstates x (u32 key_len | key (u8 len, source, u8 len, series) |
 *   u8 raised | u8 pending | i64 since), in order of first appearance */
static const char magic[4] = {'P', 'T', 'H', 'R'};
#define SNAP_VERSION 1

perch_errno perch_snapshot(void) {
    perch_snap_w w = perch_snap_begin(magic, SNAP_VERSION, config_hash);
    perch_snap_u64(&w, dropped);
    perch_snap_u32(&w, nstates);
    for (uint32_t i = 0; i < nstates; i++) {
        const state *s = states[i];
        perch_snap_u32(&w, s->key_len);
        perch_snap_put(&w, s->key, s->key_len);
        perch_snap_u8(&w, s->raised);
        perch_snap_u8(&w, s->pending);
        perch_snap_u64(&w, (uint64_t)s->since);
    }
    return perch_snap_save(&w);
}

/* restore_from reads the whole snapshot, checking it (apply 0) or taking it (apply 1: the module
 * must be fresh). It returns 0 with r->why set on a problem. */
static int restore_from(perch_snap_r *r, const uint8_t *snap, int32_t len, int apply) {
    if (!perch_snap_open(r, &in, snap, len, magic, SNAP_VERSION, config_hash)) return 0;
    uint64_t d = perch_snap_get_u64(r);
    uint32_t n = perch_snap_get_u32(r);
    if (r->why == NULL && n > MAX_STATES) perch_snap_fail(r, "the snapshot has more than 1024 states");
    for (uint32_t i = 0; i < n && r->why == NULL; i++) {
        uint32_t key_len = perch_snap_get_u32(r);
        const uint8_t *key = perch_snap_get(r, key_len);
        uint8_t raised = perch_snap_get_u8(r), pending = perch_snap_get_u8(r);
        int64_t since = (int64_t)perch_snap_get_u64(r);
        if (r->why != NULL) break;
        if (key_len < 2 || key[0] > key_len - 2 || 2u + key[0] + key[1 + key[0]] != key_len) {
            perch_snap_fail(r, "a state's key is malformed");
            break;
        }
        if (raised > LOW || pending > LOW) {
            perch_snap_fail(r, "a state's side is not one of inside, high and low");
            break;
        }
        if (apply) {
            state *s = find_state(key, key_len);
            if (s == NULL) {
                perch_snap_fail(r, "out of memory");
                break;
            }
            s->raised = raised, s->pending = pending, s->since = since;
        }
    }
    if (!perch_snap_done(r)) return 0;
    if (apply) dropped = d;
    return 1;
}

perch_errno perch_restore(const uint8_t *snap, int32_t len) {
    if (nstates != 0) return perch_restore_refuse("the module has state already: restore into a fresh one");
    perch_snap_r r;
    if (!restore_from(&r, snap, len, 0)) return perch_restore_refuse(r.why); /* nothing changed */
    if (!restore_from(&r, snap, len, 1)) return perch_restore_refuse(r.why); /* out of memory */
    return PERCH_OK;
}
