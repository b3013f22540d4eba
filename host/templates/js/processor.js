// {{name}}: a Weir processor, with state stores and timers.
import { processor, Output } from "weir-guest";
import { state } from "weir-guest/state";

// Counts records per key in the state store `counts` (declare it in the
// pipeline file) and emits "key=N".
//
// Change this: process returns outputs like a map function; add
// onTimer(time, tag) to act on timers set with timers.atEventTime(...).
export const processing = processor({
  process(r) {
    const key = r.key === null ? "" : r.keyText();
    const n = (state.getJson("counts", key) ?? 0) + 1;
    state.putJson("counts", key, n);
    return Output.keyed(r.key, `${key}=${n}`);
  },
});
