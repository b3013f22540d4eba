//! A mapper that exports `upgrading` too: the host refuses it at load, since
//! a mapper keeps no state to upgrade.

weir_guest::__private::wit_bindgen::generate!({
    path: "wit",
    world: "weir:test-guests/upgrading-mapper",
    runtime_path: "weir_guest::__private::wit_bindgen::rt",
    generate_all,
});

struct Component;

impl exports::weir::functions::mapping::Guest for Component {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn process(_batch: Vec<u8>) -> Vec<u8> {
        0u32.to_le_bytes().to_vec()
    }
}

impl exports::weir::functions::upgrading::Guest for Component {
    fn state_format() -> u32 {
        1
    }

    fn upgrade(_from_format: u32, _batch: Vec<u8>) -> Vec<u8> {
        0u32.to_le_bytes().to_vec()
    }
}

export!(Component);
