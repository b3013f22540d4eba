/* A per-key counter kept in the state store `counts` (world processor): each
 * record's count so far under its key is emitted as the value "key=N".
 * The pipeline declares the store; the host commits it with each batch. */
#include "weir.h"

static weir_status count(const weir_record *r, weir_out *out) {
    weir_bytes key = weir_str(""), stored;
    if (!weir_is_none(r->key) && weir_key_text(r, &key) != WEIR_OK) return WEIR_REJECTED;
    if (weir_state_get("counts", key, &stored) != WEIR_OK) return WEIR_REJECTED;
    int64_t n = 0;
    if (!weir_is_none(stored) && !weir_parse_i64(stored, &n)) {
        return weir_reject("the count of %.*s is not a number", (int)key.len, (const char *)key.ptr);
    }
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
WEIR_PROCESSOR(count, NULL)
