// A per-key counter kept in the state store `counts` (world processor): each
// record's count so far under its key is emitted as the value "key=N".
// The pipeline declares the store; the host commits it with each batch.
import { processor, Output } from "weir-guest";
import { state } from "weir-guest/state";

export const processing = processor({
  process(r) {
    const key = r.key === null ? "" : r.keyText();
    const n = (state.getJson("counts", key) ?? 0) + 1;
    state.putJson("counts", key, n);
    return Output.keyed(r.key, `${key}=${n}`);
  },
});
