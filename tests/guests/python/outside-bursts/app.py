"""Written from the docs alone, as an outside author would (tests/guests/
outside-bursts in Python): per key, a count in the store `counts` and an
event-time timer 10 s after the key's first record, which emits the count.
It imports `timers` as the SDK's docstring says, and returns a number (not
an Output) for the value "bad", which rejects the record with a TypeError
that says what a function may return."""

import weir_guest as weir
from weir_guest import state, timers


@weir.processor
class Bursts:
    def process(self, r: weir.Record):
        key = r.key_text()
        if r.value == b"bad":
            return 42
        n = state.get_json("counts", key) or 0
        if n == 0:
            weir.log.info(f"new burst for {key} at {r.timestamp}")
            timers.at_event_time(r.timestamp + 10000, key)
        state.put_json("counts", key, n + 1)
        return None

    def on_timer(self, time, tag):
        n = state.get_json("counts", tag) or 0
        state.delete("counts", tag)
        weir.log.warn(f"burst of {tag.decode()} ended at {time}: {n}")
        return weir.Output.keyed(tag, str(n))
