/*
 * pms5003 - the Perch driver for the Plantower PMS5003 particulate sensor on a UART (9600 baud,
 * 8N1), in C: it puts the sensor in active mode, reads the bytes that have arrived through
 * perch:hal/v1, finds the 32-byte frames in them (0x42 0x4D, length 28, 13 words, checksum),
 * checks each frame's checksum and emits one reading per good frame. See ../README.md.
 *
 * Config (JSON): {"port": "/dev/ttyS0", "series": "air", "timeout": "3s", "stuck_reads": 0}; all
 * optional, with those defaults. No good frame for longer than timeout is an error (ETIMEDOUT).
 * With stuck_reads N (0: off, else 2 or more), N good frames in a row with the same twelve values
 * are an error (EIO), and the N-th and later such frames are not read: a live sensor's counts
 * move from frame to frame, a frozen one repeats itself.
 *
 * Records out: kind reading, time 0 (the host stamps it), source empty (the host fills it in),
 * the configured series, twelve fields: pm1_0_ugm3, pm2_5_ugm3, pm10_ugm3 (CF=1),
 * pm1_0_atm_ugm3, pm2_5_atm_ugm3, pm10_atm_ugm3 (atmospheric environment), n0_3_per_dl,
 * n0_5_per_dl, n1_0_per_dl, n2_5_per_dl, n5_0_per_dl, n10_per_dl (particles beyond the
 * diameter in µm, per 0.1 L).
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/pms5003.wasm \
 *         modules/drivers/pms5003/wasm/pms5003.c
 */
#include "perch.h"

#define FRAME_LEN  32
#define FRAME_BODY 28 /* the length field: 13 words and the checksum */
#define START1     0x42
#define START2     0x4D
#define NFIELDS    12
#define RX_CAP     1024 /* pending bytes kept between polls: 32 frames */

/* Config. */
static perch_str port;
static char port_buf[PERCH_MAX_STRING];
static int64_t timeout_ns;
static int ready; /* the sensor was told to wake up and send in active mode */
static int64_t last_frame;
static int64_t stuck_reads; /* 0: off */

/* Stuck detection: the last good frame's 24 bytes of values, and how many frames in a row had them. */
static uint8_t last_values[2 * NFIELDS];
static int64_t same;

static uint8_t rx[RX_CAP];
static uint32_t have;

static uint8_t record[PERCH_HEADER_SIZE + 1 + 1 + PERCH_MAX_STRING + NFIELDS * (1 + 14 + 8)];
static uint32_t record_len, value_at[NFIELDS];

static perch_buf in, out;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

static void hex4(perch_text *t, uint32_t v) {
    char h[6] = {'0', 'x'};
    for (int i = 0; i < 4; i++) h[2 + i] = "0123456789abcdef"[(v >> (12 - 4 * i)) & 15];
    perch_text_put(t, h, 6);
}

static void fail(perch_text *why, const char *op, perch_errno e) {
    perch_text_errno(why, "pms5003: ", op, e);
}

/* command sends the host command cmd with data (data manual, appendix II). */
static perch_errno command(uint8_t cmd, uint8_t data) {
    uint8_t c[7] = {START1, START2, cmd, 0, data, 0, 0};
    uint32_t sum = START1 + START2 + cmd + data;
    c[5] = (uint8_t)(sum >> 8), c[6] = (uint8_t)sum;
    return perch_uart_write(port.ptr, port.len, c, 7);
}

/* sensor_init wakes the sensor up and puts it in active mode (one frame a second). */
static perch_errno sensor_init(perch_text *why) {
    perch_errno e;
    ready = 0;
    if ((e = command(0xE4, 1)) != PERCH_OK) {
        fail(why, "wake up", e);
        return e;
    }
    if ((e = command(0xE1, 1)) != PERCH_OK) {
        fail(why, "set active mode", e);
        return e;
    }
    ready = 1;
    return PERCH_OK;
}

perch_errno perch_init(void) {
    static char msgbuf[1024];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_init_config(&msg, &json, &n);
    if (e != PERCH_OK) return e;
    perch_str c_port = PERCH_STR("/dev/ttyS0"), series = PERCH_STR("air"), timeout = PERCH_STR("3s");
    int64_t c_stuck = 0;
    perch_cfg_field fields[] = {{"port", PERCH_CFG_STRING, &c_port},
                                {"series", PERCH_CFG_STRING, &series},
                                {"timeout", PERCH_CFG_STRING, &timeout},
                                {"stuck_reads", PERCH_CFG_INT, &c_stuck}};
    e = PERCH_EINVAL;
    if (!perch_config_decode(json, n, fields, 4, "pms5003.Config", &msg, &arena)) goto done;
    if (c_port.len == 0 || c_port.len > PERCH_MAX_STRING) {
        perch_text_cstr(&msg, "config: port: want a port name of 1 to 255 bytes, got ");
        perch_text_quote(&msg, c_port.ptr, c_port.len);
        goto done;
    }
    if (!perch_parse_duration(timeout.ptr, timeout.len, &timeout_ns) || timeout_ns <= 0) {
        perch_text_cstr(&msg, "config: timeout: want a positive duration such as \"3s\", got ");
        perch_text_quote(&msg, timeout.ptr, timeout.len);
        goto done;
    }
    if (c_stuck < 0 || c_stuck == 1) {
        perch_text_cstr(&msg, "config: stuck_reads: want 0 (off) or 2 or more, got ");
        perch_text_i64(&msg, c_stuck);
        goto done;
    }
    stuck_reads = c_stuck;
    memcpy(port_buf, c_port.ptr, c_port.len);
    port = (perch_str){port_buf, c_port.len};
    if (series.len == 0) series = PERCH_STR("air");

    static const perch_str names[NFIELDS] = {
        PERCH_STR("pm1_0_ugm3"),     PERCH_STR("pm2_5_ugm3"),     PERCH_STR("pm10_ugm3"),
        PERCH_STR("pm1_0_atm_ugm3"), PERCH_STR("pm2_5_atm_ugm3"), PERCH_STR("pm10_atm_ugm3"),
        PERCH_STR("n0_3_per_dl"),    PERCH_STR("n0_5_per_dl"),    PERCH_STR("n1_0_per_dl"),
        PERCH_STR("n2_5_per_dl"),    PERCH_STR("n5_0_per_dl"),    PERCH_STR("n10_per_dl")};
    record_len = perch_reading_template(record, sizeof record, series, names, NFIELDS, value_at);

    /* A port that is not granted is a configuration error; a sensor that does not answer now
     * may later: poll tries again and reports the errno. */
    char whybuf[160];
    perch_text why = perch_text_init(whybuf, sizeof whybuf);
    e = sensor_init(&why);
    if (e == PERCH_EPERM) {
        perch_text_put(&msg, why.p, why.len);
    } else if (e != PERCH_OK) {
        perch_log_will_retry(msgbuf, sizeof msgbuf, &why);
        e = PERCH_OK;
    }
    last_frame = perch_now_ns();
done:
    return perch_init_finish(e, &msg, json, arena);
}

/* frame_ok reports whether the 32 bytes at f are a good data frame; *got and *want are its
 * checksum and the sum of its bytes. */
static int frame_ok(const uint8_t *f, uint32_t *got, uint32_t *want) {
    uint32_t sum = 0;
    for (int i = 0; i < FRAME_LEN - 2; i++) sum += f[i];
    *want = sum & 0xFFFF;
    *got = (uint32_t)f[30] << 8 | f[31];
    return *got == *want;
}

perch_errno perch_poll(int32_t max) {
    if (max < 0) return PERCH_EINVAL;
    char msgbuf[192];
    perch_text why = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&why, "perch_poll failed: ");
    perch_errno e = PERCH_OK;
    uint32_t len = 0;
    if (!ready && (e = sensor_init(&why)) != PERCH_OK) goto end;

    /* Read what has arrived. When more is waiting than the buffer holds, the oldest goes. */
    for (int reads = 0; reads < 8; reads++) {
        if (have == RX_CAP) {
            memmove(rx, rx + RX_CAP / 2, RX_CAP / 2);
            have = RX_CAP / 2;
        }
        uint32_t n = 0;
        e = perch_uart_read(port.ptr, port.len, rx + have, RX_CAP - have, &n);
        if (e != PERCH_OK) {
            if (e == PERCH_ENODEV) ready = 0; /* a power-cycled sensor forgets its mode */
            fail(&why, "read", e);
            break;
        }
        if (n == 0) break;
        have += n;
    }

    /* Find the frames. */
    uint32_t i = 0, bad = 0, bad_got = 0, bad_want = 0;
    int64_t stuck_run = 0; /* the longest run of identical frames seen this poll, from stuck_reads on */
    int32_t frames = 0;
    int64_t now = perch_now_ns();
    while (have - i >= 4 && frames < max) {
        if (rx[i] != START1 || rx[i + 1] != START2) {
            i++;
            continue;
        }
        if (((uint32_t)rx[i + 2] << 8 | rx[i + 3]) != FRAME_BODY) { /* not a data frame */
            i += 2;
            continue;
        }
        if (have - i < FRAME_LEN) break; /* the rest has not arrived yet */
        const uint8_t *f = rx + i;
        uint32_t got, want;
        if (!frame_ok(f, &got, &want)) {
            bad++, bad_got = got, bad_want = want;
            i += 2; /* look for the next frame inside this one */
            continue;
        }
        i += FRAME_LEN;
        frames++;
        last_frame = now;
        if (stuck_reads > 0) {
            if (same > 0 && perch_mem_eq(f + 4, last_values, sizeof last_values)) {
                same++;
            } else {
                memcpy(last_values, f + 4, sizeof last_values);
                same = 1;
            }
            if (same >= stuck_reads) { /* a frozen sensor's frame: not a reading */
                stuck_run = same;
                continue;
            }
        }
        if (out.cap - len < record_len && perch_buf_grow(&out, len + record_len, len) == NULL) {
            perch_text_cstr(&why, "out of memory");
            e = PERCH_ENOSPC;
            break;
        }
        uint8_t *r = out.ptr + len;
        memcpy(r, record, record_len);
        for (int k = 0; k < NFIELDS; k++) {
            double v = (double)((uint32_t)f[4 + 2 * k] << 8 | f[5 + 2 * k]);
            memcpy(r + value_at[k], &v, 8);
        }
        len += record_len;
    }
    memmove(rx, rx + i, have - i); /* keep what may be the start of a frame */
    have -= i;

    if (e == PERCH_OK && bad > 0) {
        perch_text_cstr(&why, "pms5003: ");
        perch_text_u64(&why, bad);
        perch_text_cstr(&why, bad == 1 ? " frame" : " frames");
        perch_text_cstr(&why, " with a bad checksum (");
        hex4(&why, bad_got);
        perch_text_cstr(&why, ", want ");
        hex4(&why, bad_want);
        perch_text_cstr(&why, ")");
        e = PERCH_EIO;
    }
    if (e == PERCH_OK && stuck_run > 0) {
        perch_text_cstr(&why, "pms5003: stuck: ");
        perch_text_i64(&why, stuck_run);
        perch_text_cstr(&why, " frames in a row with the same values");
        e = PERCH_EIO;
    }
    if (e == PERCH_OK && now - last_frame > timeout_ns) {
        perch_text_cstr(&why, "pms5003: no frame for ");
        perch_text_i64(&why, (now - last_frame) / 1000000);
        perch_text_cstr(&why, " ms");
        e = PERCH_ETIMEDOUT;
    }
end:
    /* Good frames are handed over even when the call fails: the runtime keeps them and records
     * the errno. */
    if (e != PERCH_OK) perch_log_text(PERCH_LEVEL_ERROR, &why);
    if (len) {
        perch_errno ee = perch_emit(out.ptr, len);
        if (e == PERCH_OK) e = ee;
    }
    return e;
}
