/* weir-guest for C: the packed batch encoding of wit/functions.wit, the
 * component's canonical-ABI exports and imports, and the helpers declared in
 * weir.h. Uses only malloc and <string.h> from the C library (wasi-libc), so
 * a guest built with it imports no WASI. */
#include "weir.h"

#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#define NONE_LEN 0xffffffffu

/* ------------------------------------------------------------ imports */

__attribute__((import_module("weir:functions/log@0.1.0"), import_name("write"))) extern void
weir__log_write(int32_t level, const char *ptr, size_t len);

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

/* stderr, for weir_abort() only: a component whose code never calls
 * abort() keeps no WASI import (the linker drops what nothing calls). */
__attribute__((import_module("wasi_snapshot_preview1"), import_name("fd_write"))) extern int32_t
weir__fd_write(int32_t fd, const void *iovs, size_t count, size_t *written);

/* The offset of the record being processed, for abort()'s message. */
static int64_t current_offset = -1;

/* ------------------------------------------------------------ memory */

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size, size_t align,
                                                                  size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(old, new_size);
    if (p == NULL) __builtin_trap();
    return p;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p == NULL) __builtin_trap();
    return p;
}

/* Memory freed when the current call returns: the input batch, what the
 * state imports returned, messages. */
static void **owned;
static size_t owned_len, owned_cap;

static void own(void *p) {
    if (p == NULL) return;
    if (owned_len == owned_cap) {
        owned_cap = owned_cap ? owned_cap * 2 : 16;
        owned = realloc(owned, owned_cap * sizeof(void *));
        if (owned == NULL) __builtin_trap();
    }
    owned[owned_len++] = p;
}

static void free_owned(void) {
    for (size_t i = 0; i < owned_len; i++) free(owned[i]);
    owned_len = 0;
}

/* The result of the previous call, freed at the next one (the host has
 * copied it out by then). */
static void *last_result;
static uint32_t ret_area[3];

static void begin_call(void) {
    free(last_result);
    last_result = NULL;
}

/* ------------------------------------------------------------ bytes and buffers */

weir_bytes weir_str(const char *s) {
    if (s == NULL) return WEIR_NONE;
    return (weir_bytes){(const uint8_t *)s, strlen(s)};
}

weir_bytes weir_bytes_of(const void *p, size_t n) {
    return (weir_bytes){p ? (const uint8_t *)p : (const uint8_t *)"", n};
}

bool weir_bytes_eq(weir_bytes b, const char *s) {
    size_t n = strlen(s);
    return b.ptr != NULL && b.len == n && memcmp(b.ptr, s, n) == 0;
}

static void buf_room(weir_buf *b, size_t n) {
    if (b->len + n <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + n) cap *= 2;
    b->ptr = realloc(b->ptr, cap);
    if (b->ptr == NULL) __builtin_trap();
    b->cap = cap;
}

void weir_buf_add(weir_buf *b, weir_bytes bytes) {
    if (bytes.len == 0) return;
    buf_room(b, bytes.len);
    memcpy(b->ptr + b->len, bytes.ptr, bytes.len);
    b->len += bytes.len;
}

void weir_buf_str(weir_buf *b, const char *s) { weir_buf_add(b, weir_str(s)); }

static void buf_byte(weir_buf *b, uint8_t c) {
    buf_room(b, 1);
    b->ptr[b->len++] = c;
}

void weir_buf_utf8(weir_buf *b, uint32_t c) {
    if (c < 0x80) {
        buf_byte(b, (uint8_t)c);
    } else if (c < 0x800) {
        buf_byte(b, (uint8_t)(0xc0 | (c >> 6)));
        buf_byte(b, (uint8_t)(0x80 | (c & 63)));
    } else if (c < 0x10000) {
        buf_byte(b, (uint8_t)(0xe0 | (c >> 12)));
        buf_byte(b, (uint8_t)(0x80 | ((c >> 6) & 63)));
        buf_byte(b, (uint8_t)(0x80 | (c & 63)));
    } else {
        buf_byte(b, (uint8_t)(0xf0 | (c >> 18)));
        buf_byte(b, (uint8_t)(0x80 | ((c >> 12) & 63)));
        buf_byte(b, (uint8_t)(0x80 | ((c >> 6) & 63)));
        buf_byte(b, (uint8_t)(0x80 | (c & 63)));
    }
}

void weir_buf_free(weir_buf *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

static void buf_unsigned(weir_buf *b, uint64_t x, unsigned base) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[x % base];
        x /= base;
    } while (x != 0);
    while (n > 0) buf_byte(b, (uint8_t)digits[--n]);
}

void weir_buf_vfmt(weir_buf *b, const char *fmt, va_list ap) {
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            buf_byte(b, (uint8_t)*p);
            continue;
        }
        p++;
        int precision = -1;
        if (p[0] == '.' && p[1] == '*') {
            precision = va_arg(ap, int);
            p += 2;
        }
        int longs = 0;
        bool size = false;
        while (*p == 'l') {
            longs++;
            p++;
        }
        if (*p == 'z') {
            size = true;
            p++;
        }
        switch (*p) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (s == NULL) s = "(null)";
            size_t n = 0;
            while ((precision < 0 || n < (size_t)precision) && s[n] != 0) n++;
            weir_buf_add(b, (weir_bytes){(const uint8_t *)s, n});
            break;
        }
        case 'c':
            buf_byte(b, (uint8_t)va_arg(ap, int));
            break;
        case 'd':
        case 'i': {
            int64_t x = size ? (int64_t)va_arg(ap, ptrdiff_t)
                        : longs >= 2 ? va_arg(ap, long long)
                        : longs == 1 ? va_arg(ap, long)
                                     : va_arg(ap, int);
            if (x < 0) {
                buf_byte(b, '-');
                buf_unsigned(b, (uint64_t)0 - (uint64_t)x, 10);
            } else {
                buf_unsigned(b, (uint64_t)x, 10);
            }
            break;
        }
        case 'u':
        case 'x': {
            uint64_t x = size ? (uint64_t)va_arg(ap, size_t)
                         : longs >= 2 ? va_arg(ap, unsigned long long)
                         : longs == 1 ? va_arg(ap, unsigned long)
                                      : va_arg(ap, unsigned);
            buf_unsigned(b, x, *p == 'x' ? 16 : 10);
            break;
        }
        case '%':
            buf_byte(b, '%');
            break;
        case '\0':
            return;
        default:
            buf_byte(b, '%');
            buf_byte(b, (uint8_t)*p);
        }
    }
}

void weir_buf_fmt(weir_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    weir_buf_vfmt(b, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ log and config */

void weir_log(weir_level level, const char *fmt, ...) {
    weir_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    weir_buf_vfmt(&b, fmt, ap);
    va_end(ap);
    weir__log_write((int32_t)level, (const char *)weir_buf_bytes(&b).ptr, b.len);
    weir_buf_free(&b);
}

/* A bug in the host or the SDK: say what, then trap. */
__attribute__((noreturn)) static void fatal(const char *what) {
    weir_log(WEIR_ERROR, "weir-guest: %s", what);
    __builtin_trap();
}

static char **config_entries; /* name, value, name, value, ... */
static size_t config_len;
static bool config_set;

const char *weir_config(const char *name) {
    for (size_t i = config_len; i > 0; i--) {
        if (strcmp(config_entries[2 * (i - 1)], name) == 0) return config_entries[2 * (i - 1) + 1];
    }
    return NULL;
}

size_t weir_config_count(void) { return config_len; }

void weir_config_entry(size_t i, const char **name, const char **value) {
    if (i >= config_len) {
        *name = *value = NULL;
        return;
    }
    *name = config_entries[2 * i];
    *value = config_entries[2 * i + 1];
}

static char *cstring(uint32_t ptr, uint32_t len) {
    char *s = xmalloc((size_t)len + 1);
    memcpy(s, (const void *)(uintptr_t)ptr, len);
    s[len] = 0;
    return s;
}

uint8_t *weir__init(const uint8_t *list, size_t n) {
    const uint32_t *e = (const uint32_t *)list;
    // A second init on the same instance keeps the first settings.
    if (!config_set) {
        config_set = true;
        config_entries = xmalloc(2 * n * sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            config_entries[2 * i] = cstring(e[4 * i], e[4 * i + 1]);
            config_entries[2 * i + 1] = cstring(e[4 * i + 2], e[4 * i + 3]);
        }
        config_len = n;
    }
    for (size_t i = 0; i < n; i++) {
        free((void *)(uintptr_t)e[4 * i]);
        free((void *)(uintptr_t)e[4 * i + 2]);
    }
    free((void *)list);
    static uint32_t ok[3];
    ok[0] = 0;
    return (uint8_t *)ok;
}

/* abort() in code that includes weir.h: it traps, as the C library's does,
 * after saying on stderr which record was being processed (the host puts
 * what the guest wrote on stderr into the dead letter's reason). */
void weir_abort(void) {
    weir_buf m = {0};
    if (current_offset >= 0) {
        weir_buf_fmt(&m, "weir-guest: abort() called while processing the record at offset %lld\n",
                     (long long)current_offset);
    } else {
        weir_buf_str(&m, "weir-guest: abort() called\n");
    }
    struct {
        const void *ptr;
        size_t len;
    } iov = {m.ptr, m.len};
    size_t written;
    weir__fd_write(2, &iov, 1, &written);
    __builtin_trap();
}

/* ------------------------------------------------------------ reading the packed encoding */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} reader;

static void need(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) fatal("the host sent a malformed batch (it ends too early)");
}

static uint32_t rd_u32(reader *r) {
    need(r, 4);
    uint32_t x;
    memcpy(&x, r->p, 4);
    r->p += 4;
    return x;
}

static int64_t rd_i64(reader *r) {
    need(r, 8);
    int64_t x;
    memcpy(&x, r->p, 8);
    r->p += 8;
    return x;
}

static weir_bytes rd_bytes(reader *r) {
    uint32_t n = rd_u32(r);
    need(r, n);
    weir_bytes b = {r->p, n};
    r->p += n;
    return b;
}

static weir_bytes rd_opt_bytes(reader *r) {
    uint32_t n = rd_u32(r);
    if (n == NONE_LEN) return WEIR_NONE;
    need(r, n);
    weir_bytes b = {r->p, n};
    r->p += n;
    return b;
}

/* Headers of the records being read. */
static weir_header *headers;
static size_t headers_len, headers_cap;

/* Reads a record; its headers are appended to `headers`, and
 * `header_index` says where (they are pointed to after the batch is read,
 * since `headers` may move). */
static void rd_record(reader *r, weir_record *rec, size_t *header_index) {
    rec->offset = rd_i64(r);
    rec->timestamp = rd_i64(r);
    rec->key = rd_opt_bytes(r);
    rec->value = rd_opt_bytes(r);
    uint32_t n = rd_u32(r);
    *header_index = headers_len;
    rec->header_count = n;
    rec->headers = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (headers_len == headers_cap) {
            headers_cap = headers_cap ? headers_cap * 2 : 16;
            headers = realloc(headers, headers_cap * sizeof(weir_header));
            if (headers == NULL) __builtin_trap();
        }
        headers[headers_len].name = rd_bytes(r);
        headers[headers_len].value = rd_bytes(r);
        headers_len++;
    }
}

weir_bytes weir_header_get(const weir_record *r, const char *name) {
    for (size_t i = 0; i < r->header_count; i++) {
        if (weir_bytes_eq(r->headers[i].name, name)) return r->headers[i].value;
    }
    return WEIR_NONE;
}

/* ------------------------------------------------------------ writing the result list */

struct weir_out {
    weir_buf b;
    uint32_t count;
    uint32_t index;        /* the input the entries belong to */
    int64_t timestamp;     /* the default event time of outputs */
};

static void wr_u32(weir_buf *b, uint32_t x) { weir_buf_add(b, (weir_bytes){(const uint8_t *)&x, 4}); }
static void wr_i64(weir_buf *b, int64_t x) { weir_buf_add(b, (weir_bytes){(const uint8_t *)&x, 8}); }
static void wr_bytes(weir_buf *b, weir_bytes x) {
    if (x.len >= NONE_LEN) fatal("a key, value or header is larger than 4 GiB");
    wr_u32(b, (uint32_t)x.len);
    weir_buf_add(b, x);
}
static void wr_opt_bytes(weir_buf *b, weir_bytes x) {
    if (x.ptr == NULL) wr_u32(b, NONE_LEN);
    else wr_bytes(b, x);
}

static void out_start(weir_out *o, size_t capacity) {
    memset(o, 0, sizeof *o);
    buf_room(&o->b, capacity < 64 ? 64 : capacity);
    wr_u32(&o->b, 0);
}

static void entry(weir_out *o, uint8_t tag, uint32_t index) {
    o->count++;
    buf_byte(&o->b, tag);
    wr_u32(&o->b, index);
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
static weir_buf reject_message;

weir_status weir_reject(const char *fmt, ...) {
    weir_buf_clear(&reject_message);
    va_list ap;
    va_start(ap, fmt);
    weir_buf_vfmt(&reject_message, fmt, ap);
    va_end(ap);
    return WEIR_REJECTED;
}

static void rejected(weir_out *o, uint32_t index) {
    entry(o, 1, index);
    wr_bytes(&o->b, weir_buf_bytes(&reject_message));
    weir_buf_clear(&reject_message);
}

/* Finishes the result list; returns the canonical ABI's return area. */
static uint32_t *finish(weir_out *o) {
    memcpy(o->b.ptr, &o->count, 4);
    last_result = o->b.ptr;
    ret_area[0] = (uint32_t)(uintptr_t)o->b.ptr;
    ret_area[1] = (uint32_t)o->b.len;
    free_owned();
    return ret_area;
}

weir_output weir_forward(const weir_record *r) {
    return (weir_output){NULL, r->key, r->value, r->timestamp, r->header_count, r->headers};
}

weir_output weir_keyed(weir_bytes key, weir_bytes value) {
    return (weir_output){NULL, key, value, WEIR_INPUT_TIME, 0, NULL};
}

weir_output weir_value(weir_bytes value) { return weir_keyed(WEIR_NONE, value); }

/* ------------------------------------------------------------ text */

uint32_t weir_utf8_next(weir_bytes s, size_t *i) {
    const uint8_t *p = s.ptr + *i;
    size_t left = s.len - *i;
    uint8_t b = p[0];
    uint32_t c;
    size_t n;
    if (b < 0x80) {
        *i += 1;
        return b;
    } else if (b >= 0xc2 && b < 0xe0) {
        n = 2;
        c = b & 31;
    } else if (b >= 0xe0 && b < 0xf0) {
        n = 3;
        c = b & 15;
    } else if (b >= 0xf0 && b < 0xf5) {
        n = 4;
        c = b & 7;
    } else {
        *i += 1;
        return 0xfffd;
    }
    if (left < n) {
        *i += 1;
        return 0xfffd;
    }
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xc0) != 0x80) {
            *i += 1;
            return 0xfffd;
        }
        c = (c << 6) | (p[k] & 63);
    }
    if ((n == 3 && (c < 0x800 || (c >= 0xd800 && c < 0xe000))) || (n == 4 && (c < 0x10000 || c > 0x10ffff))) {
        *i += 1;
        return 0xfffd;
    }
    *i += n;
    return c;
}

/* The index of the first byte that is not valid UTF-8, or -1. */
static long utf8_error(weir_bytes s) {
    size_t i = 0;
    while (i < s.len) {
        size_t at = i;
        uint32_t c = weir_utf8_next(s, &i);
        if (c == 0xfffd && !(i - at == 3 && s.ptr[at] == 0xef)) return (long)at;
    }
    return -1;
}

bool weir_is_alnum(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
    return iswalnum((wint_t)c) != 0;
}

uint32_t weir_to_lower(uint32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    return (uint32_t)towlower((wint_t)c);
}

bool weir_parse_i64(weir_bytes s, int64_t *out) {
    if (s.ptr == NULL || s.len == 0) return false;
    size_t i = 0;
    bool neg = false;
    if (s.ptr[0] == '-' || s.ptr[0] == '+') {
        neg = s.ptr[0] == '-';
        i = 1;
    }
    if (i == s.len) return false;
    uint64_t x = 0;
    for (; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9') return false;
        uint64_t d = s.ptr[i] - '0';
        if (x > (UINT64_C(9223372036854775808) - d) / 10) return false;
        x = x * 10 + d;
    }
    if (!neg && x > INT64_MAX) return false;
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return true;
}

static weir_status text_of(weir_bytes b, const char *what, const char *missing, weir_bytes *text) {
    if (b.ptr == NULL) return weir_reject("%s", missing);
    long bad = utf8_error(b);
    if (bad >= 0) return weir_reject("the %s is not UTF-8: invalid byte at index %ld", what, bad);
    *text = b;
    return WEIR_OK;
}

weir_status weir_value_text(const weir_record *r, weir_bytes *text) {
    return text_of(r->value, "value", "the record has no value (a tombstone)", text);
}

weir_status weir_key_text(const weir_record *r, weir_bytes *text) {
    return text_of(r->key, "key", "the record has no key", text);
}

/* ------------------------------------------------------------ JSON */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    int depth;
} json_reader;

static void json_ws(json_reader *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static bool json_lit(json_reader *j, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return false;
    j->p += n;
    return true;
}

static bool json_digits(json_reader *j) {
    const uint8_t *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    return j->p > start;
}

static bool json_string(json_reader *j) {
    j->p++; /* the opening quote */
    while (j->p < j->end) {
        uint8_t c = *j->p;
        if (c == '"') {
            j->p++;
            return true;
        }
        if (c < 0x20) return false;
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end) return false;
            uint8_t e = *j->p++;
            if (e == 'u') {
                for (int k = 0; k < 4; k++) {
                    if (j->p >= j->end) return false;
                    uint8_t h = (uint8_t)(*j->p++ | 32);
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f'))) return false;
                }
            } else if (!strchr("\"\\/bfnrt", e) || e == 0) {
                return false;
            }
            continue;
        }
        if (c >= 0x80) {
            weir_bytes rest = {j->p, (size_t)(j->end - j->p)};
            size_t i = 0;
            uint32_t u = weir_utf8_next(rest, &i);
            if (u == 0xfffd && !(i == 3 && c == 0xef)) return false;
            j->p += i;
            continue;
        }
        j->p++;
    }
    return false;
}

static bool json_value(json_reader *j, weir_json *v);

static bool json_value_inner(json_reader *j, weir_json *v) {
    if (j->p >= j->end) return false;
    const uint8_t *start = j->p;
    uint8_t c = *j->p;
    if (c == '{' || c == '[') {
        if (++j->depth > 128) return false;
        uint8_t close = c == '{' ? '}' : ']';
        j->p++;
        json_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
        } else {
            for (;;) {
                weir_json item;
                if (c == '{') {
                    json_ws(j);
                    if (j->p >= j->end || *j->p != '"' || !json_string(j)) return false;
                    json_ws(j);
                    if (j->p >= j->end || *j->p != ':') return false;
                    j->p++;
                }
                if (!json_value(j, &item)) return false;
                if (j->p < j->end && *j->p == ',') {
                    j->p++;
                    continue;
                }
                if (j->p < j->end && *j->p == close) {
                    j->p++;
                    break;
                }
                return false;
            }
        }
        j->depth--;
        v->kind = c == '{' ? WEIR_JSON_OBJECT : WEIR_JSON_ARRAY;
    } else if (c == '"') {
        if (!json_string(j)) return false;
        v->kind = WEIR_JSON_STRING;
    } else if (c == 't' || c == 'f') {
        if (!json_lit(j, c == 't' ? "true" : "false")) return false;
        v->kind = WEIR_JSON_BOOL;
    } else if (c == 'n') {
        if (!json_lit(j, "null")) return false;
        v->kind = WEIR_JSON_NULL;
    } else {
        if (*j->p == '-') j->p++;
        if (j->p < j->end && *j->p == '0') j->p++;
        else if (!json_digits(j)) return false;
        if (j->p < j->end && *j->p == '.') {
            j->p++;
            if (!json_digits(j)) return false;
        }
        if (j->p < j->end && (*j->p | 32) == 'e') {
            j->p++;
            if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
            if (!json_digits(j)) return false;
        }
        v->kind = WEIR_JSON_NUMBER;
    }
    v->text = (weir_bytes){start, (size_t)(j->p - start)};
    return true;
}

static bool json_value(json_reader *j, weir_json *v) {
    json_ws(j);
    if (!json_value_inner(j, v)) return false;
    json_ws(j);
    return true;
}

bool weir_json_parse(weir_bytes doc, weir_json *value) {
    if (doc.ptr == NULL) return false;
    json_reader j = {doc.ptr, doc.ptr + doc.len, 0};
    return json_value(&j, value) && j.p == j.end;
}

static bool json_key_is(weir_bytes quoted, const char *name) {
    weir_json k = {WEIR_JSON_STRING, quoted};
    weir_buf b = {0};
    weir_json_string(k, &b);
    bool same = b.len == strlen(name) && memcmp(weir_buf_bytes(&b).ptr, name, b.len) == 0;
    weir_buf_free(&b);
    return same;
}

int weir_json_member(weir_json object, const char *name, weir_json *member) {
    if (object.kind != WEIR_JSON_OBJECT) return -1;
    json_reader j = {object.text.ptr + 1, object.text.ptr + object.text.len, 0};
    int found = 0;
    json_ws(&j);
    if (*j.p == '}') return 0;
    for (;;) {
        json_ws(&j);
        const uint8_t *k = j.p;
        json_string(&j);
        weir_bytes key = {k, (size_t)(j.p - k)};
        json_ws(&j);
        j.p++; /* ':' */
        weir_json v;
        json_value(&j, &v);
        if (json_key_is(key, name)) {
            if (found) return -1;
            found = 1;
            *member = v;
        }
        if (*j.p++ != ',') break;
    }
    return found;
}

static int hex(uint8_t c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

bool weir_json_string(weir_json v, weir_buf *out) {
    if (v.kind != WEIR_JSON_STRING) return false;
    const uint8_t *p = v.text.ptr + 1, *end = v.text.ptr + v.text.len - 1;
    while (p < end) {
        if (*p != '\\') {
            buf_byte(out, *p++);
            continue;
        }
        p++;
        uint8_t e = *p++;
        switch (e) {
        case 'b': buf_byte(out, '\b'); break;
        case 'f': buf_byte(out, '\f'); break;
        case 'n': buf_byte(out, '\n'); break;
        case 'r': buf_byte(out, '\r'); break;
        case 't': buf_byte(out, '\t'); break;
        case 'u': {
            uint32_t c = (uint32_t)(hex(p[0]) << 12 | hex(p[1]) << 8 | hex(p[2]) << 4 | hex(p[3]));
            p += 4;
            if (c >= 0xd800 && c < 0xdc00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t d = (uint32_t)(hex(p[2]) << 12 | hex(p[3]) << 8 | hex(p[4]) << 4 | hex(p[5]));
                if (d >= 0xdc00 && d < 0xe000) {
                    c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
                    p += 6;
                }
            }
            if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
            weir_buf_utf8(out, c);
            break;
        }
        default: buf_byte(out, e);
        }
    }
    return true;
}

/* ------------------------------------------------------------ state and timers */

static weir_status state_error(const char *store, const uint8_t *ret) {
    uint8_t kind = ret[4];
    uint32_t ptr, len;
    memcpy(&ptr, ret + 8, 4);
    memcpy(&len, ret + 12, 4);
    own((void *)(uintptr_t)ptr);
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
    own((void *)(uintptr_t)ptr);
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
    own((void *)raw);
    weir_entry *e = xmalloc(len * sizeof(weir_entry));
    own(e);
    for (uint32_t i = 0; i < len; i++) {
        own((void *)(uintptr_t)raw[4 * i]);
        own((void *)(uintptr_t)raw[4 * i + 2]);
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

/* ------------------------------------------------------------ the exports */

uint32_t *weir__map(uint8_t *batch, size_t n, weir_map_fn f) {
    begin_call();
    own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    out_start(&out, n + 64);
    for (uint32_t i = 0; i < count; i++) {
        weir_record rec;
        size_t h;
        headers_len = 0;
        rd_record(&r, &rec, &h);
        rec.headers = headers + h;
        out.index = i;
        out.timestamp = rec.timestamp;
        current_offset = rec.offset;
        size_t mark_len = out.b.len;
        uint32_t mark_count = out.count;
        if (f(&rec, &out) != WEIR_OK) {
            // Drop what this record emitted before it was rejected.
            out.b.len = mark_len;
            out.count = mark_count;
            rejected(&out, i);
        }
    }
    current_offset = -1;
    return finish(&out);
}

uint32_t *weir__on_timer(int64_t time, uint8_t *tag, size_t n, weir_timer_fn f) {
    begin_call();
    own(tag);
    weir_out out;
    out_start(&out, 64);
    out.timestamp = time;
    if (f != NULL && f(time, weir_bytes_of(tag, n), &out) != WEIR_OK) {
        weir_buf_free(&out.b);
        out_start(&out, 64);
        rejected(&out, 0);
    }
    return finish(&out);
}

static void result_value(weir_out *out, uint32_t index, weir_status st, weir_result *v) {
    if (st != WEIR_OK) {
        rejected(out, index);
    } else {
        entry(out, 3, index);
        wr_opt_bytes(&out->b, v->none ? WEIR_NONE : weir_buf_bytes(&v->bytes));
    }
    weir_buf_clear(&v->bytes);
    v->none = false;
}

uint32_t *weir__join(uint8_t *batch, size_t n, weir_join_fn f) {
    begin_call();
    own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    out_start(&out, n + 64);
    weir_result v = {0};
    for (uint32_t i = 0; i < count; i++) {
        weir_pair p;
        p.key = rd_opt_bytes(&r);
        p.timestamp = rd_i64(&r);
        p.left = rd_opt_bytes(&r);
        p.right = rd_opt_bytes(&r);
        result_value(&out, i, f(&p, &v), &v);
    }
    weir_buf_free(&v.bytes);
    return finish(&out);
}

uint32_t *weir__upgrade(uint32_t from, uint8_t *batch, size_t n, weir_upgrade_fn f) {
    begin_call();
    own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    out_start(&out, n + 64);
    weir_result v = {0};
    for (uint32_t i = 0; i < count; i++) {
        weir_state_entry e;
        e.store = rd_bytes(&r);
        e.key = rd_opt_bytes(&r);
        e.value = rd_bytes(&r);
        result_value(&out, i, f(from, &e, &v), &v);
    }
    weir_buf_free(&v.bytes);
    return finish(&out);
}

static void *decode_acc(const weir_aggregate_def *a, weir_bytes stored, void *acc) {
    if (stored.ptr == NULL) {
        memset(acc, 0, a->size);
        a->init(acc);
    } else if (stored.len != a->size) {
        fatal("a stored accumulator has the wrong size (did the accumulator's type change?)");
    } else {
        memcpy(acc, stored.ptr, a->size);
    }
    return acc;
}

uint32_t *weir__agg_add(uint8_t *batch, size_t n, const weir_aggregate_def *a) {
    begin_call();
    own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_record *records = xmalloc(count * sizeof(weir_record));
    own(records);
    size_t *first_header = xmalloc(count * sizeof(size_t));
    own(first_header);
    headers_len = 0;
    for (uint32_t i = 0; i < count; i++) rd_record(&r, &records[i], &first_header[i]);
    for (uint32_t i = 0; i < count; i++) records[i].headers = headers + first_header[i];
    uint32_t groups = rd_u32(&r);
    weir_bytes *stored = xmalloc(groups * sizeof(weir_bytes));
    own(stored);
    const uint8_t **members = xmalloc(groups * sizeof(uint8_t *));
    own(members);
    uint32_t *member_count = xmalloc(groups * sizeof(uint32_t));
    own(member_count);
    for (uint32_t g = 0; g < groups; g++) {
        stored[g] = rd_opt_bytes(&r);
        member_count[g] = rd_u32(&r);
        need(&r, (size_t)member_count[g] * 4);
        members[g] = r.p;
        r.p += (size_t)member_count[g] * 4;
    }
    // A record rejected in one group is left out of every group: rerun until
    // no new rejection appears (one pass when none is rejected).
    weir_buf *messages = xmalloc((count ? count : 1) * sizeof(weir_buf));
    own(messages);
    bool *is_rejected = xmalloc(count ? count : 1);
    own(is_rejected);
    memset(is_rejected, 0, count);
    memset(messages, 0, (count ? count : 1) * sizeof(weir_buf));
    uint8_t *accs = xmalloc(groups * a->size);
    own(accs);
    size_t rejections = 0;
    for (;;) {
        size_t before = rejections;
        for (uint32_t g = 0; g < groups; g++) {
            void *acc = decode_acc(a, stored[g], accs + g * a->size);
            for (uint32_t m = 0; m < member_count[g]; m++) {
                uint32_t k;
                memcpy(&k, members[g] + 4 * m, 4);
                if (k >= count) fatal("the host sent a group member out of range");
                if (is_rejected[k]) continue;
                if (a->add(acc, &records[k]) != WEIR_OK) {
                    is_rejected[k] = true;
                    rejections++;
                    weir_buf_add(&messages[k], weir_buf_bytes(&reject_message));
                    weir_buf_clear(&reject_message);
                }
            }
        }
        if (rejections == before) break;
    }
    weir_out out;
    out_start(&out, 64 + groups * (a->size + 16));
    for (uint32_t k = 0; k < count; k++) {
        if (!is_rejected[k]) continue;
        entry(&out, 1, k);
        wr_bytes(&out.b, weir_buf_bytes(&messages[k]));
        weir_buf_free(&messages[k]);
    }
    for (uint32_t g = 0; g < groups; g++) {
        entry(&out, 2, g);
        wr_bytes(&out.b, weir_bytes_of(accs + g * a->size, a->size));
    }
    return finish(&out);
}

uint8_t *weir__agg_merge(uint8_t *x, size_t xn, uint8_t *y, size_t yn, const weir_aggregate_def *a) {
    begin_call();
    own(x);
    own(y);
    uint8_t *acc = xmalloc(a->size);
    uint8_t *other = xmalloc(a->size);
    own(other);
    decode_acc(a, weir_bytes_of(x, xn), acc);
    decode_acc(a, weir_bytes_of(y, yn), other);
    a->merge(acc, other);
    free_owned();
    last_result = acc;
    static uint32_t merged[3];
    merged[0] = 0;
    merged[1] = (uint32_t)(uintptr_t)acc;
    merged[2] = (uint32_t)a->size;
    return (uint8_t *)merged;
}

uint32_t *weir__agg_present(uint8_t *batch, size_t n, const weir_aggregate_def *a) {
    begin_call();
    own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    out_start(&out, 64 * (count + 1));
    weir_result v = {0};
    void *acc = xmalloc(a->size);
    own(acc);
    for (uint32_t i = 0; i < count; i++) {
        weir_bytes key = rd_opt_bytes(&r);
        weir_window w;
        w.start = rd_i64(&r);
        w.end = rd_i64(&r);
        decode_acc(a, rd_bytes(&r), acc);
        weir_status st = WEIR_OK;
        if (a->present != NULL) {
            st = a->present(acc, key, (w.start != 0 || w.end != 0) ? &w : NULL, &v);
        } else {
            weir_buf_add(&v.bytes, weir_bytes_of(acc, a->size));
        }
        result_value(&out, i, st, &v);
    }
    weir_buf_free(&v.bytes);
    return finish(&out);
}
