/* {{name}}: a Weir processor, with state stores and timers. */
#include "weir.h"

/* Counts records per key in the state store `counts` (declare it in the
 * pipeline file) and emits "key=N".
 *
 * Change this: process emits outputs like a map function; pass a function
 * weir_status on_timer(int64_t time, weir_bytes tag, weir_out *out) instead
 * of NULL to act on timers set with weir_timer_at_event_time(...). */
static weir_status {{ident}}(const weir_record *r, weir_out *out) {
    weir_bytes key = weir_str(""), stored;
    if (!weir_is_none(r->key) && weir_key_text(r, &key) != WEIR_OK) return WEIR_REJECTED;
    if (weir_state_get("counts", key, &stored) != WEIR_OK) return WEIR_REJECTED;
    int64_t n = 0;
    if (!weir_is_none(stored) && !weir_parse_i64(stored, &n)) return weir_reject("a count is not a number");
    n++;
    weir_buf text = {0};
    weir_buf_fmt(&text, "%lld", (long long)n);
    weir_status st = weir_state_put("counts", key, weir_buf_bytes(&text));
    if (st == WEIR_OK) {
        weir_buf_clear(&text);
        weir_buf_fmt(&text, "%.*s=%lld", (int)key.len, (const char *)key.ptr, (long long)n);
        weir_emit(out, weir_keyed(r->key, weir_buf_bytes(&text)));
    }
    weir_buf_free(&text);
    return st;
}
WEIR_PROCESSOR({{ident}}, NULL)
