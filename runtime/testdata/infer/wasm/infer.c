/*
 * infer - a test-only filter that scores records with a model granted to it, through
 * perch:infer/v1 (sdk/c/perch.h: perch_model_open, perch_model_score).
 *
 * Config (JSON): {"model": "env-ae", "mode": "ok"}. At each batch it opens the model and appends
 * the numeric field values of every record, in order, to rows of F values (F: the model's row
 * width; a row may span records, and calls: with three fields a record and F = 6, each row is
 * two records). It scores the rows finished in this call in one perch_model_score call and emits
 * one score record per row: the time and series of the record that finished it, fields score
 * and errno (0). When open or infer fails it emits one score record, series "infer", field
 * errno (the host's errno) and nothing else.
 * mode badptr:open, badptr:info, badptr:in and badptr:out pass a pointer outside its memory to
 * open (the name or the info) or infer (the rows or the scores) instead, for the bounds checks.
 *
 * Build (from the repository root; runtime/model_test.go does this):
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra \
 *         -Werror -Isdk/c -Wl,--strip-all -o infer.wasm runtime/testdata/infer/wasm/infer.c
 */
#include "perch.h"

#define MAX_ROWS 4096
#define MAX_VALUES 65536
#define BAD ((void *)0xfffffff0u) /* past the end of any memory this module can have */

static char model_name[PERCH_MAX_STRING + 1];
static char mode[32];
static perch_buf in, out;
static float rows[MAX_VALUES], scores[MAX_ROWS];
static uint32_t filled; /* values in rows, the last row possibly unfinished */
static int64_t times[MAX_ROWS];
static perch_str series[MAX_ROWS];

PERCH_DEFINE_ABI_VERSION()
PERCH_DEFINE_BUFFER(in)

perch_errno perch_init(void) {
    static char msgbuf[512];
    perch_text msg = perch_text_init(msgbuf, sizeof msgbuf);
    perch_text_cstr(&msg, "perch_init failed: ");
    char *json = NULL, *arena = NULL;
    uint32_t n = 0;
    perch_errno e = perch_init_config(&msg, &json, &n);
    if (e != PERCH_OK) return e;
    perch_str c_model = PERCH_STR(""), c_mode = PERCH_STR("ok");
    perch_cfg_field fields[] = {{"model", PERCH_CFG_STRING, &c_model}, {"mode", PERCH_CFG_STRING, &c_mode}};
    e = PERCH_EINVAL;
    if (!perch_config_decode(json, n, fields, 2, "infer.Config", &msg, &arena)) goto done;
    if (c_model.len == 0 || c_model.len > PERCH_MAX_STRING || c_mode.len >= sizeof mode) {
        perch_text_cstr(&msg, "config: model is required, mode at most 31 bytes");
        goto done;
    }
    memcpy(model_name, c_model.ptr, c_model.len);
    memcpy(mode, c_mode.ptr, c_mode.len);
    e = PERCH_OK;
done:
    return perch_init_finish(e, &msg, json, arena);
}

/* failed emits the errno of a failed call as one record. */
static perch_errno failed(perch_builder *b, perch_errno e) {
    perch_begin(b, PERCH_KIND_SCORE, 0, PERCH_STR(""), PERCH_STR("infer"));
    perch_field(b, PERCH_STR("errno"), (double)e);
    perch_end(b);
    return perch_emit(b->buf, b->len);
}

perch_errno perch_process(const uint8_t *batch, int32_t len) {
    if (!perch_process_batch_ok(&in, batch, len)) return PERCH_EFAULT;
    if (!perch_buf_reserve(&out, 64 * 1024)) return PERCH_EIO;
    perch_builder b;
    perch_builder_init(&b, out.ptr, out.cap);
    perch_model m = {0, 0};
    perch_errno e;
    if (perch_str_eq(perch_cstr(mode), "badptr:open")) {
        uint32_t info[2];
        e = perch_infer_open((const char *)BAD, (uint32_t)strlen(model_name), info);
    } else if (perch_str_eq(perch_cstr(mode), "badptr:info")) {
        e = perch_infer_open(model_name, (uint32_t)strlen(model_name), (uint32_t *)BAD);
    } else {
        e = perch_model_open(model_name, &m);
    }
    if (e != PERCH_OK) return failed(&b, e);
    if (m.features == 0 || m.features > MAX_VALUES / MAX_ROWS) return failed(&b, PERCH_EINVAL);
    /* Values go into rows back to back, across records and calls; a row ends with a record. */
    perch_iter it = perch_iter_init(batch, (uint32_t)len);
    perch_record r;
    while (perch_next(&it, &r)) {
        perch_cursor c = perch_fields(&r);
        perch_str name;
        double v;
        while (filled < MAX_VALUES && perch_next_field(&c, &name, &v)) {
            rows[filled++] = (float)v;
            if (filled % m.features == 0) {
                times[filled / m.features - 1] = r.time_ns;
                series[filled / m.features - 1] = r.series;
            }
        }
    }
    if (it.err) return perch_process_decode_failed(&it);
    uint32_t n = filled / m.features;
    if (n == 0) return PERCH_OK;
    if (perch_str_eq(perch_cstr(mode), "badptr:in")) {
        e = perch_infer(m.id, (const float *)BAD, n * m.features, scores, n);
    } else if (perch_str_eq(perch_cstr(mode), "badptr:out")) {
        e = perch_infer(m.id, rows, n * m.features, (float *)BAD, n);
    } else {
        e = perch_model_score(&m, rows, n, scores);
    }
    /* The values of an unfinished row wait for the next call. */
    memmove(rows, rows + n * m.features, (filled - n * m.features) * sizeof rows[0]);
    filled -= n * m.features;
    if (e != PERCH_OK) return failed(&b, e);
    for (uint32_t k = 0; k < n; k++) {
        perch_builder_room(&b, &out, 128);
        perch_begin(&b, PERCH_KIND_SCORE, times[k], PERCH_STR(""), series[k]);
        perch_field(&b, PERCH_STR("score"), (double)scores[k]);
        perch_field(&b, PERCH_STR("errno"), 0);
        perch_end(&b);
    }
    return b.len ? perch_emit(b.buf, b.len) : PERCH_OK;
}
