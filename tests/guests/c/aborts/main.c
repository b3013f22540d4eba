/* A test guest that calls abort() for the value "abort"; anything else is
 * forwarded. */
#include <stdlib.h>

#include "weir.h"

static weir_status forward(const weir_record *r, weir_out *out) {
    if (weir_bytes_eq(r->value, "abort")) abort();
    weir_emit(out, weir_forward(r));
    return WEIR_OK;
}
WEIR_MAP(forward)
