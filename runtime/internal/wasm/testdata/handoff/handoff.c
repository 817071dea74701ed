/*
 * handoff - a test guest for the hot swap state handoff (perch_snapshot, perch_restore): a
 * filter that passes its input through and counts the records it has seen, and that hands the
 * count to its next binary. Its config picks how it behaves, well or badly:
 *
 *   {"snapshot": "ok" | "none" | "chunks" | "errno" | "trap" | "hang" | "bad_pointer" | "too_big",
 *    "restore": "ok" | "refuse" | "trap" | "hang" | "bad_pointer",
 *    "magic": "HOF1", "report": false, "save_in_process": false, "bad_buffer": false}
 *
 * With report set, perch_process emits one reading (series "count", field n: the records seen
 * so far) instead of passing its input through. With save_in_process set, perch_process calls
 * perch_save and returns its errno (which must be EPERM). With bad_buffer set, perch_buffer
 * returns an address outside memory. Built by the tests with the flags
 * `make modules` uses (runtime/internal/wasm/handoff_test.go).
 */
#include "perch.h"

static perch_buf in;
static uint64_t count;
static char snap_mode[32], rest_mode[32], magic[4] = {'H', 'O', 'F', '1'};
static int report, save_in_process, bad_buffer;

PERCH_DEFINE_ABI_VERSION()

uint8_t *perch_buffer(int32_t size) {
    if (bad_buffer) return (uint8_t *)0xfffffff0u;
    return size < 0 ? NULL : perch_buf_reserve(&in, (uint32_t)size);
}

static void copy_mode(char *dst, perch_str s, const char *def) {
    if (s.len == 0) s = perch_cstr(def);
    uint32_t n = s.len < 31 ? s.len : 31;
    memcpy(dst, s.ptr, n);
    dst[n] = 0;
}

perch_errno perch_init(void) {
    static char msgbuf[512];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_init_config(&msg, &json, &n);
    if (e != PERCH_OK) return e;
    perch_str s = {"", 0}, r = {"", 0}, m = {"", 0};
    perch_cfg_field f[] = {{"snapshot", PERCH_CFG_STRING, &s}, {"restore", PERCH_CFG_STRING, &r},
                           {"magic", PERCH_CFG_STRING, &m},    {"report", PERCH_CFG_BOOL, &report},
                           {"save_in_process", PERCH_CFG_BOOL, &save_in_process},
                           {"bad_buffer", PERCH_CFG_BOOL, &bad_buffer}};
    if (!perch_config_decode(json, n, f, 6, "handoff.Config", &msg, &arena)) {
        e = PERCH_EINVAL;
        goto done;
    }
    copy_mode(snap_mode, s, "ok");
    copy_mode(rest_mode, r, "ok");
    if (m.len == 4) memcpy(magic, m.ptr, 4);
done:
    return perch_init_finish(e, &msg, json, arena);
}

perch_errno perch_process(const uint8_t *batch, int32_t len) {
    if (!perch_buf_holds(&in, batch, len)) return PERCH_EFAULT;
    if (save_in_process) return perch_save("x", 1);
    perch_iter it = perch_iter_init(batch, (uint32_t)len);
    perch_record rec;
    while (perch_next(&it, &rec)) count++;
    if (it.err) return PERCH_EIO;
    if (!report) return len ? perch_emit(batch, (uint32_t)len) : PERCH_OK;
    uint8_t out[128];
    perch_builder b;
    perch_builder_init(&b, out, sizeof out);
    perch_begin(&b, PERCH_KIND_READING, 0, PERCH_STR(""), PERCH_STR("count"));
    perch_field(&b, PERCH_STR("n"), (double)count);
    perch_end(&b);
    return perch_emit(b.buf, b.len);
}

static volatile int spin = 1;

perch_errno perch_snapshot(void) {
    if (strcmp(snap_mode, "none") == 0) return PERCH_OK;
    if (strcmp(snap_mode, "errno") == 0) return PERCH_EIO;
    if (strcmp(snap_mode, "trap") == 0) __builtin_trap();
    if (strcmp(snap_mode, "hang") == 0) {
        while (spin) {
        }
    }
    if (strcmp(snap_mode, "bad_pointer") == 0) return perch_save((const void *)0xfffffff0u, 64);
    if (strcmp(snap_mode, "too_big") == 0) {
        static uint8_t big[600 << 10];
        perch_save(big, sizeof big);
        perch_save(big, sizeof big); /* EINVAL: past 1 MiB; ignored on purpose */
        return PERCH_OK;
    }
    if (strcmp(snap_mode, "chunks") == 0) {
        perch_errno e = perch_save(magic, 4);
        if (e == PERCH_OK) e = perch_save(&count, 4);
        if (e == PERCH_OK) e = perch_save((const uint8_t *)&count + 4, 4);
        return e;
    }
    uint8_t b[12];
    memcpy(b, magic, 4);
    memcpy(b + 4, &count, 8);
    return perch_save(b, sizeof b);
}

perch_errno perch_restore(const uint8_t *snap, int32_t len) {
    if (strcmp(rest_mode, "trap") == 0) __builtin_trap();
    if (strcmp(rest_mode, "hang") == 0) {
        while (spin) {
        }
    }
    if (strcmp(rest_mode, "bad_pointer") == 0) return perch_emit((const void *)0xfffffff0u, 64);
    if (strcmp(rest_mode, "refuse") == 0) return perch_restore_refuse("refused by config");
    if (!perch_buf_holds(&in, snap, len)) return perch_restore_refuse("not inside the buffer");
    if (len != 12 || memcmp(snap, magic, 4) != 0) return perch_restore_refuse("not a handoff snapshot");
    memcpy(&count, snap + 4, 8);
    return PERCH_OK;
}
