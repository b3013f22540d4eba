/* {{name}}: a Weir joiner. The host keeps the join state and decides which
 * records meet; this combines the two values. */
#include "weir.h"

/* Joins the two values as "left|right" (a missing side is empty).
 *
 * Change this: set value->none for a result without a value (a tombstone in
 * a table join); return weir_reject("why") to reject it. */
static weir_status {{ident}}(const weir_pair *p, weir_result *value) {
    weir_buf_add(&value->bytes, p->left);
    weir_buf_str(&value->bytes, "|");
    weir_buf_add(&value->bytes, p->right);
    return WEIR_OK;
}
WEIR_JOIN({{ident}})
