// {{name}}: a Weir aggregator. The host keeps one accumulator per key (and
// window); this says how to start, add to and merge one.
import { aggregate, reject } from "weir-guest";

// Sums the values (numbers) per key.
//
// Change this: an accumulator is any JSON value; add returns the new one
// (throwing rejects the record); merge combines two; an optional
// present(acc, key, window) says what is emitted (by default the accumulator).
export const aggregation = aggregate({
  init: () => 0,
  add(sum, r) {
    const n = Number(r.valueText());
    if (!Number.isFinite(n)) reject(`not a number: ${r.valueText()}`);
    return sum + n;
  },
  merge: (a, b) => a + b,
});
