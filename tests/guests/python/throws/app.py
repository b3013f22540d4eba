"""A test guest whose code raises: "boom" raises a ValueError of its own,
"zero" makes the runtime raise ZeroDivisionError, a value starting with { or [
is parsed with r.json() (which rejects what is not JSON); anything else is
forwarded."""

import weir_guest as weir


@weir.map
def throws(r: weir.Record):
    v = r.value_text()
    if v == "boom":
        raise ValueError(f"boom at offset {r.offset}")
    if v == "zero":
        return weir.Output.forward(r).with_value(str(1 // 0))
    if v.startswith(("{", "[")):
        return weir.Output.json(r.json())
    return weir.Output.forward(r)
