/*
 * adxl345 - the Perch driver for the Analog Devices ADXL345 3-axis accelerometer, on SPI (4-wire,
 * mode 3) or on I2C, in C: it sets the chip up, reads new samples through perch:hal/v1 and emits
 * one reading per new sample. See ../README.md.
 *
 * Config (JSON), all optional:
 *   {"bus": 0, "cs": 0, "address": 0, "range_g": 2, "resolution": "full", "rate_hz": 100,
 *    "stale_after": "", "series": "acceleration"}
 * address 0 means SPI (bus, cs); 0x53 or 0x1D means I2C (bus, address). range_g is 2, 4, 8 or
 * 16; resolution "full" (256 LSB/g at every range) or "10bit"; rate_hz one of the chip's output
 * data rates (3200 ... 0.1); stale_after a Go duration, default three sample periods.
 *
 * Records out: kind reading, time 0 (the host stamps it), source empty (the host fills it in),
 * the configured series, fields x_g, y_g, z_g.
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/adxl345.wasm \
 *         modules/drivers/adxl345/wasm/adxl345.c
 */
#include "perch.h"

/* Registers (datasheet, register map). */
#define REG_DEVID       0x00
#define REG_BW_RATE     0x2C
#define REG_POWER_CTL   0x2D
#define REG_INT_SOURCE  0x30 /* the burst 0x30..0x37: INT_SOURCE, DATA_FORMAT, DATAX0..DATAZ1 */
#define REG_DATA_FORMAT 0x31
#define REG_FIFO_CTL    0x38
#define DEVID           0xE5
#define MEASURE         0x08
#define FULL_RES        0x08
#define DATA_READY      0x80
#define SPI_READ        0x80
#define SPI_MB          0x40

/* Config. */
static int32_t bus, cs, address; /* address 0: SPI */
static uint8_t bw_rate, data_format;
static double scale;         /* g per LSB */
static int64_t stale_ns;     /* no new sample for longer than this is an error */
static int64_t last_fresh;   /* host time of the last new sample (or of the set-up) */
static int ready;            /* the chip is set up */

/* The record every reading is written from; only the values change. */
static uint8_t record[PERCH_HEADER_SIZE + 1 + 1 + PERCH_MAX_STRING + 3 * (1 + 3 + 8)];
static uint32_t record_len, value_at[3];

static perch_buf in, out;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

/* ---- The chip -------------------------------------------------------------------------------- */

/* fail appends "adxl345: <op>: perch: <errno>" and returns e. */
static perch_errno fail(perch_text *why, const char *op, perch_errno e) {
    return perch_text_errno(why, "adxl345: ", op, e);
}

/* read_regs reads n (<= 8) registers from reg on. */
static perch_errno read_regs(uint8_t reg, uint8_t *buf, uint32_t n) {
    if (address != 0) return perch_i2c_read(bus, address, reg, buf, n);
    uint8_t tx[9] = {(uint8_t)(SPI_READ | (n > 1 ? SPI_MB : 0) | reg)}, rx[9];
    perch_errno e = perch_spi_transfer(bus, cs, tx, rx, n + 1);
    if (e == PERCH_OK) memcpy(buf, rx + 1, n);
    return e;
}

/* write_reg writes one register. */
static perch_errno write_reg(uint8_t reg, uint8_t v) {
    uint8_t b[2] = {reg, v};
    if (address != 0) return perch_i2c_write(bus, address, b, 2);
    uint8_t rx[2];
    return perch_spi_transfer(bus, cs, b, rx, 2);
}

static void hex2(perch_text *t, uint8_t v) {
    char h[2] = {"0123456789abcdef"[v >> 4], "0123456789abcdef"[v & 15]};
    perch_text_put(t, h, 2);
}

/* chip_init checks the device id and sets the chip up: standby, data rate, data format, FIFO
 * bypass, then measure. On failure it writes why and returns the host's errno, or EINVAL for a
 * chip with another id. */
static perch_errno chip_init(perch_text *why) {
    ready = 0;
    uint8_t id;
    perch_errno e;
    if ((e = read_regs(REG_DEVID, &id, 1)) != PERCH_OK) return fail(why, "read device id", e);
    if (id != DEVID) {
        perch_text_cstr(why, "adxl345: device id 0x");
        hex2(why, id);
        perch_text_cstr(why, ", want 0xe5");
        return PERCH_EINVAL;
    }
    static const uint8_t seq[4][2] = {{REG_POWER_CTL, 0}, {REG_BW_RATE, 0}, {REG_DATA_FORMAT, 0}, {REG_FIFO_CTL, 0}};
    for (int i = 0; i < 4; i++) {
        uint8_t v = seq[i][1];
        if (seq[i][0] == REG_BW_RATE) v = bw_rate;
        if (seq[i][0] == REG_DATA_FORMAT) v = data_format;
        if ((e = write_reg(seq[i][0], v)) != PERCH_OK) return fail(why, "configure", e);
    }
    if ((e = write_reg(REG_POWER_CTL, MEASURE)) != PERCH_OK) return fail(why, "start measuring", e);
    last_fresh = perch_now_ns();
    ready = 1;
    return PERCH_OK;
}

static int16_t s16(const uint8_t *b) { return (int16_t)(b[0] | b[1] << 8); }

/* ---- Exports --------------------------------------------------------------------------------- */

/* The output data rates, by BW_RATE rate code (datasheet, BW_RATE register). */
static const double rates[16] = {0.1, 0.2, 0.39, 0.78, 1.56, 3.13, 6.25, 12.5, 25, 50, 100, 200, 400, 800, 1600, 3200};

perch_errno perch_init(void) {
    static char msgbuf[1024];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_init_config(&msg, &json, &n);
    if (e != PERCH_OK) return e;
    int64_t c_bus = 0, c_cs = 0, c_address = 0, c_range = 2;
    double c_rate = 100;
    perch_str series = PERCH_STR("acceleration"), resolution = PERCH_STR("full"), stale = PERCH_STR("");
    perch_cfg_field fields[] = {{"bus", PERCH_CFG_INT, &c_bus},
                                {"cs", PERCH_CFG_INT, &c_cs},
                                {"address", PERCH_CFG_INT, &c_address},
                                {"range_g", PERCH_CFG_INT, &c_range},
                                {"resolution", PERCH_CFG_STRING, &resolution},
                                {"rate_hz", PERCH_CFG_FLOAT, &c_rate},
                                {"stale_after", PERCH_CFG_STRING, &stale},
                                {"series", PERCH_CFG_STRING, &series}};
    if (!perch_config_decode(json, n, fields, 8, "adxl345.Config", &msg, &arena)) {
        e = PERCH_EINVAL;
        goto done;
    }
    e = PERCH_EINVAL;
    if (c_address != 0 && c_address != 0x53 && c_address != 0x1D) {
        perch_text_cstr(&msg, "config: address: want 0 (SPI), 0x53 or 0x1d (I2C), got ");
        perch_text_hex(&msg, c_address);
        goto done;
    }
    if (c_bus < 0 || c_bus > INT32_MAX || c_cs < 0 || c_cs > INT32_MAX) {
        perch_text_cstr(&msg, "config: bus and cs must be between 0 and 2147483647");
        goto done;
    }
    uint8_t range_code = c_range == 2 ? 0 : c_range == 4 ? 1 : c_range == 8 ? 2 : c_range == 16 ? 3 : 4;
    if (range_code == 4) {
        perch_text_cstr(&msg, "config: range_g: want 2, 4, 8 or 16, got ");
        perch_text_i64(&msg, c_range);
        goto done;
    }
    int full = perch_str_eq(resolution, "full");
    if (!full && !perch_str_eq(resolution, "10bit")) {
        perch_text_cstr(&msg, "config: resolution: want \"full\" or \"10bit\", got ");
        perch_text_quote(&msg, resolution.ptr, resolution.len);
        goto done;
    }
    int code = -1;
    for (int i = 0; i < 16; i++) { /* the datasheet's figure, or the exact 3200 Hz / 2^(15 - code) */
        double exact = 3200.0 / (double)(1 << (15 - i));
        if ((c_rate >= rates[i] * 0.999 && c_rate <= rates[i] * 1.001) || (c_rate >= exact * 0.999 && c_rate <= exact * 1.001))
            code = i;
    }
    if (code < 0) {
        perch_text_cstr(&msg, "config: rate_hz: want one of 3200, 1600, 800, 400, 200, 100, 50, 25, 12.5, 6.25, "
                              "3.13, 1.56, 0.78, 0.39, 0.2 or 0.1, got ");
        perch_text_g(&msg, c_rate);
        goto done;
    }
    int64_t period = 312500LL << (15 - code); /* ns: 3200 Hz / 2^(15 - code) */
    stale_ns = 3 * period;
    if (stale.len > 0 && (!perch_parse_duration(stale.ptr, stale.len, &stale_ns) || stale_ns <= 0)) {
        perch_text_cstr(&msg, "config: stale_after: want a positive duration such as \"1s\", got ");
        perch_text_quote(&msg, stale.ptr, stale.len);
        goto done;
    }
    if (series.len == 0) series = PERCH_STR("acceleration");
    bus = (int32_t)c_bus, cs = (int32_t)c_cs, address = (int32_t)c_address;
    bw_rate = (uint8_t)code;
    data_format = (uint8_t)((full ? FULL_RES : 0) | range_code); /* right-justified */
    scale = full ? 1.0 / 256 : (double)(1 << range_code) / 256;

    /* The record template (series cut at 255 bytes). */
    static const perch_str names[3] = {PERCH_STR("x_g"), PERCH_STR("y_g"), PERCH_STR("z_g")};
    record_len = perch_reading_template(record, sizeof record, series, names, 3, value_at);

    /* A device that does not answer now may later: poll sets it up again and reports the errno.
     * A grant that is missing or another chip at the address is a configuration error. */
    char whybuf[192];
    perch_text why = perch_text_init(whybuf, sizeof whybuf);
    e = chip_init(&why);
    if (e == PERCH_EPERM || e == PERCH_EINVAL) {
        perch_text_put(&msg, why.p, why.len);
    } else if (e != PERCH_OK) {
        perch_log_will_retry(msgbuf, sizeof msgbuf, &why);
        e = PERCH_OK;
    }
done:
    return perch_init_finish(e, &msg, json, arena);
}

perch_errno perch_poll(int32_t max) {
    if (max < 0) return PERCH_EINVAL;
    char msgbuf[192];
    perch_text why = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&why, "perch_poll failed: ");
    perch_errno e = PERCH_OK;
    uint32_t len = 0;
    if (max == 0) return PERCH_OK;
    /* After a failed read, set the chip up again, in case it was power-cycled. */
    if (!ready && (e = chip_init(&why)) != PERCH_OK) goto fail;
    for (int32_t i = 0; i < max; i++) {
        uint8_t b[8]; /* INT_SOURCE, DATA_FORMAT, DATAX0..DATAZ1: one consistent sample */
        if ((e = read_regs(REG_INT_SOURCE, b, 8)) != PERCH_OK) {
            ready = 0;
            fail(&why, "read data", e);
            goto fail;
        }
        if (b[1] != data_format) {
            ready = 0;
            perch_text_cstr(&why, "adxl345: the chip lost its set-up (DATA_FORMAT 0x");
            hex2(&why, b[1]);
            perch_text_cstr(&why, ", want 0x");
            hex2(&why, data_format);
            perch_text_cstr(&why, "): power-cycled? Setting it up again");
            e = PERCH_EIO;
            goto fail;
        }
        int64_t now = perch_now_ns();
        if (!(b[0] & DATA_READY)) {
            /* No sample since the last one read: polled faster than the data rate, or the chip
             * stopped sampling. */
            if (now - last_fresh > stale_ns) {
                perch_text_cstr(&why, "adxl345: no new sample for ");
                perch_text_i64(&why, (now - last_fresh) / 1000000);
                perch_text_cstr(&why, " ms (DATA_READY clear): stuck?");
                e = PERCH_ETIMEDOUT;
                goto fail;
            }
            break;
        }
        last_fresh = now;
        if (out.cap - len < record_len && perch_buf_grow(&out, len + record_len, len) == NULL) {
            perch_text_cstr(&why, "out of memory");
            e = PERCH_ENOSPC;
            goto fail;
        }
        uint8_t *r = out.ptr + len;
        memcpy(r, record, record_len);
        for (int k = 0; k < 3; k++) {
            double g = (double)s16(b + 2 + 2 * k) * scale;
            memcpy(r + value_at[k], &g, 8);
        }
        len += record_len;
    }
    return len ? perch_emit(out.ptr, len) : PERCH_OK;
fail:
    /* What was read before the failure is still handed over; the call returns the device's
     * errno (ENACK, ETIMEDOUT, ENODEV, EIO, ...), which the runtime records. */
    perch_log_text(PERCH_LEVEL_ERROR, &why);
    if (len) perch_emit(out.ptr, len);
    return e;
}
