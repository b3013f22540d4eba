#!/usr/bin/env python3
"""Writes N JSON-lines records of short English-like lines (default 1,000,000)
to stdout, the same every time: the input of the split-words benchmark."""
import json
import random
import sys

WORDS = ("the quick brown fox jumps over lazy dog and then runs into forest where "
         "THE Owls hoot at night while river flows 42 times 7 stones").split()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = random.Random(7)
    out = sys.stdout
    for i in range(n):
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        out.write(json.dumps({"key": str(i), "value": line + ".", "timestamp": i}) + "\n")


if __name__ == "__main__":
    main()
