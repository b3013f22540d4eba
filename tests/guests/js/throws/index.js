// A test guest whose code throws: "boom" throws a RangeError of its own, "null"
// makes the runtime throw a TypeError, a value starting with { or [ is parsed
// with r.json() (which rejects what is not JSON); anything else is forwarded.
import { map, Output } from "weir-guest";

export const mapping = map((r) => {
  const v = r.valueText();
  if (v === "boom") throw new RangeError(`boom at offset ${r.offset}`);
  if (v === "null") return Output.forward(r).withValue(null.value);
  if (v.startsWith("{") || v.startsWith("[")) return Output.json(r.json());
  return Output.forward(r);
});
