/*
 * scale - a Perch filter in C: every numeric field of every reading becomes value*factor+offset.
 *
 * Config (JSON, both optional): {"factor": 1.8, "offset": 32}; defaults 1 and 0.
 * Readings are re-emitted with the same time, series, field names and tags (source left empty
 * for the host to fill in); records of other kinds are dropped.
 *
 * Build (from the repository root):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra -Isdk/c \
 *         -Wl,--strip-all -o build/modules/scale.wasm modules/filters/scale/wasm/scale.c
 */
#include "perch.h"

static double factor = 1.0, offset = 0.0;

/* in is the buffer perch_buffer hands the host; out holds one call's output. An output record is
 * never larger than its input record (the source is dropped), so out is kept as large as in. */
static perch_buf in, out;

PERCH_DEFINE_ABI_VERSION()

uint8_t *perch_buffer(int32_t size) {
    if (size < 0 || perch_buf_reserve(&in, (uint32_t)size) == NULL ||
        perch_buf_reserve(&out, in.cap) == NULL)
        return NULL;
    return in.ptr;
}

/* ---- Config: a JSON object whose members are numbers; nothing else is accepted. ------------ */

typedef struct {
    const char *p, *end;
} scanner;

static void skip_space(scanner *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int accept(scanner *s, char c) {
    skip_space(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* parse_number reads a JSON number. It is exact (correctly rounded) for up to 19 significant
 * digits and decimal exponents within ±22 of them, which covers any sensible factor or offset. */
static int parse_number(scanner *s, double *v) {
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    skip_space(s);
    int neg = s->p < s->end && *s->p == '-';
    if (neg) s->p++;
    uint64_t mant = 0;
    int digits = 0, exp10 = 0, any = 0;
    for (int frac = 0; s->p < s->end; s->p++) {
        char c = *s->p;
        if (c == '.' && !frac) {
            frac = 1;
            continue;
        }
        if (c < '0' || c > '9') break;
        any = 1;
        if (digits < 19) {
            mant = mant * 10 + (uint64_t)(c - '0');
            if (mant) digits++;
            exp10 -= frac;
        } else {
            exp10 += !frac;
        }
    }
    if (!any) return 0;
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        int eneg = 0, e = 0, edigits = 0;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) eneg = *s->p++ == '-';
        for (; s->p < s->end && *s->p >= '0' && *s->p <= '9'; s->p++, edigits++)
            if (e < 10000) e = e * 10 + (*s->p - '0');
        if (!edigits) return 0;
        exp10 += eneg ? -e : e;
    }
    double x = (double)mant;
    for (; exp10 > 22; exp10 -= 22) x *= 1e22;
    for (; exp10 < -22; exp10 += 22) x /= 1e22;
    x = exp10 < 0 ? x / pow10[-exp10] : x * pow10[exp10];
    *v = neg ? -x : x;
    return 1;
}

static void config_error(const char *msg, perch_str field) {
    char line[160];
    size_t n = 0;
    const char *prefix = "scale: config";
    for (const char *p = prefix; *p && n < sizeof line; p++) line[n++] = *p;
    if (field.len) {
        const char *f = " field \"";
        for (const char *p = f; *p && n < sizeof line; p++) line[n++] = *p;
        for (uint32_t i = 0; i < field.len && n < sizeof line - 2; i++) line[n++] = field.ptr[i];
        line[n++] = '"';
    }
    for (const char *p = ": "; *p && n < sizeof line; p++) line[n++] = *p;
    for (const char *p = msg; *p && n < sizeof line; p++) line[n++] = *p;
    perch_log_write(PERCH_LEVEL_ERROR, line, (uint32_t)n);
}

/* parse_config sets factor and offset from the config, or logs the first problem and returns 0
 * leaving them unchanged. */
static int parse_config(const char *json, uint32_t len) {
    double f = factor, o = offset;
    scanner s = {json, json + len};
    skip_space(&s);
    if (s.p == s.end) return 1; /* no config: the defaults */
    if (!accept(&s, '{')) {
        config_error("not a JSON object", PERCH_STR(""));
        return 0;
    }
    if (accept(&s, '}')) goto end;
    do {
        if (!accept(&s, '"')) {
            config_error("expected a field name", PERCH_STR(""));
            return 0;
        }
        perch_str key = {s.p, 0};
        while (s.p < s.end && *s.p != '"' && *s.p != '\\') s.p++;
        key.len = (uint32_t)(s.p - key.ptr);
        if (!accept(&s, '"') || !accept(&s, ':')) {
            config_error("bad field name", key);
            return 0;
        }
        double *dst = perch_str_eq(key, "factor") ? &f : perch_str_eq(key, "offset") ? &o : NULL;
        if (dst == NULL) {
            config_error("unknown field (want factor, offset)", key);
            return 0;
        }
        if (!parse_number(&s, dst)) {
            config_error("not a number", key);
            return 0;
        }
    } while (accept(&s, ','));
    if (!accept(&s, '}')) {
        config_error("expected , or } after a field", PERCH_STR(""));
        return 0;
    }
end:
    skip_space(&s);
    if (s.p != s.end) {
        config_error("data after the JSON object", PERCH_STR(""));
        return 0;
    }
    factor = f;
    offset = o;
    return 1;
}

perch_errno perch_init(void) {
    static char small[512];
    char *buf = small;
    uint32_t n = 0;
    perch_errno e = perch_config_get(buf, sizeof small, &n);
    if (e == PERCH_ENOSPC) {
        buf = malloc(n);
        if (buf == NULL) return PERCH_ENOSPC;
        e = perch_config_get(buf, n, &n);
    }
    int ok = e == PERCH_OK && parse_config(buf, n);
    if (buf != small) free(buf);
    if (e != PERCH_OK) {
        perch_log(PERCH_LEVEL_ERROR, "scale: cannot read the config");
        return e;
    }
    return ok ? PERCH_OK : PERCH_EINVAL;
}

/* ---- Processing --------------------------------------------------------------------------- */

perch_errno perch_process(const uint8_t *batch, int32_t len) {
    if (!perch_buf_holds(&in, batch, len)) {
        perch_log(PERCH_LEVEL_ERROR, "scale: the batch is not inside the perch_buffer buffer");
        return PERCH_EFAULT;
    }
    perch_builder b;
    perch_builder_init(&b, out.ptr, out.cap);
    perch_iter it = perch_iter_init(batch, (uint32_t)len);
    perch_record r;
    while (perch_next(&it, &r)) {
        if (r.kind != PERCH_KIND_READING) continue;
        perch_begin(&b, PERCH_KIND_READING, r.time_ns, PERCH_STR(""), r.series);
        perch_cursor c = perch_fields(&r);
        perch_str name, key, value;
        double v;
        while (perch_next_field(&c, &name, &v)) perch_field(&b, name, v * factor + offset);
        while (perch_next_tag(&c, &key, &value)) perch_tag(&b, key, value);
        perch_end(&b);
    }
    if (it.err) {
        perch_log(PERCH_LEVEL_ERROR, "scale: the batch does not decode");
        return PERCH_EIO;
    }
    return b.len ? perch_emit(b.buf, b.len) : PERCH_OK;
}
