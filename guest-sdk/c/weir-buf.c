/* weir-guest for C: bytes, and the growable buffers functions build values
 * in, with the printf-like formatting that weir_reject and weir_log share
 * (the formats weir.h lists; no floating point). */
#include "weir-internal.h"

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

void weir_buf_add(weir_buf *b, weir_bytes bytes) { buf_add(b, bytes); }

void weir_buf_str(weir_buf *b, const char *s) { weir_buf_add(b, weir_str(s)); }

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
