/*
 * gpio - the Perch driver for a GPIO input (a button, a limit switch, a door contact), in C: at
 * each poll it samples the line through perch:hal/v1 and emits a reading when the level changed
 * (and the first time). See ../README.md.
 *
 * Config (JSON): {"line": 17, "series": "button", "debounce": "0s", "stuck_after": "0s"}; line is
 * required, the others optional with those defaults. With a debounce, a new level is reported
 * once it has been seen on every poll for at least that long. With stuck_after (0: off), a line
 * whose level has not changed for that long is an error (EIO), once per stuck_after: a stuck
 * line cannot be told from an idle one, so only the operator knows how long is too long.
 *
 * Records out: kind reading, time 0 (the host stamps it), source empty (the host fills it in),
 * the configured series, fields level (0 or 1) and changes (level changes reported so far).
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/gpio.wasm modules/drivers/gpio/wasm/gpio.c
 */
#include "perch.h"

static int32_t line;
static int64_t debounce_ns;
static int64_t stuck_ns;    /* 0: off */
static int64_t quiet_since; /* the last reported change, or the last stuck report */
static int reported = -1;  /* the level last reported; -1: none yet */
static int candidate = -1; /* a level seen that differs from the one reported */
static int64_t candidate_since;
static double changes;

static uint8_t record[PERCH_HEADER_SIZE + 1 + 1 + PERCH_MAX_STRING + (1 + 5 + 8) + (1 + 7 + 8)];
static uint32_t record_len, value_at[2]; /* level, changes */

static perch_buf in;

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
    perch_str series = PERCH_STR("button"), debounce = PERCH_STR("0s"), stuck = PERCH_STR("0s");
    perch_cfg_field fields[] = {{"line", PERCH_CFG_INT, &c_line},
                                {"series", PERCH_CFG_STRING, &series},
                                {"debounce", PERCH_CFG_STRING, &debounce},
                                {"stuck_after", PERCH_CFG_STRING, &stuck}};
    e = PERCH_EINVAL;
    if (!perch_config_decode(json, n, fields, 4, "gpio.Config", &msg, &arena)) goto done;
    if (c_line < 0 || c_line > INT32_MAX) {
        perch_text_cstr(&msg, "config: line: want a GPIO line number (0 or more), got ");
        perch_text_i64(&msg, c_line);
        goto done;
    }
    if (!perch_parse_duration(debounce.ptr, debounce.len, &debounce_ns) || debounce_ns < 0) {
        perch_text_cstr(&msg, "config: debounce: want a duration such as \"20ms\", got ");
        perch_text_quote(&msg, debounce.ptr, debounce.len);
        goto done;
    }
    if (!perch_parse_duration(stuck.ptr, stuck.len, &stuck_ns) || stuck_ns < 0) {
        perch_text_cstr(&msg, "config: stuck_after: want a duration such as \"10m\" (0s: off), got ");
        perch_text_quote(&msg, stuck.ptr, stuck.len);
        goto done;
    }
    if (series.len == 0) series = PERCH_STR("button");
    line = (int32_t)c_line;
    static const perch_str names[2] = {PERCH_STR("level"), PERCH_STR("changes")};
    record_len = perch_reading_template(record, sizeof record, series, names, 2, value_at);
    /* A line that is not granted is a configuration error; a device that does not answer now
     * may later, and poll reports it. */
    uint8_t level;
    e = perch_gpio_read(line, &level);
    if (e == PERCH_EPERM) {
        perch_text_cstr(&msg, "gpio: read line ");
        perch_text_i64(&msg, line);
        perch_text_cstr(&msg, ": perch: EPERM");
        goto done;
    }
    e = PERCH_OK;
    quiet_since = perch_now_ns();
done:
    return perch_init_finish(e, &msg, json, arena);
}

/* stuck reports a line whose level has not changed for stuck_after: it logs it, returns EIO
 * and starts counting again, so that a line that stays still is reported once per stuck_after. */
static perch_errno stuck(int64_t now) {
    char buf[128];
    perch_text why = perch_text_init(buf, sizeof buf);
    perch_text_cstr(&why, "perch_poll failed: gpio: line ");
    perch_text_i64(&why, line);
    perch_text_cstr(&why, " stuck: no change of level for ");
    perch_text_i64(&why, (now - quiet_since) / 1000000);
    perch_text_cstr(&why, " ms (stuck_after)");
    perch_log_text(PERCH_LEVEL_ERROR, &why);
    quiet_since = now;
    return PERCH_EIO;
}

perch_errno perch_poll(int32_t max) {
    if (max < 0) return PERCH_EINVAL;
    if (max == 0) return PERCH_OK;
    uint8_t level;
    perch_errno e = perch_gpio_read(line, &level);
    if (e != PERCH_OK) {
        char buf[96];
        perch_text why = perch_text_init(buf, sizeof buf);
        perch_text_cstr(&why, "perch_poll failed: gpio: read line ");
        perch_text_i64(&why, line);
        perch_text_cstr(&why, ": perch: ");
        perch_text_cstr(&why, perch_errno_name(e));
        perch_log_text(PERCH_LEVEL_ERROR, &why);
        candidate = -1; /* a debounce starts over after a failed read */
        return e;
    }
    int v = level != 0;
    int64_t now = perch_now_ns();
    if (v == reported) {
        candidate = -1;
        return stuck_ns > 0 && now - quiet_since >= stuck_ns ? stuck(now) : PERCH_OK;
    }
    if (v != candidate) {
        candidate = v;
        candidate_since = now;
    }
    if (reported >= 0 && now - candidate_since < debounce_ns) return PERCH_OK; /* not settled yet */
    if (reported >= 0) changes++, quiet_since = now;
    reported = v;
    candidate = -1;
    double lv = v;
    memcpy(record + value_at[0], &lv, 8);
    memcpy(record + value_at[1], &changes, 8);
    return perch_emit(record, record_len);
}
