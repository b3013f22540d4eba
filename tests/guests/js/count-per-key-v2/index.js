// examples/js/count-per-key, second version: keeps {"seen": N} in the store
// `counts` instead of a plain number (state format 1), and upgrades the
// numbers the first version stored (format 0).
import { processor, Output, upgradeStores } from "weir-guest";
import { state } from "weir-guest/state";

export const processing = processor({
  process(r) {
    const key = r.key === null ? "" : r.keyText();
    const seen = (state.getJson("counts", key) ?? { seen: 0 }).seen + 1;
    state.putJson("counts", key, { seen });
    return Output.keyed(r.key, `${key}=${seen}`);
  },
});

export const upgrading = upgradeStores(1, (from, entry) => {
  if (from !== 0) throw new Error(`unknown state format ${from}`);
  return { seen: entry.json() };
});
