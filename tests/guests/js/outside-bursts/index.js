// Written from the docs alone, as an outside author would (tests/guests/
// outside-bursts in JavaScript): per key, a count in the store `counts` and
// an event-time timer 10 s after the key's first record, which emits the
// count. It logs with console.info and console.warn, and throws a plain
// object for the value "bad" (the dead letter's reason is its JSON).
import { processor, Output, text } from "weir-guest";
import { state, timers } from "weir-guest/state";

export const processing = processor({
  process(r) {
    const key = r.keyText();
    if (r.valueText() === "bad") throw { reason: "bad value", offset: r.offset };
    const n = state.getJson("counts", key) ?? 0;
    if (n === 0) {
      console.info(`new burst for ${key} at ${r.timestamp}`);
      timers.atEventTime(r.timestamp + 10000, key);
    }
    state.putJson("counts", key, n + 1);
    return null;
  },
  onTimer(time, tag) {
    const n = state.getJson("counts", tag) ?? 0;
    state.delete("counts", tag);
    console.warn(`burst of ${text(tag)} ended at ${time}: ${n}`);
    return Output.keyed(tag, String(n));
  },
});
