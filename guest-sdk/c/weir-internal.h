/* What the SDK's own files share (weir.c, weir-buf.c, weir-codec.c,
 * weir-text.c, weir-state.c, weir-exports.c); not for functions, which
 * include weir.h only.
 *
 * Names the linker sees start with weir__: they share one namespace with the
 * function's own code. The small primitives of buffers and of the packed
 * encoding are static inline here instead, so that each file that uses them
 * has them inlined, as when the SDK was one file: a call per field written
 * made split-words (many small outputs) about 6% slower. */
#ifndef WEIR_INTERNAL_H
#define WEIR_INTERNAL_H

#include "weir.h"

#include <stdlib.h>
#include <string.h>

/* The length that says a list<u8> is none, in the packed encoding. */
#define NONE_LEN 0xffffffffu

/* ------------------------------------------------------------ memory and calls (weir.c) */

/* malloc that traps instead of returning NULL. */
void *weir__xmalloc(size_t n);
/* Frees `p` when the current call returns. */
void weir__own(void *p);
/* Frees what weir__own collected. */
void weir__free_owned(void);
/* Frees the previous call's result: every export calls it first. */
void weir__begin_call(void);
/* The result of the previous call, freed at the next one (the host has
 * copied it out by then). */
extern void *weir__last_result;
/* The offset of the record being processed, for abort()'s message; -1
 * outside a record. */
extern int64_t weir__current_offset;

/* A bug in the host or the SDK: say what, then trap. */
__attribute__((noreturn)) void weir__fatal(const char *what);

/* ------------------------------------------------------------ buffers */

static inline void buf_room(weir_buf *b, size_t n) {
    if (b->len + n <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + n) cap *= 2;
    b->ptr = realloc(b->ptr, cap);
    if (b->ptr == NULL) __builtin_trap();
    b->cap = cap;
}

static inline void buf_byte(weir_buf *b, uint8_t c) {
    buf_room(b, 1);
    b->ptr[b->len++] = c;
}

/* weir_buf_add, inlined where the result list is written. */
static inline void buf_add(weir_buf *b, weir_bytes bytes) {
    if (bytes.len == 0) return;
    buf_room(b, bytes.len);
    memcpy(b->ptr + b->len, bytes.ptr, bytes.len);
    b->len += bytes.len;
}

/* ------------------------------------------------------------ reading the packed encoding */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} reader;

static inline void need(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) weir__fatal("the host sent a malformed batch (it ends too early)");
}

static inline uint32_t rd_u32(reader *r) {
    need(r, 4);
    uint32_t x;
    memcpy(&x, r->p, 4);
    r->p += 4;
    return x;
}

static inline int64_t rd_i64(reader *r) {
    need(r, 8);
    int64_t x;
    memcpy(&x, r->p, 8);
    r->p += 8;
    return x;
}

static inline weir_bytes rd_bytes(reader *r) {
    uint32_t n = rd_u32(r);
    need(r, n);
    weir_bytes b = {r->p, n};
    r->p += n;
    return b;
}

static inline weir_bytes rd_opt_bytes(reader *r) {
    uint32_t n = rd_u32(r);
    if (n == NONE_LEN) return WEIR_NONE;
    need(r, n);
    weir_bytes b = {r->p, n};
    r->p += n;
    return b;
}

/* Headers of the records being read (weir-codec.c). */
extern weir_header *weir__headers;
extern size_t weir__headers_len;

/* Reads a record; its headers are appended to weir__headers, and
 * `header_index` says where. */
void weir__rd_record(reader *r, weir_record *rec, size_t *header_index);

/* ------------------------------------------------------------ writing the result list */

struct weir_out {
    weir_buf b;
    uint32_t count;
    uint32_t index;        /* the input the entries belong to */
    int64_t timestamp;     /* the default event time of outputs */
};

static inline void wr_u32(weir_buf *b, uint32_t x) { buf_add(b, (weir_bytes){(const uint8_t *)&x, 4}); }
static inline void wr_i64(weir_buf *b, int64_t x) { buf_add(b, (weir_bytes){(const uint8_t *)&x, 8}); }
static inline void wr_bytes(weir_buf *b, weir_bytes x) {
    if (x.len >= NONE_LEN) weir__fatal("a key, value or header is larger than 4 GiB");
    wr_u32(b, (uint32_t)x.len);
    buf_add(b, x);
}
static inline void wr_opt_bytes(weir_buf *b, weir_bytes x) {
    if (x.ptr == NULL) wr_u32(b, NONE_LEN);
    else wr_bytes(b, x);
}

/* Starts an entry of the result list: its tag (0 output, 1 rejected, 2
 * accumulator, 3 value) and the input it belongs to. */
static inline void entry(weir_out *o, uint8_t tag, uint32_t index) {
    o->count++;
    buf_byte(&o->b, tag);
    wr_u32(&o->b, index);
}

/* The message of the current rejection (weir_reject writes it). */
extern weir_buf weir__reject_message;

/* Starts a result list with room for `capacity` bytes. */
void weir__out_start(weir_out *o, size_t capacity);
/* Adds the current rejection, for input `index`, and clears its message. */
void weir__rejected(weir_out *o, uint32_t index);
/* Finishes the result list; returns the canonical ABI's return area. */
uint32_t *weir__finish(weir_out *o);

#endif /* WEIR_INTERNAL_H */
