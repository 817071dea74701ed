/*
 * probe - a test-only driver that calls one perch:hal/v1 function, on the device its config
 * names, at every poll, and emits what happened as a reading: series "probe", fields errno (the
 * host's errno) and value (the byte read, the level read, or the byte count read or written).
 * runtime/grants_test.go uses it to try every grant escape.
 *
 * Config (JSON): {"call": "i2c_read", "bus": 1, "address": 119, "reg": 208, "cs": 0,
 * "line": 17, "level": 1, "port": "/dev/ttyS0"}. call is one of i2c_read, i2c_write,
 * spi_transfer, gpio_read, gpio_write, uart_read, uart_write. i2c_write writes reg (one byte);
 * spi_transfer clocks out reg and one more byte and reports the second byte in; uart_write sends
 * one byte, reg.
 *
 * Build (from the repository root; make modules does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o build/modules/probe.wasm \
 *         runtime/testdata/probe/wasm/probe.c
 */
#include "perch.h"

enum { I2C_READ = 1, I2C_WRITE, SPI_TRANSFER, GPIO_READ, GPIO_WRITE, UART_READ, UART_WRITE };

static int call;
static int64_t bus, address, reg, cs, line, level;
static char port[PERCH_MAX_STRING];
static uint32_t port_len;
static perch_buf in;

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

perch_errno perch_init(void) {
    static char msgbuf[512];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_config_read(&json, &n);
    if (e != PERCH_OK) return e;
    perch_str c_call = PERCH_STR(""), c_port = PERCH_STR("");
    perch_cfg_field fields[] = {{"call", PERCH_CFG_STRING, &c_call}, {"bus", PERCH_CFG_INT, &bus},
                                {"address", PERCH_CFG_INT, &address}, {"reg", PERCH_CFG_INT, &reg},
                                {"cs", PERCH_CFG_INT, &cs},          {"line", PERCH_CFG_INT, &line},
                                {"level", PERCH_CFG_INT, &level},    {"port", PERCH_CFG_STRING, &c_port}};
    e = PERCH_EINVAL;
    if (!perch_config_decode(json, n, fields, 8, "probe.Config", &msg, &arena)) goto done;
    static const char *const calls[] = {"", "i2c_read", "i2c_write", "spi_transfer", "gpio_read",
                                        "gpio_write", "uart_read", "uart_write"};
    for (int i = 1; i < 8; i++)
        if (perch_str_eq(c_call, calls[i])) call = i;
    if (call == 0) {
        perch_text_cstr(&msg, "config: call: unknown ");
        perch_text_quote(&msg, c_call.ptr, c_call.len);
        goto done;
    }
    port_len = c_port.len < sizeof port ? c_port.len : sizeof port;
    memcpy(port, c_port.ptr, port_len);
    e = PERCH_OK;
done:
    return perch_init_finish(e, &msg, json, arena);
}

perch_errno perch_poll(int32_t max) {
    if (max <= 0) return PERCH_OK;
    perch_errno e = PERCH_OK;
    uint8_t b[2] = {(uint8_t)reg, 0}, r[2] = {0, 0};
    uint32_t n = 0;
    double value = 0;
    int32_t bus32 = (int32_t)bus, addr32 = (int32_t)address, cs32 = (int32_t)cs, line32 = (int32_t)line;
    switch (call) {
    case I2C_READ:
        e = perch_i2c_read(bus32, addr32, (int32_t)reg, r, 1);
        value = r[0];
        break;
    case I2C_WRITE:
        e = perch_i2c_write(bus32, addr32, b, 1);
        break;
    case SPI_TRANSFER:
        e = perch_spi_transfer(bus32, cs32, b, r, 2);
        value = r[1];
        break;
    case GPIO_READ:
        e = perch_gpio_read(line32, r);
        value = r[0];
        break;
    case GPIO_WRITE:
        e = perch_gpio_write(line32, (int32_t)level);
        break;
    case UART_READ: {
        uint8_t buf[64];
        e = perch_uart_read(port, port_len, buf, sizeof buf, &n);
        value = n;
        break;
    }
    case UART_WRITE:
        e = perch_uart_write(port, port_len, b, 1);
        value = e == PERCH_OK;
        break;
    }
    static uint8_t out[256];
    perch_builder o;
    perch_builder_init(&o, out, sizeof out);
    perch_begin(&o, PERCH_KIND_READING, 0, PERCH_STR(""), PERCH_STR("probe"));
    perch_field(&o, PERCH_STR("errno"), (double)e);
    perch_field(&o, PERCH_STR("value"), value);
    perch_end(&o);
    return perch_emit(out, o.len);
}
