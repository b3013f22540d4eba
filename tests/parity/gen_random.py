"""Writes the inputs of the random-* parity scenarios (deterministic: run it
again and nothing changes): random-aggregates/events.jsonl (300 records),
random-joins/{left,right}.jsonl (200 each) and
random-fk-join/{left,right}.jsonl (200 each: orders naming users u0-u4,
users keyed by them). Keys a-f, about 5% without
a key and 5% without a value (null), about 20% with a header, event times
moving forward by up to 700 ms and now and then up to 8 s back.

    python3 tests/parity/gen_random.py && bash tests/parity/regen.sh --update
"""

import json
import os
import random


def records(seed, n, value, keys="abcdef", step=700, back=8000, label=None):
    """`n` records (JSON lines) drawn from `seed`: keys from `keys`, event
    times moving forward by up to `step` ms and now and then up to `back`
    ms back, headers `h` = `LABEL-I` (`label` defaults to `seed`). `seed`
    may be a `random.Random` to draw from. Also used by fuzz.sh."""
    rnd = seed if isinstance(seed, random.Random) else random.Random(seed)
    t = 0
    out = []
    for i in range(n):
        t += rnd.randint(0, step)
        ts = max(0, t - rnd.choice([0, 0, 0, rnd.randint(0, back)]))
        rec = {}
        if rnd.random() >= 0.05:
            rec["key"] = rnd.choice(list(keys))
        rec["value"] = None if rnd.random() < 0.05 else value(i)
        if rnd.random() < 0.2:
            rec["headers"] = {"h": f"{seed if label is None else label}-{i}"}
        rec["timestamp"] = ts
        out.append(json.dumps(rec))
    return out


def joins_left(i):
    """A value of random-joins' left side: `{"l": I}`, and every seventh
    `"drop": true` too (the `-none` variants' joiner gives no value for
    it). Also used by fuzz.sh."""
    return {"l": i, "drop": True} if i % 7 == 3 else {"l": i}


def write(path, lines):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), path), "w") as f:
        f.write("\n".join(lines) + "\n")


def orders(seed, users, n):
    """Values of the left table of a foreign-key join: `{"n": I}` naming a
    user from `users` under "user" (85%), null there (8%), or not at all.
    Also used by fuzz.sh."""
    rnd = seed if isinstance(seed, random.Random) else random.Random(seed)

    def value(i):
        v = {"n": i}
        pick = rnd.random()
        if pick < 0.85:
            v["user"] = rnd.choice(users)
        elif pick < 0.93:
            v["user"] = None
        return v

    return value


if __name__ == "__main__":
    write("random-aggregates/events.jsonl", records(1, 300, str))
    write("random-joins/left.jsonl", records(2, 200, joins_left))
    write("random-joins/right.jsonl", records(3, 200, lambda i: i))
    users = [f"u{i}" for i in range(5)]
    write("random-fk-join/left.jsonl", records(4, 200, orders(5, users, 200)))
    write("random-fk-join/right.jsonl", records(6, 200, lambda i: {"name": i}, users))
