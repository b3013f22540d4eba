//! A guest that misbehaves on purpose, for the host's tests. By value: `panic` panics, `loop` never
//! returns, `oom` allocates until it runs out of memory, `reject` is rejected (`reject-str` and
//! `reject-string`: with `Error::from` a `&str` and a `String`), `log` writes a log line; any other
//! value is echoed with the `suffix` setting appended.

use weir_guest::{Error, Output, Record, reject};

#[weir_guest::map]
fn faulty(r: Record) -> Result<Output, Error> {
    match r.value_str()? {
        "panic" => panic!("boom at offset {}", r.offset),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "reject" => reject!("rejected on purpose at offset {}", r.offset),
        "reject-str" => Err(Error::from("rejected with a &str")),
        "reject-string" => Err(Error::from(format!(
            "rejected with a String at offset {}",
            r.offset
        ))),
        "log" => {
            weir_guest::info!("hello from offset {}", r.offset);
            Ok(Output::forward(&r))
        }
        v => {
            let suffix = weir_guest::config().get("suffix").unwrap_or("");
            Ok(Output::forward(&r).with_value(format!("{v}{suffix}")))
        }
    }
}
