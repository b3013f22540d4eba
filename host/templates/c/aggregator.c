/* {{name}}: a Weir aggregator. The host keeps one accumulator per key (and
 * window); this says how to start, add to and merge one. */
#include "weir.h"

/* Sums the values (integers) per key.
 *
 * Change this: the accumulator is a struct the host stores as its bytes; add
 * updates it (returning weir_reject("why") rejects the record, which must
 * leave it as it was); merge combines two into the first; present says what
 * is emitted. */
typedef struct {
    int64_t sum;
} Acc;

static void init(Acc *a) { a->sum = 0; }

static weir_status add(Acc *a, const weir_record *r) {
    weir_bytes text;
    int64_t n;
    if (weir_value_text(r, &text) != WEIR_OK) return WEIR_REJECTED;
    if (!weir_parse_i64(text, &n)) return weir_reject("not a number: %.*s", (int)text.len, (const char *)text.ptr);
    a->sum += n;
    return WEIR_OK;
}

static void merge(Acc *a, const Acc *b) { a->sum += b->sum; }

static weir_status present(const Acc *a, weir_bytes key, const weir_window *window, weir_result *value) {
    (void)key;
    (void)window;
    weir_buf_fmt(&value->bytes, "%lld", (long long)a->sum);
    return WEIR_OK;
}

WEIR_AGGREGATE(Acc, init, add, merge, present)
