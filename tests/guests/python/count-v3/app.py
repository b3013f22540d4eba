"""tests/guests/count-v3 in Python: counts records per key, kept as
{"count": N} (state format 1), and upgrades the plain numbers that
examples/count stored (format 0)."""

import weir_guest as weir


@weir.aggregate
class CountV3:
    state_format = 1

    def init(self):
        return {"count": 0}

    def add(self, acc, r: weir.Record):
        return {"count": acc["count"] + 1}

    def merge(self, a, b):
        return {"count": a["count"] + b["count"]}

    def upgrade(self, from_format: int, entry: weir.StateEntry):
        if from_format != 0:
            raise ValueError(f"unknown state format {from_format}")
        return {"count": entry.json()}
