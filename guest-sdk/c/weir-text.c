/* weir-guest for C: UTF-8 text (decoding and checking it; letters, digits
 * and lower case as the C library's wide-character functions know them),
 * integers, and a JSON reader whose values point into the document instead
 * of being copied into a tree. */
#include "weir-internal.h"

#include <wctype.h>

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
