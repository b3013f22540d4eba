"""{{name}}: a Weir aggregator. The host keeps one accumulator per key (and
window); this says how to start, add to and merge one."""

import weir_guest as weir


@weir.aggregate
class Sum:
    """Sums the values (numbers) per key.

    Change this: an accumulator is any JSON value; add returns the new one
    (raising rejects the record); merge combines two; an optional
    present(self, acc, key, window) says what is emitted.
    """

    def init(self):
        return 0

    def add(self, total, r: weir.Record):
        return total + float(r.value_text())

    def merge(self, a, b):
        return a + b
