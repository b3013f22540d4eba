/* tests/guests/count-v3 in C: counts records per key and presents
 * {"count": N}; its accumulator is a C struct (state format 1), and it
 * upgrades the JSON numbers that examples/count (Rust) stored (format 0). */
#include "weir.h"

typedef struct {
    uint64_t count;
} Tally;

static void init(Tally *t) { t->count = 0; }

static weir_status add(Tally *t, const weir_record *r) {
    (void)r;
    t->count += 1;
    return WEIR_OK;
}

static void merge(Tally *a, const Tally *b) { a->count += b->count; }

static weir_status present(const Tally *t, weir_bytes key, const weir_window *window, weir_result *value) {
    (void)key;
    (void)window;
    weir_buf_fmt(&value->bytes, "{\"count\":%llu}", (unsigned long long)t->count);
    return WEIR_OK;
}

static weir_status upgrade(uint32_t from, const weir_state_entry *e, weir_result *value) {
    int64_t n;
    if (from != 0) return weir_reject("unknown state format %u", (unsigned)from);
    if (!weir_parse_i64(e->value, &n) || n < 0) return weir_reject("not a count: %.*s", (int)e->value.len, (const char *)e->value.ptr);
    Tally t = {(uint64_t)n};
    weir_buf_add(&value->bytes, (weir_bytes){(const uint8_t *)&t, sizeof t});
    return WEIR_OK;
}

WEIR_AGGREGATE(Tally, init, add, merge, present)
WEIR_UPGRADE(1, upgrade)
