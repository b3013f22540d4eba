"""The log router: JSON log lines whose `level` is "ERROR" go to the output
`high`, every other line to `low`. A value that is not a JSON object (with a
string `level`, if it has one) is rejected, so it lands in the dead-letter
output with the reason."""

import json

import weir_guest as weir


@weir.map
def route(r: weir.Record):
    try:
        line = json.loads(r.value or b"")
    except ValueError:
        line = None
    if not isinstance(line, dict) or not isinstance(line.get("level", ""), (str, type(None))):
        raise weir.Reject('not a JSON log line: expected an object such as {"level":"ERROR",...}')
    return weir.Output.forward(r).to("high" if line.get("level") == "ERROR" else "low")
