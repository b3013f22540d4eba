//! Written from the docs alone, as an outside author would: the average of
//! the values per key and window, kept as a JSON accumulator (sum and count)
//! and presented as `{"avg","count","key","start"}`. A value that is not a
//! number is rejected. The same function is in js/, go/ and c/; the
//! end-to-end tests (tests/e2e/outside_guests.rs) compare their outputs.

use weir_guest::{Aggregate, Error, Record, Window, reject};

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Acc {
    sum: f64,
    count: u64,
}

#[derive(serde::Serialize)]
struct Presented<'a> {
    avg: f64,
    count: u64,
    key: &'a str,
    start: Option<i64>,
}

struct Avg;

#[weir_guest::aggregate]
impl Aggregate for Avg {
    type Acc = Acc;

    fn init() -> Acc {
        Acc::default()
    }

    fn add(acc: &mut Acc, r: &Record) -> Result<(), Error> {
        let text = r.value_str()?;
        let Ok(v) = text.trim().parse::<f64>() else {
            reject!("not a number: {text}");
        };
        acc.sum += v;
        acc.count += 1;
        Ok(())
    }

    fn merge(a: Acc, b: Acc) -> Acc {
        Acc {
            sum: a.sum + b.sum,
            count: a.count + b.count,
        }
    }

    fn present(
        acc: &Acc,
        key: Option<&[u8]>,
        window: Option<Window>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let key = std::str::from_utf8(key.unwrap_or_default())?;
        weir_guest::info!("presenting {key}");
        let out = Presented {
            avg: acc.sum / acc.count as f64,
            count: acc.count,
            key,
            start: window.map(|w| w.start),
        };
        Ok(Some(weir_guest::serde_json::to_vec(&out)?))
    }
}
