// {{name}}: a Weir joiner. The host keeps the join state and decides which
// records meet; this combines the two values.
import { join, text } from "weir-guest";

// Joins the two values as "left|right" (a missing side is empty).
//
// Change this: return null for a result without a value (a tombstone in a
// table join); throw to reject it.
export const joining = join((p) => `${p.left ? text(p.left) : ""}|${p.right ? text(p.right) : ""}`);
