"""{{name}}: a Weir joiner. The host keeps the join state and decides which
records meet; this combines the two values."""

import weir_guest as weir


@weir.join
def {{ident}}(p: weir.Pair):
    """Joins the two values as "left|right" (a missing side is empty).

    Change this: return None for a result without a value (a tombstone in a
    table join); raise to reject it.
    """
    return (p.left or b"") + b"|" + (p.right or b"")
