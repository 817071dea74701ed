/*
 * bme280 - the Perch driver for the Bosch BME280 temperature, pressure and humidity sensor on
 * I2C, in C: it reads the chip through perch:hal/v1 and emits one reading per record asked for.
 *
 * It does what the Go package github.com/perch-edge/perch/modules/drivers/bme280 does (chip
 * init, forced measurement, floating-point compensation of the datasheet, section 8.1, in the
 * same order of operations, so the readings are bit for bit the same), with the config and the
 * messages of the Go module it replaces. See ../README.md.
 *
 * Config (JSON): {"bus": 1, "address": 118, "series": "environment", "stuck_reads": 0}; all
 * optional, with those defaults; address must be 0x76 or 0x77. stuck_reads N (0: off, else 2 or
 * more) makes N bit-identical raw readings in a row an error (EIO): a live chip's ADC noise makes
 * every reading differ in its low bits, a frozen one repeats its data registers.
 *
 * Records out: kind reading, time 0 (the host stamps it), source empty (the host fills it in),
 * the configured series, fields temperature_c, pressure_hpa, humidity_pct.
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/bme280.wasm \
 *         modules/drivers/bme280/wasm/bme280.c
 */
#include "perch.h"

/* Registers (datasheet, section 5.3). */
#define REG_CALIB0    0x88 /* T1..T3, P1..P9, (0xA0 unused), H1: 26 bytes */
#define REG_ID        0xD0
#define REG_RESET     0xE0
#define REG_CALIB26   0xE1 /* H2..H6: 7 bytes */
#define REG_CTRL_HUM  0xF2
#define REG_CTRL_MEAS 0xF4
#define REG_DATA      0xF7 /* press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb: 8 bytes */
#define CHIP_ID       0x60
#define RESET_WORD    0xB6
#define OSRS_H_X1     0x01
#define MEAS_X1       (1 << 5 | 1 << 2) /* temperature and pressure oversampling x1, sleep mode */
#define MODE_FORCED   0x01

/* calibration holds the chip's trimming parameters (datasheet, section 4.2.2). */
static struct {
    uint16_t T1;
    int16_t T2, T3;
    uint16_t P1;
    int16_t P2, P3, P4, P5, P6, P7, P8, P9;
    uint8_t H1;
    int16_t H2;
    uint8_t H3;
    int16_t H4, H5; /* 12-bit signed */
    int8_t H6;
} cal;

/* Config. */
static int32_t bus = 1, address = 0x76;
static int64_t stuck_reads; /* 0: off */
static int ready;           /* the chip is initialised */

/* Stuck detection: the last raw data (8 bytes from 0xF7) and how many readings in a row had it. */
static uint8_t last_raw[8];
static int64_t same;

/* The record every reading is written from: header, empty source, series, three fields; only
 * the values change. */
static uint8_t record[PERCH_HEADER_SIZE + 1 + 1 + PERCH_MAX_STRING + 3 * (1 + 13 + 8)];
static uint32_t record_len, value_at[3];

static perch_buf in, out;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

/* ---- The chip -------------------------------------------------------------------------------- */

/* fail appends "bme280: <op>: perch: <errno>" (Go: the Tx error wrapped by the chip logic) and
 * returns e. */
static perch_errno fail(perch_text *why, const char *op, perch_errno e) {
    return perch_text_errno(why, "bme280: ", op, e);
}

static uint16_t u16(const uint8_t *b) { return (uint16_t)(b[0] | b[1] << 8); }
static int16_t s16(const uint8_t *b) { return (int16_t)u16(b); }

/* chip_init checks the chip id, soft-resets the chip, reads its calibration and sets
 * oversampling x1 for all three quantities, leaving it in sleep mode (bme280.Chip.Init). On
 * failure it writes why and returns the host's errno, or EINVAL for a chip with another id. */
static perch_errno chip_init(perch_text *why) {
    ready = 0;
    uint8_t id, c[26 + 7];
    perch_errno e;
    if ((e = perch_i2c_read(bus, address, REG_ID, &id, 1)) != PERCH_OK) return fail(why, "read chip id", e);
    if (id != CHIP_ID) {
        char hex[2] = {"0123456789abcdef"[id >> 4], "0123456789abcdef"[id & 15]};
        perch_text_cstr(why, "bme280: chip id 0x");
        perch_text_put(why, hex, 2);
        perch_text_cstr(why, ", want 0x60");
        return PERCH_EINVAL;
    }
    static const uint8_t reset[2] = {REG_RESET, RESET_WORD};
    if ((e = perch_i2c_write(bus, address, reset, 2)) != PERCH_OK) return fail(why, "soft reset", e);
    if ((e = perch_i2c_read(bus, address, REG_CALIB0, c, 26)) != PERCH_OK)
        return fail(why, "read calibration", e);
    if ((e = perch_i2c_read(bus, address, REG_CALIB26, c + 26, 7)) != PERCH_OK)
        return fail(why, "read calibration", e);
    cal.T1 = u16(c), cal.T2 = s16(c + 2), cal.T3 = s16(c + 4);
    cal.P1 = u16(c + 6), cal.P2 = s16(c + 8), cal.P3 = s16(c + 10), cal.P4 = s16(c + 12);
    cal.P5 = s16(c + 14);
    cal.P6 = s16(c + 16), cal.P7 = s16(c + 18), cal.P8 = s16(c + 20), cal.P9 = s16(c + 22);
    cal.H1 = c[25];
    const uint8_t *h = c + 26;
    cal.H2 = s16(h);
    cal.H3 = h[2];
    cal.H4 = (int16_t)((int8_t)h[3] * 16 | (h[4] & 0x0F)); /* 0xE4 = H4[11:4], 0xE5[3:0] = H4[3:0] */
    cal.H5 = (int16_t)((int8_t)h[5] * 16 | h[4] >> 4);     /* 0xE6 = H5[11:4], 0xE5[7:4] = H5[3:0] */
    cal.H6 = (int8_t)h[6];
    /* ctrl_hum only takes effect with the following write to ctrl_meas. */
    static const uint8_t configure[4] = {REG_CTRL_HUM, OSRS_H_X1, REG_CTRL_MEAS, MEAS_X1};
    if ((e = perch_i2c_write(bus, address, configure, 4)) != PERCH_OK) return fail(why, "configure", e);
    ready = 1;
    return PERCH_OK;
}

static double clamp(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* to_i32 is Go's int32(x) for the values compensate can produce (wasm's conversion traps
 * outside int32's range; these never are, with any calibration). */
static int32_t to_i32(double x) {
    return x > -2147483648.0 && x < 2147483648.0 ? (int32_t)x : x > 0 ? INT32_MAX : INT32_MIN;
}

/* compensate turns raw ADC values into °C, hPa and %RH with the floating-point formulas of the
 * datasheet, section 8.1, clamped to the sensor's range: bme280's calibration.compensate, term
 * for term and in the same order, so that the results are the same to the bit. */
static void compensate(int32_t adcT, int32_t adcP, int32_t adcH, double out3[3]) {
    double var1 = ((double)adcT / 16384 - (double)cal.T1 / 1024) * (double)cal.T2;
    double var2 = (double)adcT / 131072 - (double)cal.T1 / 8192;
    var2 = var2 * var2 * (double)cal.T3;
    int32_t tFine = to_i32(var1 + var2);
    out3[0] = clamp((var1 + var2) / 5120, -40, 85);

    var1 = (double)tFine / 2 - 64000;
    var2 = var1 * var1 * (double)cal.P6 / 32768;
    var2 += var1 * (double)cal.P5 * 2;
    var2 = var2 / 4 + (double)cal.P4 * 65536;
    var1 = ((double)cal.P3 * var1 * var1 / 524288 + (double)cal.P2 * var1) / 524288;
    var1 = (1 + var1 / 32768) * (double)cal.P1;
    double p = 30000.0; /* a zero var1 (invalid calibration) would divide by zero */
    if (var1 != 0) {
        p = 1048576 - (double)adcP;
        p = (p - var2 / 4096) * 6250 / var1;
        var1 = (double)cal.P9 * p * p / 2147483648.0;
        var2 = p * (double)cal.P8 / 32768;
        p += (var1 + var2 + (double)cal.P7) / 16;
    }
    out3[1] = clamp(p, 30000, 110000) / 100;

    double h = (double)tFine - 76800;
    h = ((double)adcH - ((double)cal.H4 * 64 + (double)cal.H5 / 16384 * h)) *
        ((double)cal.H2 / 65536 * (1 + (double)cal.H6 / 67108864 * h * (1 + (double)cal.H3 / 67108864 * h)));
    h *= 1 - (double)cal.H1 * h / 524288;
    out3[2] = clamp(h, 0, 100);
}

/* chip_read triggers a forced measurement, reads the data registers in one burst and
 * compensates them (bme280.Chip.Read). */
static inline perch_errno chip_read(double v[3], perch_text *why) {
    static const uint8_t force[2] = {REG_CTRL_MEAS, MEAS_X1 | MODE_FORCED};
    uint8_t d[8];
    perch_errno e;
    if ((e = perch_i2c_write(bus, address, force, 2)) != PERCH_OK) return fail(why, "start measurement", e);
    if ((e = perch_i2c_read(bus, address, REG_DATA, d, 8)) != PERCH_OK) return fail(why, "read data", e);
    if (stuck_reads > 0) {
        if (same > 0 && perch_mem_eq(d, last_raw, 8)) {
            same++;
        } else {
            memcpy(last_raw, d, 8);
            same = 1;
        }
        if (same >= stuck_reads) {
            perch_text_cstr(why, "bme280: stuck: ");
            perch_text_i64(why, same);
            perch_text_cstr(why, " readings in a row with the same raw data");
            return PERCH_EIO;
        }
    }
    int32_t adcP = (int32_t)d[0] << 12 | (int32_t)d[1] << 4 | (int32_t)d[2] >> 4;
    int32_t adcT = (int32_t)d[3] << 12 | (int32_t)d[4] << 4 | (int32_t)d[5] >> 4;
    int32_t adcH = (int32_t)d[6] << 8 | (int32_t)d[7];
    compensate(adcT, adcP, adcH, v);
    return PERCH_OK;
}

/* ---- Exports --------------------------------------------------------------------------------- */

perch_errno perch_init(void) {
    static char msgbuf[1024];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_init_config(&msg, &json, &n);
    if (e != PERCH_OK) return e;
    int64_t c_bus = 1, c_address = 0x76, c_stuck = 0;
    perch_str series = PERCH_STR("environment");
    perch_cfg_field fields[] = {{"bus", PERCH_CFG_INT, &c_bus},
                                {"address", PERCH_CFG_INT, &c_address},
                                {"series", PERCH_CFG_STRING, &series},
                                {"stuck_reads", PERCH_CFG_INT, &c_stuck}};
    if (!perch_config_decode(json, n, fields, 4, "main.config", &msg, &arena)) {
        e = PERCH_EINVAL;
        goto done;
    }
    if (c_address != 0x76 && c_address != 0x77) {
        perch_text_cstr(&msg, "config: address: want 0x76 or 0x77, got ");
        perch_text_hex(&msg, c_address);
        e = PERCH_EINVAL;
        goto done;
    }
    if (c_stuck < 0 || c_stuck == 1) {
        perch_text_cstr(&msg, "config: stuck_reads: want 0 (off) or 2 or more, got ");
        perch_text_i64(&msg, c_stuck);
        e = PERCH_EINVAL;
        goto done;
    }
    stuck_reads = c_stuck;
    if (series.len == 0) series = PERCH_STR("environment");
    bus = (int32_t)c_bus; /* as Go's int32(cfg.Bus) */
    address = (int32_t)c_address;

    /* The record template (perch_begin and perch_field lay it out; series cut at 255 bytes). */
    static const perch_str names[3] = {PERCH_STR("temperature_c"), PERCH_STR("pressure_hpa"),
                                       PERCH_STR("humidity_pct")};
    record_len = perch_reading_template(record, sizeof record, series, names, 3, value_at);

    e = chip_init(&msg);
done:
    return perch_init_finish(e, &msg, json, arena);
}

perch_errno perch_poll(int32_t max) {
    if (max < 0) return PERCH_EINVAL;
    char msgbuf[160];
    perch_text why = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&why, "perch_poll failed: ");
    perch_errno e = PERCH_OK;
    /* After a failed read, set the chip up again, in case it was power-cycled. */
    if (!ready && (e = chip_init(&why)) != PERCH_OK) goto fail;
    uint32_t len = 0;
    for (int32_t i = 0; i < max; i++) {
        if (out.cap - len < record_len && perch_buf_grow(&out, len + record_len, len) == NULL) {
            perch_text_cstr(&why, "out of memory");
            e = PERCH_ENOSPC;
            goto fail;
        }
        double v[3];
        if ((e = chip_read(v, &why)) != PERCH_OK) {
            /* Set the chip up again at the next poll: it may have been power-cycled, and a soft
             * reset is what revives a hung one. */
            ready = 0;
            goto fail;
        }
        uint8_t *r = out.ptr + len;
        memcpy(r, record, record_len);
        memcpy(r + value_at[0], &v[0], 8);
        memcpy(r + value_at[1], &v[1], 8);
        memcpy(r + value_at[2], &v[2], 8);
        len += record_len;
    }
    return len ? perch_emit(out.ptr, len) : PERCH_OK;
fail:
    /* As the Go module, the call's output is dropped; unlike it, the call returns the device's
     * errno (ENACK, ETIMEDOUT, ...) rather than EIO. */
    perch_log_text(PERCH_LEVEL_ERROR, &why);
    return e;
}
