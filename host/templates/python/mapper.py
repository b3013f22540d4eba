"""{{name}}: a Weir mapper. Each record in gives zero or more outputs."""

import weir_guest as weir


@weir.map
def {{ident}}(r: weir.Record):
    """Upper-cases each value and keeps the key, headers and timestamp.

    Change this: return None (or []) to drop a record, a list to split one,
    weir.Output.forward(r).to("name") to route it to a named output, or raise
    (weir.Reject("why"), or any exception) to send it to the dead letters.
    """
    return weir.Output.forward(r).with_value(r.value_text().upper())
