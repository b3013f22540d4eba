/* weir-guest for C: the packed batch encoding of wit/functions.wit, beyond
 * the primitives in weir-internal.h: reading a record, writing the result
 * list (outputs, rejections), and the outputs a function builds. */
#include "weir-internal.h"

/* ------------------------------------------------------------ reading the packed encoding */

/* Headers of the records being read. */
weir_header *weir__headers;
size_t weir__headers_len;
static size_t headers_cap;

/* Reads a record; its headers are appended to `weir__headers`, and
 * `header_index` says where (they are pointed to after the batch is read,
 * since `weir__headers` may move). */
void weir__rd_record(reader *r, weir_record *rec, size_t *header_index) {
    rec->offset = rd_i64(r);
    rec->timestamp = rd_i64(r);
    rec->key = rd_opt_bytes(r);
    rec->value = rd_opt_bytes(r);
    uint32_t n = rd_u32(r);
    *header_index = weir__headers_len;
    rec->header_count = n;
    rec->headers = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (weir__headers_len == headers_cap) {
            headers_cap = headers_cap ? headers_cap * 2 : 16;
            weir__headers = realloc(weir__headers, headers_cap * sizeof(weir_header));
            if (weir__headers == NULL) __builtin_trap();
        }
        weir__headers[weir__headers_len].name = rd_bytes(r);
        weir__headers[weir__headers_len].value = rd_bytes(r);
        weir__headers_len++;
    }
}

weir_bytes weir_header_get(const weir_record *r, const char *name) {
    for (size_t i = 0; i < r->header_count; i++) {
        if (weir_bytes_eq(r->headers[i].name, name)) return r->headers[i].value;
    }
    return WEIR_NONE;
}

/* ------------------------------------------------------------ writing the result list */

void weir__out_start(weir_out *o, size_t capacity) {
    memset(o, 0, sizeof *o);
    buf_room(&o->b, capacity < 64 ? 64 : capacity);
    wr_u32(&o->b, 0);
}

void weir_emit(weir_out *o, weir_output x) {
    entry(o, 0, o->index);
    wr_opt_bytes(&o->b, weir_str(x.to));
    wr_i64(&o->b, x.timestamp == WEIR_INPUT_TIME ? o->timestamp : x.timestamp);
    wr_opt_bytes(&o->b, x.key);
    wr_opt_bytes(&o->b, x.value);
    wr_u32(&o->b, (uint32_t)x.header_count);
    for (size_t i = 0; i < x.header_count; i++) {
        wr_bytes(&o->b, x.headers[i].name);
        wr_bytes(&o->b, x.headers[i].value.ptr ? x.headers[i].value : weir_bytes_of("", 0));
    }
}

/* The message of the current rejection. */
weir_buf weir__reject_message;

weir_status weir_reject(const char *fmt, ...) {
    weir_buf_clear(&weir__reject_message);
    va_list ap;
    va_start(ap, fmt);
    weir_buf_vfmt(&weir__reject_message, fmt, ap);
    va_end(ap);
    return WEIR_REJECTED;
}

void weir__rejected(weir_out *o, uint32_t index) {
    entry(o, 1, index);
    wr_bytes(&o->b, weir_buf_bytes(&weir__reject_message));
    weir_buf_clear(&weir__reject_message);
}

/* The canonical ABI's return area of the exports that return a list. */
static uint32_t ret_area[3];

/* Finishes the result list; returns the canonical ABI's return area. */
uint32_t *weir__finish(weir_out *o) {
    memcpy(o->b.ptr, &o->count, 4);
    weir__last_result = o->b.ptr;
    ret_area[0] = (uint32_t)(uintptr_t)o->b.ptr;
    ret_area[1] = (uint32_t)o->b.len;
    weir__free_owned();
    return ret_area;
}

weir_output weir_forward(const weir_record *r) {
    return (weir_output){NULL, r->key, r->value, r->timestamp, r->header_count, r->headers};
}

weir_output weir_keyed(weir_bytes key, weir_bytes value) {
    return (weir_output){NULL, key, value, WEIR_INPUT_TIME, 0, NULL};
}

weir_output weir_value(weir_bytes value) { return weir_keyed(WEIR_NONE, value); }
