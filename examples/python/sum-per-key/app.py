"""A sum per key (world aggregator): the value of each record is a number;
the host keeps one sum per key and window (tumbling windows come from the
pipeline file) and emits it when the window closes."""

import weir_guest as weir


@weir.aggregate
class SumPerKey:
    def init(self):
        return 0

    def add(self, total, r: weir.Record):
        text = r.value_text()
        try:
            return total + (int(text) if text.strip().lstrip("-").isdigit() else float(text))
        except ValueError:
            raise weir.Reject(f"not a number: {text}") from None

    def merge(self, a, b):
        return a + b
