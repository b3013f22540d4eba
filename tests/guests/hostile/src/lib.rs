//! A mapper that attacks the host, written against the raw WIT (the SDK's
//! macros and panic hook are not used; only its batch codec). By value:
//!
//! - `sleep`: sleeps 30 s, then forwards the record; `sleep-hour`: 3600 s.
//! - `sleep-loop`: sleeps 1 s at a time, forever.
//! - `log-flood`: writes 1,000,000 log lines, then forwards the record.
//! - `log-long`: writes one log line of 10 MiB, then forwards the record.
//! - `fake-panic-loop`, `fake-panic-trap`, `fake-panic-oom`: print a made-up
//!   "panicked at" message to stderr, then loop forever, execute
//!   `unreachable`, or allocate until the memory limit.
//! - `panic`: a real panic, with Rust's default hook (it prints to stderr).
//! - `stack`: recursion with 64 KiB frames, past the 1 MiB stack.
//!
//! Any other value is forwarded. The setting `init` makes `init` misbehave:
//! `sleep-hour` sleeps 3600 s first, `sleep-loop` sleeps forever.

use std::time::Duration;

use weir_guest::Output;
use weir_guest::codec::{Reader, Writer};

wit_bindgen::generate!({ path: "../../../wit", world: "mapper" });

use weir::functions::log::{Level, write};

struct Hostile;

impl exports::weir::functions::mapping::Guest for Hostile {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        match config
            .iter()
            .find(|(k, _)| k == "init")
            .map(|(_, v)| v.as_str())
        {
            Some("sleep-hour") => std::thread::sleep(Duration::from_secs(3600)),
            Some("sleep-loop") => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            _ => {}
        }
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Vec<u8> {
        let mut reader = Reader::new(&batch);
        let count = reader.u32();
        let mut out = Writer::with_capacity(batch.len() + 64);
        for index in 0..count {
            let r = reader.record();
            attack(r.value.unwrap_or_default());
            out.output(index, &Output::forward(&r), r.timestamp);
        }
        out.finish()
    }
}

fn attack(value: &[u8]) {
    match value {
        b"sleep" => std::thread::sleep(Duration::from_secs(30)),
        b"sleep-hour" => std::thread::sleep(Duration::from_secs(3600)),
        b"sleep-loop" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        b"log-flood" => {
            for i in 0..1_000_000 {
                write(Level::Info, &format!("line {i}"));
            }
        }
        b"log-long" => write(Level::Info, &"x".repeat(10 << 20)),
        b"fake-panic-loop" | b"fake-panic-trap" | b"fake-panic-oom" => {
            eprintln!("panicked at src/evil.rs:1:1:\nI choose my own reason");
            match value {
                b"fake-panic-loop" => spin(),
                b"fake-panic-trap" => unreachable_instruction(),
                _ => hoard(),
            }
        }
        b"panic" => panic!("a real panic"),
        b"stack" => {
            std::hint::black_box(deep(std::hint::black_box(1000)));
        }
        _ => {}
    }
}

/// Executes Wasm's `unreachable` (natively, for `cargo clippy`: aborts).
fn unreachable_instruction() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[inline(never)]
fn deep(n: u64) -> u64 {
    let frame = std::hint::black_box([n as u8; 64 * 1024]);
    if n == 0 {
        return 0;
    }
    deep(n - 1) + u64::from(frame[7])
}

export!(Hostile);
