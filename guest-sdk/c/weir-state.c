/* weir-guest for C: state stores and timers, for processors: the state and
 * timers imports of wit/functions.wit and the functions of weir.h over them.
 * The linker keeps the imports only in a component that calls them, so
 * another world's component does not import what its world lacks. */
#include "weir-internal.h"

/* ------------------------------------------------------------ imports */

__attribute__((import_module("weir:functions/state@0.1.0"), import_name("get"))) extern void
weir__state_get(const char *s, size_t sn, const uint8_t *k, size_t kn, uint8_t *ret);
__attribute__((import_module("weir:functions/state@0.1.0"), import_name("put"))) extern void
weir__state_put(const char *s, size_t sn, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn,
                uint8_t *ret);
__attribute__((import_module("weir:functions/state@0.1.0"), import_name("delete"))) extern void
weir__state_delete(const char *s, size_t sn, const uint8_t *k, size_t kn, uint8_t *ret);
__attribute__((import_module("weir:functions/state@0.1.0"), import_name("range"))) extern void
weir__state_range(const char *s, size_t sn, int32_t has_start, const uint8_t *start, size_t start_n,
                  int32_t has_end, const uint8_t *end, size_t end_n, uint32_t limit, uint8_t *ret);

__attribute__((import_module("weir:functions/timers@0.1.0"), import_name("schedule"))) extern void
weir__timers_schedule(int32_t clock, int64_t time, const uint8_t *tag, size_t n);
__attribute__((import_module("weir:functions/timers@0.1.0"), import_name("cancel"))) extern void
weir__timers_cancel(int32_t clock, const uint8_t *tag, size_t n);

/* ------------------------------------------------------------ state and timers */

static weir_status state_error(const char *store, const uint8_t *ret) {
    uint8_t kind = ret[4];
    uint32_t ptr, len;
    memcpy(&ptr, ret + 8, 4);
    memcpy(&len, ret + 12, 4);
    weir__own((void *)(uintptr_t)ptr);
    if (kind == 0) {
        return weir_reject("no state store named `%.*s`: declare it in the pipeline file", (int)len,
                           (const char *)(uintptr_t)ptr);
    }
    return weir_reject("state store `%s`: %.*s", store, (int)len, (const char *)(uintptr_t)ptr);
}

static _Alignas(8) uint8_t state_ret[16];

weir_status weir_state_get(const char *store, weir_bytes key, weir_bytes *value) {
    weir__state_get(store, strlen(store), key.ptr, key.len, state_ret);
    if (state_ret[0] != 0) return state_error(store, state_ret);
    if (state_ret[4] == 0) {
        *value = WEIR_NONE;
        return WEIR_OK;
    }
    uint32_t ptr, len;
    memcpy(&ptr, state_ret + 8, 4);
    memcpy(&len, state_ret + 12, 4);
    weir__own((void *)(uintptr_t)ptr);
    *value = weir_bytes_of((const void *)(uintptr_t)ptr, len);
    return WEIR_OK;
}

weir_status weir_state_put(const char *store, weir_bytes key, weir_bytes value) {
    weir__state_put(store, strlen(store), key.ptr, key.len, value.ptr, value.len, state_ret);
    return state_ret[0] != 0 ? state_error(store, state_ret) : WEIR_OK;
}

weir_status weir_state_delete(const char *store, weir_bytes key) {
    weir__state_delete(store, strlen(store), key.ptr, key.len, state_ret);
    return state_ret[0] != 0 ? state_error(store, state_ret) : WEIR_OK;
}

weir_status weir_state_range(const char *store, weir_bytes start, weir_bytes end, uint32_t limit,
                             weir_entry **entries, size_t *count) {
    weir__state_range(store, strlen(store), start.ptr != NULL, start.ptr, start.len, end.ptr != NULL, end.ptr,
                      end.len, limit, state_ret);
    if (state_ret[0] != 0) return state_error(store, state_ret);
    uint32_t ptr, len;
    memcpy(&ptr, state_ret + 4, 4);
    memcpy(&len, state_ret + 8, 4);
    const uint32_t *raw = (const uint32_t *)(uintptr_t)ptr;
    weir__own((void *)raw);
    weir_entry *e = weir__xmalloc(len * sizeof(weir_entry));
    weir__own(e);
    for (uint32_t i = 0; i < len; i++) {
        weir__own((void *)(uintptr_t)raw[4 * i]);
        weir__own((void *)(uintptr_t)raw[4 * i + 2]);
        e[i].key = weir_bytes_of((const void *)(uintptr_t)raw[4 * i], raw[4 * i + 1]);
        e[i].value = weir_bytes_of((const void *)(uintptr_t)raw[4 * i + 2], raw[4 * i + 3]);
    }
    *entries = e;
    *count = len;
    return WEIR_OK;
}

void weir_timer_at_event_time(int64_t time, weir_bytes tag) { weir__timers_schedule(0, time, tag.ptr, tag.len); }
void weir_timer_at_wall_clock(int64_t time, weir_bytes tag) { weir__timers_schedule(1, time, tag.ptr, tag.len); }
void weir_timer_cancel_event_time(weir_bytes tag) { weir__timers_cancel(0, tag.ptr, tag.len); }
void weir_timer_cancel_wall_clock(weir_bytes tag) { weir__timers_cancel(1, tag.ptr, tag.len); }
