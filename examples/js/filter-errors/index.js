// The log router: JSON log lines whose `level` is "ERROR" go to the output
// `high`, every other line to `low`. A value that is not a JSON object (with
// a string `level`, if it has one) is rejected, so it lands in the
// dead-letter output with the reason.
import { map, Output, reject } from "weir-guest";

function parse(r) {
  try {
    return r.json();
  } catch {
    return null;
  }
}

export const mapping = map((r) => {
  const line = parse(r);
  const level = line === null ? undefined : line.level;
  if (line === null || typeof line !== "object" || Array.isArray(line) ||
      (level !== undefined && level !== null && typeof level !== "string")) {
    reject('not a JSON log line: expected an object such as {"level":"ERROR",...}');
  }
  return Output.forward(r).to(level === "ERROR" ? "high" : "low");
});
