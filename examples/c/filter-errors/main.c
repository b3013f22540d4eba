/* The log router: JSON log lines whose `level` is "ERROR" go to the output
 * `high`, every other line to `low`. A value that is not a JSON object (with
 * a string `level`, if it has one) is rejected, so it lands in the
 * dead-letter output with the reason. */
#include "weir.h"

static weir_status route(const weir_record *r, weir_out *out) {
    weir_json line, level;
    int has_level = -1;
    if (weir_json_parse(r->value, &line)) has_level = weir_json_member(line, "level", &level);
    if (has_level < 0 || (has_level && level.kind != WEIR_JSON_STRING && level.kind != WEIR_JSON_NULL)) {
        return weir_reject("not a JSON log line: expected an object such as {\"level\":\"ERROR\",...}");
    }
    bool error = false;
    if (has_level && level.kind == WEIR_JSON_STRING) {
        weir_buf text = {0};
        weir_json_string(level, &text);
        error = weir_bytes_eq(weir_buf_bytes(&text), "ERROR");
        weir_buf_free(&text);
    }
    weir_emit(out, weir_to(weir_forward(r), error ? "high" : "low"));
    return WEIR_OK;
}
WEIR_MAP(route)
