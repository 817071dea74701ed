/*
 * relay - the Perch actuator for a relay on a GPIO output line, in C: it takes a rule's alerts in
 * and drives the line, energising the relay when an alert is raised and de-energising it when the
 * alert clears (or the other way round), and emits an event for each change. See ../README.md.
 *
 * Config (JSON): {"line": 22, "series": "", "source": "", "on": "raised", "invert": false}; line
 * is required, the others optional with those defaults. series and source, when set, keep only
 * the alerts of that series and from that source (the module that raised the alert). on: the
 * alert state that energises the relay ("raised" or "cleared"); the other state de-energises it.
 * invert: the relay is energised by a low line (an active-low relay board).
 *
 * Records in: alerts (tag state = raised or cleared); other kinds, and alerts without a state
 * tag, are ignored.
 *
 * Records out: for each change of the relay, an event at time 0 (the host stamps it), source
 * empty (the host fills it in), series "actuator", field level (the level written, 0 or 1), tags
 * kind ("relay"), action ("on" or "off"), line, alert_source (the alert's source), alert_series
 * and message. An alert that asks for the state the relay is already in writes nothing and emits
 * nothing.
 *
 * Errors: a write that fails is logged and its errno returned from perch_process (the runtime
 * records a module.error event); the relay's state is then unknown, so the next alert writes
 * the line again. A config error fails perch_init with EINVAL.
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/relay.wasm modules/actuators/relay/wasm/relay.c
 */
#include "perch.h"

#define EVENT_MAX 2048 /* an event's encoded size is well under this */

static int32_t line;
static char series_filter[PERCH_MAX_STRING], source_filter[PERCH_MAX_STRING];
static uint32_t series_len, source_len;
static int on_raised = 1; /* 1: energise on raised; 0: energise on cleared */
static int invert;
static int energised = -1; /* -1: not known */
static char line_text[24];
static uint32_t line_text_len;

static perch_buf in, out;
static perch_builder b;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

perch_errno perch_init(void) {
    static char msgbuf[1024];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_init_config(&msg, &json, &n);
    if (e != PERCH_OK) return e;
    int64_t c_line = -1;
    perch_str c_series = PERCH_STR(""), c_source = PERCH_STR(""), c_on = PERCH_STR("raised");
    int c_invert = 0;
    perch_cfg_field fields[] = {{"line", PERCH_CFG_INT, &c_line},
                                {"series", PERCH_CFG_STRING, &c_series},
                                {"source", PERCH_CFG_STRING, &c_source},
                                {"on", PERCH_CFG_STRING, &c_on},
                                {"invert", PERCH_CFG_BOOL, &c_invert}};
    e = PERCH_EINVAL;
    if (!perch_config_decode(json, n, fields, sizeof fields / sizeof fields[0], "relay.Config", &msg, &arena))
        goto done;
    if (c_line < 0 || c_line > INT32_MAX) {
        perch_text_cstr(&msg, "config: line: want a GPIO line number (0 or more), got ");
        perch_text_i64(&msg, c_line);
        goto done;
    }
    if (c_series.len > PERCH_MAX_STRING || c_source.len > PERCH_MAX_STRING) {
        perch_text_cstr(&msg, "config: series and source: at most 255 bytes");
        goto done;
    }
    if (perch_str_eq(c_on, "raised")) {
        on_raised = 1;
    } else if (perch_str_eq(c_on, "cleared")) {
        on_raised = 0;
    } else {
        perch_text_cstr(&msg, "config: on: want raised or cleared, got ");
        perch_text_quote(&msg, c_on.ptr, c_on.len);
        goto done;
    }
    line = (int32_t)c_line;
    invert = c_invert != 0;
    memcpy(series_filter, c_series.ptr, series_len = c_series.len);
    memcpy(source_filter, c_source.ptr, source_len = c_source.len);
    perch_text lt = perch_text_init(line_text, sizeof line_text);
    perch_text_i64(&lt, line);
    line_text_len = lt.len;
    /* Learn the relay's state from the line, without driving it. A line that cannot be read now
     * (not granted for reading, or not answering) leaves the state unknown: the first alert
     * writes the line, and a write that fails is reported then. */
    uint8_t level;
    perch_errno re = perch_gpio_read(line, &level);
    if (re == PERCH_OK) {
        energised = (level != 0) != invert;
    } else {
        char buf[128];
        perch_text w = perch_text_init(buf, sizeof buf);
        perch_text_cstr(&w, "perch_init: relay: read line ");
        perch_text_i64(&w, line);
        perch_text_cstr(&w, ": perch: ");
        perch_text_cstr(&w, perch_errno_name(re));
        perch_text_cstr(&w, "; the relay's state is unknown until the first alert");
        perch_log_text(PERCH_LEVEL_WARN, &w);
    }
    e = PERCH_OK;
done:
    return perch_init_finish(e, &msg, json, arena);
}

/* event emits what the relay did for an alert of r. */
static void event(const perch_record *r, int on, int level) {
    char buf[PERCH_MAX_STRING];
    perch_text m = perch_text_init(buf, sizeof buf);
    perch_text_cstr(&m, on ? "relay on: line " : "relay off: line ");
    perch_text_put(&m, line_text, line_text_len);
    perch_text_cstr(&m, on ? " driven " : " released ");
    perch_text_cstr(&m, level ? "high" : "low");
    perch_text_cstr(&m, " on an alert from ");
    perch_text_str(&m, r->source);
    perch_builder_room(&b, &out, EVENT_MAX);
    perch_begin(&b, PERCH_KIND_EVENT, 0, PERCH_STR(""), PERCH_STR("actuator"));
    perch_field(&b, PERCH_STR("level"), level);
    perch_tag(&b, PERCH_STR("kind"), PERCH_STR("relay"));
    perch_tag(&b, PERCH_STR("action"), on ? PERCH_STR("on") : PERCH_STR("off"));
    perch_tag(&b, PERCH_STR("line"), (perch_str){line_text, line_text_len});
    perch_tag(&b, PERCH_STR("alert_source"), r->source);
    perch_tag(&b, PERCH_STR("alert_series"), r->series);
    perch_tag(&b, PERCH_STR("message"), (perch_str){buf, m.len});
    perch_end(&b);
}

/* alert handles one record; it returns the errno of a failed write, or PERCH_OK. */
static perch_errno alert(const perch_record *r) {
    if (r->kind != PERCH_KIND_ALERT) return PERCH_OK;
    if (series_len != 0 && !(r->series.len == series_len && perch_mem_eq(r->series.ptr, series_filter, series_len)))
        return PERCH_OK;
    if (source_len != 0 && !(r->source.len == source_len && perch_mem_eq(r->source.ptr, source_filter, source_len)))
        return PERCH_OK;
    perch_cursor c = perch_tags(r);
    perch_str k, v;
    int raised = -1;
    while (perch_next_tag(&c, &k, &v)) {
        if (perch_str_eq(k, "state")) {
            raised = perch_str_eq(v, "raised") ? 1 : perch_str_eq(v, "cleared") ? 0 : -1;
            break;
        }
    }
    if (raised < 0) return PERCH_OK;
    int on = raised == on_raised;
    if (on == energised) return PERCH_OK; /* already there: the line is not rewritten */
    int level = on != invert;
    perch_errno e = perch_gpio_write(line, level);
    if (e != PERCH_OK) {
        char buf[160];
        perch_text why = perch_text_init(buf, sizeof buf);
        perch_text_cstr(&why, "perch_process failed: relay: write line ");
        perch_text_put(&why, line_text, line_text_len);
        perch_text_cstr(&why, on ? " (on)" : " (off)");
        perch_text_cstr(&why, ": perch: ");
        perch_text_cstr(&why, perch_errno_name(e));
        perch_log_text(PERCH_LEVEL_ERROR, &why);
        energised = -1; /* not known: the next alert writes again */
        return e;
    }
    energised = on;
    event(r, on, level);
    return PERCH_OK;
}

perch_errno perch_process(const uint8_t *batch, int32_t len) {
    if (!perch_process_batch_ok(&in, batch, len)) return PERCH_EFAULT;
    perch_builder_init(&b, out.ptr, out.cap);
    perch_iter it = perch_iter_init(batch, (uint32_t)len);
    perch_record r;
    perch_errno failed = PERCH_OK;
    while (perch_next(&it, &r)) {
        perch_errno e = alert(&r);
        if (e != PERCH_OK) failed = e; /* the last failure is the call's errno */
    }
    /* What was done is reported even when a write failed or the batch ends badly. */
    perch_errno emitted = b.len ? perch_emit(b.buf, b.len) : PERCH_OK;
    if (it.err) return perch_process_decode_failed(&it);
    return failed != PERCH_OK ? failed : emitted;
}
