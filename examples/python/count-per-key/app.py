"""A per-key counter kept in the state store `counts` (world processor): each
record's count so far under its key is emitted as the value "key=N". The
pipeline declares the store; the host commits it with each batch."""

import weir_guest as weir
from weir_guest import state


@weir.processor
class CountPerKey:
    def process(self, r: weir.Record):
        key = "" if r.key is None else r.key_text()
        n = (state.get_json("counts", key) or 0) + 1
        state.put_json("counts", key, n)
        return weir.Output.keyed(r.key, f"{key}={n}")
