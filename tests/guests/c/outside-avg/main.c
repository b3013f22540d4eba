/* Written from the docs alone, as an outside author would (tests/guests/
 * outside-avg in C): the average per key and window, presented as
 * {"avg","count","key","start"}. Values are integers here (the SDK parses
 * those); the average is formatted with snprintf. */
#include <stdio.h>

#include "weir.h"

typedef struct {
    int64_t sum;
    int64_t count;
} Acc;

static void init(Acc *a) {
    a->sum = 0;
    a->count = 0;
}

static weir_status add(Acc *a, const weir_record *r) {
    weir_bytes text;
    int64_t n;
    if (weir_value_text(r, &text) != WEIR_OK) return WEIR_REJECTED;
    if (!weir_parse_i64(text, &n)) return weir_reject("not a number: %.*s", (int)text.len, (const char *)text.ptr);
    a->sum += n;
    a->count += 1;
    return WEIR_OK;
}

static void merge(Acc *a, const Acc *b) {
    a->sum += b->sum;
    a->count += b->count;
}

static weir_status present(const Acc *a, weir_bytes key, const weir_window *window, weir_result *value) {
    char avg[32];
    snprintf(avg, sizeof avg, "%.17g", (double)a->sum / (double)a->count);
    weir_log(WEIR_INFO, "presenting %.*s", (int)key.len, (const char *)key.ptr);
    weir_buf_fmt(&value->bytes, "{\"avg\":%s,\"count\":%lld,\"key\":\"%.*s\",\"start\":", avg, (long long)a->count,
                 (int)key.len, (const char *)key.ptr);
    if (window) weir_buf_fmt(&value->bytes, "%lld}", (long long)window->start);
    else weir_buf_str(&value->bytes, "null}");
    return WEIR_OK;
}

WEIR_AGGREGATE(Acc, init, add, merge, present)
