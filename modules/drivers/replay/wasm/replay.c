/*
 * replay - the Perch driver for recorded data played back by hal/replay on a UART, in C: it
 * reads the device's lines through perch:hal/v1, takes the field names from the header line and
 * emits one reading per row, at the row's recorded time. See ../README.md for the protocol.
 *
 * Config (JSON): {"port": "replay0", "series": "replay"}; both optional, with those defaults.
 *
 * Position: the driver keeps the index of the next row it has not handed on in its state (key
 * "position", perch:state/v1), saved after each poll that moved it, and at start asks the device
 * to resume there ("#seek N"): a restart loses and repeats nothing of what it had read and not
 * handled.
 *
 * Records out: kind reading, time = the row's recorded time (ns since the Unix epoch), source
 * empty (the host fills it in), the configured series, one field per column, named as the
 * header names it. At the end of the recording ("#eof"), one event record: series replay.eof,
 * time 0 (the host stamps it), field rows (the rows from the recording's start), tag message.
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/replay.wasm \
 *         modules/drivers/replay/wasm/replay.c
 */
#include "perch.h"

#define RX_CAP    65536 /* the longest line, its "\n" included */
#define MAX_READS 64    /* uart reads per poll */
#define READ_CHUNK 4096 /* bytes asked for per read */
#define HEADER    "#perch-replay v1 "
#define HEADER_LEN 17

/* Config. */
static perch_str port, series;
static char port_buf[PERCH_MAX_STRING], series_buf[PERCH_MAX_STRING];

/* Bytes read and not yet taken apart: [pos, have). */
static uint8_t rx[RX_CAP];
static uint32_t have, pos;
static int discarding; /* a line longer than RX_CAP is being skipped up to its "\n" */
static int started;    /* some line was seen: a line before the header is no longer a fragment */

/* The header: a record with every field at 0, and where each value and name sits in it. */
static int ncols; /* 0: no header yet */
static uint8_t tmpl[PERCH_HEADER_SIZE + 2 + PERCH_MAX_STRING + PERCH_MAX_FIELDS * (1 + PERCH_MAX_STRING + 8)];
static uint32_t tmpl_len, value_at[PERCH_MAX_FIELDS], name_at[PERCH_MAX_FIELDS];
static uint64_t rows; /* the index of the next row line: base, plus the row lines since the header */

/* The position kept in state: the row the device was asked to resume from, the position and end
 * last saved. stateful: state works (else the driver falls back to asking for the header). */
#define STATE_KEY     "position"
#define STATE_KEY_LEN 8
static uint64_t base, saved;
static int stateful, seek_pending;
static int eof_done;  /* the end of the recording was reported (replay.eof) */
static int eof_saved; /* ... and saved */

static perch_buf in, out;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

/* ---- Position -------------------------------------------------------------------------------- */

static int parse_int(const uint8_t *s, uint32_t n, int64_t *v);

/* load_position reads the position the last instance saved ("N", or "N eof" once the end was
 * reported) into base and eof_done. Without state (ENOSYS, or the store failing) it warns and
 * the driver falls back to asking for the header; state not granted (EPERM) fails init. */
static perch_errno load_position(perch_text *msg) {
    char v[40];
    uint32_t n = 0;
    perch_errno e = perch_state_get(STATE_KEY, STATE_KEY_LEN, v, sizeof v, &n);
    stateful = 1;
    if (e == PERCH_ENOENT) return PERCH_OK;
    if (e == PERCH_EPERM) {
        perch_text_cstr(msg, "replay: read position: perch: EPERM");
        return e;
    }
    if (e == PERCH_OK) {
        uint32_t end = 0;
        while (end < n && v[end] != ' ') end++;
        int64_t pos;
        int eof = end < n && n - end == 4 && perch_mem_eq(v + end, " eof", 4);
        if (parse_int((const uint8_t *)v, end, &pos) && pos >= 0 && (end == n || eof)) {
            base = saved = (uint64_t)pos;
            eof_done = eof_saved = eof;
            return PERCH_OK;
        }
    }
    char buf[160];
    perch_text warn = perch_text_init(buf, sizeof buf);
    perch_text_cstr(&warn, "perch_init: replay: read position: ");
    if (e == PERCH_OK) {
        perch_text_cstr(&warn, "bad value ");
        perch_text_quote(&warn, v, n);
        perch_text_cstr(&warn, "; starting from row 0");
    } else {
        perch_text_cstr(&warn, "perch: ");
        perch_text_cstr(&warn, perch_errno_name(e));
        perch_text_cstr(&warn, "; a restart will resume where the device is, not where this instance stopped");
        stateful = 0;
    }
    perch_log_text(PERCH_LEVEL_WARN, &warn);
    return PERCH_OK;
}

/* send_seek asks the device to resume at row base ("#seek N"), or, without state, for the
 * header. seek_pending stays set until the device took the command. */
static perch_errno send_seek(void) {
    char c[32] = "#seek ";
    uint32_t n = 6;
    perch_errno e;
    if (stateful) {
        char d[20];
        int k = 0;
        uint64_t v = base;
        do d[k++] = (char)('0' + v % 10), v /= 10;
        while (v > 0);
        while (k > 0) c[n++] = d[--k];
        c[n++] = '\n';
        e = perch_uart_write(port.ptr, port.len, c, n);
    } else {
        e = perch_uart_write(port.ptr, port.len, "header\n", 7);
    }
    seek_pending = e != PERCH_OK;
    return e;
}

/* save_position saves the position if it moved, after the poll's records were handed over. */
static perch_errno save_position(perch_text *why) {
    if (!stateful || (rows == saved && eof_done == eof_saved)) return PERCH_OK;
    char v[40];
    perch_text t = perch_text_init(v, sizeof v);
    perch_text_u64(&t, rows);
    if (eof_done) perch_text_cstr(&t, " eof");
    perch_errno e = perch_state_set(STATE_KEY, STATE_KEY_LEN, v, t.len);
    if (e != PERCH_OK) {
        perch_text_cstr(why, "replay: save position: perch: ");
        perch_text_cstr(why, perch_errno_name(e));
        return e;
    }
    saved = rows, eof_saved = eof_done;
    return PERCH_OK;
}

perch_errno perch_init(void) {
    static char msgbuf[1024];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_config_read(&json, &n);
    if (e != PERCH_OK) {
        perch_text_cstr(&msg, "perch: config: perch: ");
        perch_text_cstr(&msg, perch_errno_name(e));
        perch_log_text(PERCH_LEVEL_ERROR, &msg);
        return e;
    }
    perch_str c_port = PERCH_STR("replay0"), c_series = PERCH_STR("replay");
    perch_cfg_field fields[] = {{"port", PERCH_CFG_STRING, &c_port}, {"series", PERCH_CFG_STRING, &c_series}};
    e = PERCH_EINVAL;
    if (!perch_config_decode(json, n, fields, 2, "replay.Config", &msg, &arena)) goto done;
    if (c_port.len == 0 || c_port.len > PERCH_MAX_STRING) {
        perch_text_cstr(&msg, "config: port: want a port name of 1 to 255 bytes, got ");
        perch_text_quote(&msg, c_port.ptr, c_port.len);
        goto done;
    }
    if (c_series.len > PERCH_MAX_STRING) {
        perch_text_cstr(&msg, "config: series: at most 255 bytes");
        goto done;
    }
    if (c_series.len == 0) c_series = PERCH_STR("replay");
    memcpy(port_buf, c_port.ptr, c_port.len);
    port = (perch_str){port_buf, c_port.len};
    memcpy(series_buf, c_series.ptr, c_series.len);
    series = (perch_str){series_buf, c_series.len};

    /* Where the last instance stopped. */
    e = load_position(&msg);
    if (e != PERCH_OK) goto done;

    /* Ask the device to resume there (or, without state, for the header: an instance that
     * starts in the middle of a replay needs it). A port that is not granted is a
     * configuration error; one that fails now may not be: the seek is tried again at each
     * poll. */
    e = send_seek();
    if (e == PERCH_EPERM) {
        perch_text_cstr(&msg, stateful ? "replay: seek command: perch: EPERM" : "replay: header command: perch: EPERM");
    } else if (e != PERCH_OK) {
        perch_text warn = perch_text_init(msgbuf, sizeof msgbuf);
        perch_text_cstr(&warn, stateful ? "perch_init: replay: seek command: perch: " : "perch_init: replay: header command: perch: ");
        perch_text_cstr(&warn, perch_errno_name(e));
        perch_text_cstr(&warn, "; will retry at each poll");
        perch_log_text(PERCH_LEVEL_WARN, &warn);
        e = PERCH_OK;
    }
done:
    if (e != PERCH_OK) perch_log_text(PERCH_LEVEL_ERROR, &msg);
    free(arena);
    free(json);
    return e;
}

/* ---- Numbers ---------------------------------------------------------------------------------- */

static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_digit(uint8_t c) { return (uint8_t)(c - '0') < 10; }

/* parse_float reads s[0:n) as a decimal number as Go's strconv.FormatFloat(v, 'g', -1, 64)
 * writes it (also "nan", "+Inf", "-Inf", in any case), exactly: up to 19 significant digits and
 * a power of ten within 10^±22 it is one correctly rounded multiplication or division (Clinger's
 * fast path); anything else goes to strtod (correctly rounded in wasi-libc). */
static int parse_float(const uint8_t *s, uint32_t n, double *v) {
    uint32_t i = 0;
    int neg = 0;
    if (n > 0 && (s[0] == '-' || s[0] == '+')) neg = s[0] == '-', i = 1;
    if (n - i == 3) {
        uint32_t w = ((uint32_t)s[i] | (uint32_t)s[i + 1] << 8 | (uint32_t)s[i + 2] << 16) | 0x202020;
        if (w == ('n' | 'a' << 8 | 'n' << 16)) return *v = __builtin_nan(""), 1;
        if (w == ('i' | 'n' << 8 | 'f' << 16)) return *v = neg ? -__builtin_inf() : __builtin_inf(), 1;
    }
    uint64_t m = 0;
    int nd = 0, digits = 0, exp10 = 0, exact = 1;
    for (; i < n && is_digit(s[i]); i++, digits++) {
        if (m == 0 && s[i] == '0') continue;
        if (nd < 19) m = m * 10 + (s[i] - '0'), nd++;
        else exp10++, exact = 0;
    }
    if (i < n && s[i] == '.') {
        for (i++; i < n && is_digit(s[i]); i++, digits++) {
            if (m == 0 && s[i] == '0') {
                exp10--;
                continue;
            }
            if (nd < 19) m = m * 10 + (s[i] - '0'), nd++, exp10--;
            else exact = 0;
        }
    }
    if (digits == 0) return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0, e = 0, ed = 0;
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) eneg = s[i] == '-', i++;
        for (; i < n && is_digit(s[i]); i++, ed++)
            if (e < 100000) e = e * 10 + (s[i] - '0');
        if (ed == 0) return 0;
        exp10 += eneg ? -e : e;
    }
    if (i != n) return 0;
    if (m == 0) return *v = neg ? -0.0 : 0.0, 1;
    if (exact && m <= (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        double d = (double)m;
        d = exp10 < 0 ? d / pow10[-exp10] : d * pow10[exp10];
        return *v = neg ? -d : d, 1;
    }
    static char buf[1024];
    if (n >= sizeof buf) return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    *v = strtod(buf, &end);
    return end == buf + n;
}

/* parse_int reads s[0:n) as a decimal int64. */
static int parse_int(const uint8_t *s, uint32_t n, int64_t *v) {
    uint32_t i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') neg = 1, i = 1;
    if (i == n || n - i > 19) return 0;
    uint64_t u = 0;
    for (; i < n; i++) {
        if (!is_digit(s[i])) return 0;
        u = u * 10 + (s[i] - '0');
    }
    if (u > (uint64_t)INT64_MAX + neg) return 0;
    *v = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 1;
}

/* ---- Lines ------------------------------------------------------------------------------------ */

/* Corrupt lines of one poll: how many, and why the first was. */
static uint32_t bad;
static char badbuf[512];
static perch_text badmsg;

static perch_text *corrupt(void) {
    if (bad++ > 0) return NULL;
    badmsg = perch_text_init(badbuf, sizeof badbuf);
    return &badmsg;
}

static void quote_cut(perch_text *t, const uint8_t *s, uint32_t n) {
    perch_text_quote(t, (const char *)s, n > 40 ? 40 : n);
    if (n > 40) perch_text_cstr(t, "...");
}

/* header parses the column names of a header line (after the prefix) into the template. */
static void header(const uint8_t *s, uint32_t n) {
    ncols = 0;
    rows = base;
    perch_builder b;
    perch_builder_init(&b, tmpl, sizeof tmpl);
    perch_begin(&b, PERCH_KIND_READING, 0, PERCH_STR(""), series);
    int k = 0;
    uint32_t i = 0;
    for (;;) {
        const uint8_t *c = memchr(s + i, ',', n - i);
        uint32_t end = c ? (uint32_t)(c - s) : n;
        perch_text *t;
        if (end == i || end - i > PERCH_MAX_STRING || k == PERCH_MAX_FIELDS) {
            if ((t = corrupt()) != NULL) {
                perch_text_cstr(t, "header: ");
                perch_text_cstr(t, k == PERCH_MAX_FIELDS ? "more than 255 columns"
                                                         : "a column name must have 1 to 255 bytes");
            }
            return;
        }
        name_at[k] = b.len;
        perch_field(&b, (perch_str){(const char *)s + i, end - i}, 0);
        value_at[k++] = b.len - 8;
        if (c == NULL) break;
        i = end + 1;
    }
    perch_end(&b);
    tmpl_len = b.len;
    ncols = k;
}

/* row turns a row line into a record appended to out at *len. */
static perch_errno row(const uint8_t *s, uint32_t n, uint32_t *len) {
    rows++;
    perch_text *t;
    if (ncols == 0) {
        if ((t = corrupt()) != NULL) {
            perch_text_cstr(t, "a row before the header: ");
            quote_cut(t, s, n);
        }
        return PERCH_OK;
    }
    if (out.cap - *len < tmpl_len && perch_buf_grow(&out, *len + tmpl_len, *len) == NULL) {
        rows--; /* not handled: a restart reads it again */
        return PERCH_ENOSPC;
    }
    uint8_t *r = out.ptr + *len;
    memcpy(r, tmpl, tmpl_len);
    const uint8_t *c = memchr(s, ',', n);
    uint32_t end = c ? (uint32_t)(c - s) : n;
    int64_t ts;
    if (!parse_int(s, end, &ts)) {
        if ((t = corrupt()) != NULL) {
            perch_text_cstr(t, "row ");
            perch_text_u64(t, rows);
            perch_text_cstr(t, ": time: want an integer, got ");
            quote_cut(t, s, end);
        }
        return PERCH_OK;
    }
    memcpy(r + 8, &ts, 8);
    int k = 0;
    while (end < n) {
        uint32_t i = end + 1;
        c = memchr(s + i, ',', n - i);
        end = c ? (uint32_t)(c - s) : n;
        double v;
        if (k == ncols) {
            k++;
            break;
        }
        if (!parse_float(s + i, end - i, &v)) {
            if ((t = corrupt()) != NULL) {
                perch_text_cstr(t, "row ");
                perch_text_u64(t, rows);
                perch_text_cstr(t, ": column ");
                perch_text_quote(t, (const char *)tmpl + name_at[k] + 1, tmpl[name_at[k]]);
                perch_text_cstr(t, ": want a number, got ");
                quote_cut(t, s + i, end - i);
            }
            return PERCH_OK;
        }
        memcpy(r + value_at[k++], &v, 8);
    }
    if (k != ncols) {
        if ((t = corrupt()) != NULL) {
            perch_text_cstr(t, "row ");
            perch_text_u64(t, rows);
            perch_text_cstr(t, k > ncols ? ": more values than the " : ": fewer values than the ");
            perch_text_u64(t, (uint64_t)ncols);
            perch_text_cstr(t, " columns");
        }
        return PERCH_OK;
    }
    *len += tmpl_len;
    return PERCH_OK;
}

/* eof appends the replay.eof event to out at *len. */
static perch_errno eof(uint32_t *len) {
    char mbuf[64];
    perch_text m = perch_text_init(mbuf, sizeof mbuf);
    perch_text_cstr(&m, "end of recording after ");
    perch_text_u64(&m, rows);
    perch_text_cstr(&m, " rows");
    perch_log_text(PERCH_LEVEL_INFO, &m);
    uint32_t size = PERCH_HEADER_SIZE + 2 + 10 + 5 + 8 + 8 + m.len + 9;
    if (out.cap - *len < size && perch_buf_grow(&out, *len + size, *len) == NULL) return PERCH_ENOSPC;
    perch_builder b;
    perch_builder_init(&b, out.ptr + *len, size);
    perch_begin(&b, PERCH_KIND_EVENT, 0, PERCH_STR(""), PERCH_STR("replay.eof"));
    perch_field(&b, PERCH_STR("rows"), (double)rows);
    perch_tag(&b, PERCH_STR("message"), (perch_str){m.p, m.len});
    perch_end(&b);
    *len += b.len;
    return PERCH_OK;
}

perch_errno perch_poll(int32_t max) {
    if (max < 0) return PERCH_EINVAL;
    char msgbuf[640];
    perch_text why = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&why, "perch_poll failed: ");
    perch_errno e = PERCH_OK;
    uint32_t len = 0;
    int32_t emitted = 0;
    int reads = 0;
    bad = 0;
    if (seek_pending && (e = send_seek()) != PERCH_OK) {
        perch_text_cstr(&why, stateful ? "replay: seek command: perch: " : "replay: header command: perch: ");
        perch_text_cstr(&why, perch_errno_name(e));
        perch_log_text(PERCH_LEVEL_ERROR, &why);
        return e;
    }
    while (emitted < max) {
        const uint8_t *nl = memchr(rx + pos, '\n', have - pos);
        if (nl == NULL) {
            memmove(rx, rx + pos, have - pos);
            have -= pos, pos = 0;
            if (have == RX_CAP) { /* no "\n" in a whole buffer */
                perch_text *t = discarding ? NULL : corrupt();
                if (t != NULL) perch_text_cstr(t, "a line longer than 65535 bytes");
                discarding = 1, started = 1, have = 0;
            }
            if (reads++ == MAX_READS) break;
            uint32_t n = 0;
            uint32_t room = RX_CAP - have;
            e = perch_uart_read(port.ptr, port.len, rx + have, room < READ_CHUNK ? room : READ_CHUNK, &n);
            if (e != PERCH_OK) {
                perch_text_cstr(&why, "replay: read: perch: ");
                perch_text_cstr(&why, perch_errno_name(e));
                break;
            }
            if (n == 0) break;
            have += n;
            continue;
        }
        const uint8_t *s = rx + pos;
        uint32_t n = (uint32_t)(nl - s);
        pos += n + 1;
        if (discarding) {
            discarding = 0;
            continue;
        }
        if (n > 0 && s[n - 1] == '\r') n--;
        int first = !started;
        started = 1;
        if (n > 0 && s[0] == '#') {
            if (n >= HEADER_LEN && perch_mem_eq(s, HEADER, HEADER_LEN)) {
                header(s + HEADER_LEN, n - HEADER_LEN);
            } else if (n == 4 && perch_mem_eq(s, "#eof", 4) && !eof_done) {
                if ((e = eof(&len)) != PERCH_OK) break;
                eof_done = 1;
                emitted++;
            } else if (n >= 14 && perch_mem_eq(s, "#perch-replay ", 14)) {
                perch_text *t = corrupt();
                ncols = 0; /* rows of an unknown version are not read */
                if (t != NULL) {
                    perch_text_cstr(t, "unknown protocol version: ");
                    quote_cut(t, s, n);
                }
            }
            continue; /* "#loop N" and other control lines */
        }
        if (ncols == 0 && first) continue; /* the tail of a line a previous instance read */
        uint32_t before = len;
        if ((e = row(s, n, &len)) != PERCH_OK) break;
        if (len != before) emitted++;
    }
    if (pos == have) pos = have = 0;

    if (e == PERCH_ENOSPC) perch_text_cstr(&why, "out of memory");
    if (e == PERCH_OK && bad > 0) {
        perch_text_cstr(&why, "replay: ");
        perch_text_u64(&why, bad);
        perch_text_cstr(&why, bad == 1 ? " corrupt line (" : " corrupt lines (first: ");
        perch_text_put(&why, badmsg.p, badmsg.len);
        perch_text_cstr(&why, ")");
        e = PERCH_EIO;
    }
    /* Good rows are handed over even when the call fails: the runtime keeps them and records
     * the errno. */
    if (e != PERCH_OK) perch_log_text(PERCH_LEVEL_ERROR, &why);
    perch_errno ee = len ? perch_emit(out.ptr, len) : PERCH_OK;
    if (e == PERCH_OK) e = ee;
    /* Then the position, once the rows are handed over: a restart resumes after them. (Saved
     * before the emit, a fault in it would lose them.) */
    if (ee == PERCH_OK) {
        char sbuf[96];
        perch_text st = perch_text_init(sbuf, sizeof sbuf);
        perch_text_cstr(&st, "perch_poll failed: ");
        perch_errno es = save_position(&st);
        if (es != PERCH_OK) {
            perch_log_text(PERCH_LEVEL_ERROR, &st);
            if (e == PERCH_OK) e = es;
        }
    }
    return e;
}
