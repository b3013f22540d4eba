// tests/guests/count-v3 in JavaScript: counts records per key, kept as
// {"count": N} (state format 1), and upgrades the plain numbers that
// examples/count stored (format 0).
import { aggregate, upgradeAccumulators } from "weir-guest";

export const aggregation = aggregate({
  init: () => ({ count: 0 }),
  add: (acc) => ({ count: acc.count + 1 }),
  merge: (a, b) => ({ count: a.count + b.count }),
});

export const upgrading = upgradeAccumulators(1, (from, entry) => {
  if (from !== 0) throw new Error(`unknown state format ${from}`);
  return { count: entry.json() };
});
