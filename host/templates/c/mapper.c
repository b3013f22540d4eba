/* {{name}}: a Weir mapper. Each record in gives zero or more outputs. */
#include "weir.h"

/* Upper-cases each value and keeps the key, headers and timestamp.
 *
 * Change this: emit nothing to drop a record, several outputs to split one,
 * weir_to(weir_forward(r), "name") to route it to a named output, or return
 * weir_reject("why") to send it to the dead letters with that message. */
static weir_status {{ident}}(const weir_record *r, weir_out *out) {
    weir_bytes text;
    if (weir_value_text(r, &text) != WEIR_OK) return WEIR_REJECTED;
    weir_buf loud = {0};
    weir_buf_add(&loud, text);
    for (size_t i = 0; i < loud.len; i++) {
        if (loud.ptr[i] >= 'a' && loud.ptr[i] <= 'z') loud.ptr[i] -= 32;
    }
    weir_emit(out, weir_with_value(weir_forward(r), weir_buf_bytes(&loud)));
    weir_buf_free(&loud);
    return WEIR_OK;
}
WEIR_MAP({{ident}})
