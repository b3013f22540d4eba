//! Exports `weir:functions/mapping` with `init` only: the host must refuse it
//! and name the missing `process`.

wit_bindgen::generate!({ path: "wit", world: "half-mapper" });

struct Half;

impl exports::weir::functions::mapping::Guest for Half {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

export!(Half);
