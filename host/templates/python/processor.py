"""{{name}}: a Weir processor, with state stores and timers."""

import weir_guest as weir
from weir_guest import state


@weir.processor
class CountPerKey:
    """Counts records per key in the state store `counts` (declare it in the
    pipeline file) and emits "key=N".

    Change this: process returns outputs like a map function; add
    on_timer(self, time, tag) to act on timers set with
    timers.at_event_time(time, tag) (`from weir_guest import state, timers`).
    """

    def process(self, r: weir.Record):
        key = "" if r.key is None else r.key_text()
        n = (state.get_json("counts", key) or 0) + 1
        state.put_json("counts", key, n)
        return weir.Output.keyed(r.key, f"{key}={n}")
