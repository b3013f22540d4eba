/* Word count's first step: a line becomes one record per lower-cased word,
 * keyed by the word (the value is the word too), dropping "the". A word is a
 * maximal run of letters and digits. */
#include "weir.h"

static weir_buf word;

static void emit_word(weir_out *out) {
    weir_bytes w = weir_buf_bytes(&word);
    if (w.len > 0 && !weir_bytes_eq(w, "the")) weir_emit(out, weir_keyed(w, w));
    weir_buf_clear(&word);
}

static weir_status split(const weir_record *r, weir_out *out) {
    weir_bytes line;
    if (weir_value_text(r, &line) != WEIR_OK) return WEIR_REJECTED;
    for (size_t i = 0; i < line.len;) {
        uint32_t c = weir_utf8_next(line, &i);
        if (weir_is_alnum(c)) weir_buf_utf8(&word, weir_to_lower(c));
        else emit_word(out);
    }
    emit_word(out);
    return WEIR_OK;
}
WEIR_MAP(split)
