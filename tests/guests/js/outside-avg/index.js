// Written from the docs alone, as an outside author would (tests/guests/
// outside-avg in JavaScript): the average per key and window, presented as
// {avg, count, key, start}. It decodes the key with TextDecoder and logs with
// console.log, which QuickJS lacks and the SDK supplies.
import { aggregate, reject } from "weir-guest";

export const aggregation = aggregate({
  init: () => ({ sum: 0, count: 0 }),
  add(acc, r) {
    const text = r.valueText();
    const v = Number(text.trim());
    if (text.trim() === "" || !Number.isFinite(v)) reject(`not a number: ${text}`);
    return { sum: acc.sum + v, count: acc.count + 1 };
  },
  merge: (a, b) => ({ sum: a.sum + b.sum, count: a.count + b.count }),
  present(acc, key, window) {
    const k = new TextDecoder().decode(key);
    console.log("presenting", k);
    return { avg: acc.sum / acc.count, count: acc.count, key: k, start: window ? window.start : null };
  },
});
