/* A sum per key (world aggregator): the value of each record is an integer;
 * the host keeps one sum per key and window (tumbling windows come from the
 * pipeline file) and emits it when the window closes. */
#include "weir.h"

typedef struct {
    int64_t sum;
} Sum;

static void init(Sum *s) { s->sum = 0; }

static weir_status add(Sum *s, const weir_record *r) {
    weir_bytes text;
    int64_t n;
    if (weir_value_text(r, &text) != WEIR_OK) return WEIR_REJECTED;
    if (!weir_parse_i64(text, &n)) return weir_reject("not a number: %.*s", (int)text.len, (const char *)text.ptr);
    s->sum += n;
    return WEIR_OK;
}

static void merge(Sum *a, const Sum *b) { a->sum += b->sum; }

/* The value emitted: the sum as a JSON number. */
static weir_status present(const Sum *s, weir_bytes key, const weir_window *window, weir_result *value) {
    (void)key;
    (void)window;
    weir_buf_fmt(&value->bytes, "%lld", (long long)s->sum);
    return WEIR_OK;
}

WEIR_AGGREGATE(Sum, init, add, merge, present)
