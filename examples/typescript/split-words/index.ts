// Word count's first step, in TypeScript: a line becomes one record per
// lower-cased word, keyed by the word (the value is the word too), dropping
// "the". A word is a maximal run of letters and digits. The types come from
// guest-sdk/js/weir-guest.d.ts; build.mjs strips them.
import { map, Output, type Record } from "weir-guest";

const NOT_ALNUM = /[^\p{Alphabetic}\p{N}]+/u;

function words(line: string): string[] {
  return line
    .toLowerCase()
    .split(NOT_ALNUM)
    .filter((w) => w !== "" && w !== "the");
}

export const mapping = map((r: Record): Output[] => words(r.valueText()).map((w) => Output.keyed(w, w)));
