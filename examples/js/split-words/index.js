// Word count's first step: a line becomes one record per lower-cased word,
// keyed by the word (the value is the word too), dropping "the". A word is a
// maximal run of letters and digits.
import { map, Output } from "weir-guest";

const NOT_ALNUM = /[^\p{Alphabetic}\p{N}]+/u;

export const mapping = map((r) =>
  r
    .valueText()
    .toLowerCase()
    .split(NOT_ALNUM)
    .filter((w) => w !== "" && w !== "the")
    .map((w) => Output.keyed(w, w)),
);
