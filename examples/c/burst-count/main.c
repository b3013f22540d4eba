/* A processor with state and an event-time timer (world processor), as
 * examples/burst-count in Rust: it counts each key's records in the store
 * `counts`; a key's first record sets a timer 10 s later (or `window_ms`),
 * and when the stream time passes it the timer emits the key's count, at
 * the timer's time, and forgets it. */
#include "weir.h"

static weir_status count_of(weir_bytes key, int64_t *n) {
    weir_bytes stored;
    *n = 0;
    if (weir_state_get("counts", key, &stored) != WEIR_OK) return WEIR_REJECTED;
    if (!weir_is_none(stored) && !weir_parse_i64(stored, n)) {
        return weir_reject("a stored count is not a number");
    }
    return WEIR_OK;
}

static weir_status process(const weir_record *r, weir_out *out) {
    (void)out;
    if (weir_is_none(r->key)) return weir_reject("burst-count needs keyed records");
    int64_t n;
    if (count_of(r->key, &n) != WEIR_OK) return WEIR_REJECTED;
    if (n == 0) {
        int64_t window = 10000;
        const char *w = weir_config("window_ms");
        if (w && !weir_parse_i64(weir_str(w), &window)) {
            return weir_reject("window_ms is not a number");
        }
        weir_timer_at_event_time(r->timestamp + window, r->key);
    }
    weir_buf text = {0};
    weir_buf_fmt(&text, "%lld", (long long)(n + 1));
    weir_status st = weir_state_put("counts", r->key, weir_buf_bytes(&text));
    weir_buf_free(&text);
    return st;
}

static weir_status on_timer(int64_t time, weir_bytes tag, weir_out *out) {
    int64_t n;
    if (count_of(tag, &n) != WEIR_OK) return WEIR_REJECTED;
    if (weir_state_delete("counts", tag) != WEIR_OK) return WEIR_REJECTED;
    weir_buf text = {0};
    weir_buf_fmt(&text, "%lld", (long long)n);
    weir_emit(out, weir_at(weir_keyed(tag, weir_buf_bytes(&text)), time));
    weir_buf_free(&text);
    return WEIR_OK;
}

WEIR_PROCESSOR(process, on_timer)
