/* Joins two JSON values (world joiner), as examples/merge-json does in Rust:
 * the left one must be a JSON object (or nothing, in an outer join: then an
 * empty one); the right one (or null when nothing matched; a JSON string
 * when it is not JSON) goes into it under the field named by the `field`
 * setting (default "right"). Unlike the Rust example, the field is added
 * after the left object's members (which keep their order), and a left
 * object that has the field already is rejected. */
#include <string.h>

#include "weir.h"

/* Appends `s` as a JSON string; bytes that are not UTF-8 become U+FFFD. */
static void json_string(weir_buf *b, weir_bytes s) {
    weir_buf_str(b, "\"");
    size_t i = 0;
    while (i < s.len) {
        uint32_t c = weir_utf8_next(s, &i);
        if (c == '"' || c == '\\') {
            weir_buf_fmt(b, "\\%c", (int)c);
        } else if (c < 0x20) {
            const char *hex = "0123456789abcdef";
            weir_buf_fmt(b, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
        } else {
            weir_buf_utf8(b, c);
        }
    }
    weir_buf_str(b, "\"");
}

static bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static weir_status merge(const weir_pair *p, weir_result *value) {
    const char *field = weir_config("field");
    if (field == NULL) field = "right";
    weir_json left = {WEIR_JSON_OBJECT, {(const uint8_t *)"{}", 2}};
    if (p->left.ptr != NULL && (!weir_json_parse(p->left, &left) || left.kind != WEIR_JSON_OBJECT)) {
        return weir_reject("the left side is not a JSON object");
    }
    weir_json old;
    if (weir_json_member(left, field, &old) != 0) {
        return weir_reject("the left side has a field %s already", field);
    }
    /* The object without its closing brace and the blanks before it. */
    size_t end = left.text.len - 1;
    while (end > 1 && is_space(left.text.ptr[end - 1])) end--;
    weir_buf_add(&value->bytes, (weir_bytes){left.text.ptr, end});
    if (end > 1) weir_buf_str(&value->bytes, ",");
    json_string(&value->bytes, (weir_bytes){(const uint8_t *)field, strlen(field)});
    weir_buf_str(&value->bytes, ":");
    weir_json right;
    if (p->right.ptr == NULL) {
        weir_buf_str(&value->bytes, "null");
    } else if (weir_json_parse(p->right, &right)) {
        weir_buf_add(&value->bytes, right.text);
    } else {
        json_string(&value->bytes, p->right);
    }
    weir_buf_str(&value->bytes, "}");
    return WEIR_OK;
}

WEIR_JOIN(merge)
