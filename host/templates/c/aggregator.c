/* {{name}}: a Weir aggregator. The host keeps one accumulator per key (and
 * window); this says how to start, add to and merge one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weir.h"

/* Sums the values (numbers) per key.
 *
 * Change this: the accumulator is a struct the host stores as its bytes; add
 * updates it (returning weir_reject("why") rejects the record, which must
 * leave it as it was); merge combines two into the first; present says what
 * is emitted. */
typedef struct {
    double sum;
} Acc;

static void init(Acc *a) { a->sum = 0; }

static weir_status add(Acc *a, const weir_record *r) {
    weir_bytes text;
    char digits[64];
    char *end;
    if (weir_value_text(r, &text) != WEIR_OK) return WEIR_REJECTED;
    if (text.len == 0 || text.len >= sizeof digits) goto not_a_number;
    memcpy(digits, text.ptr, text.len);
    digits[text.len] = 0;
    double n = strtod(digits, &end);
    if (end != digits + text.len) goto not_a_number;
    a->sum += n;
    return WEIR_OK;
not_a_number:
    return weir_reject("not a number: %.*s", (int)text.len, (const char *)text.ptr);
}

static void merge(Acc *a, const Acc *b) { a->sum += b->sum; }

static weir_status present(const Acc *a, weir_bytes key, const weir_window *window, weir_result *value) {
    (void)key;
    (void)window;
    char text[32];
    snprintf(text, sizeof text, "%.17g", a->sum);
    weir_buf_fmt(&value->bytes, "%s", text);
    return WEIR_OK;
}

WEIR_AGGREGATE(Acc, init, add, merge, present)
