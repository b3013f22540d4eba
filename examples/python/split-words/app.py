"""Word count's first step: a line becomes one record per lower-cased word,
keyed by the word (the value is the word too), dropping "the". A word is a
maximal run of letters and digits."""

import weir_guest as weir


@weir.map
def split(r: weir.Record):
    words = "".join(c if c.isalnum() else " " for c in r.value_text().lower()).split()
    return [weir.Output.keyed(w, w) for w in words if w != "the"]
