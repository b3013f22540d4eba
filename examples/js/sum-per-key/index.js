// A sum per key (world aggregator): the value of each record is a number; the
// host keeps one sum per key and window (tumbling windows come from the
// pipeline file) and emits it when the window closes.
import { aggregate, reject } from "weir-guest";

export const aggregation = aggregate({
  init: () => 0,
  add(sum, r) {
    const n = Number(r.valueText());
    if (!Number.isFinite(n)) reject(`not a number: ${r.valueText()}`);
    return sum + n;
  },
  merge: (a, b) => a + b,
});
