// {{name}}: a Weir mapper. Each record in gives zero or more outputs.
import { map, Output } from "weir-guest";

// Upper-cases each value and keeps the key, headers and timestamp.
//
// Change this: return null (or []) to drop a record, an array to split one,
// Output.forward(r).to("name") to route it to a named output, or throw (or
// call reject("why")) to send it to the dead letters with that message.
export const mapping = map((r) => Output.forward(r).withValue(r.valueText().toUpperCase()));
