//! Stock statistics (the seed's windowed aggregation): per ticker and
//! window, the minimum ask, the number of trades and the average ask. A
//! trade is a JSON object with a numeric `ask`; anything else is rejected.

use serde::{Deserialize, Serialize};
use weir_guest::{Aggregate, Error, Record, Window, reject};

#[derive(Serialize, Deserialize, Default)]
struct Stats {
    min_ask: Option<f64>,
    count: u64,
    sum_ask: f64,
}

#[derive(Deserialize)]
struct Trade {
    ask: f64,
}

struct StockStats;

#[weir_guest::aggregate]
impl Aggregate for StockStats {
    type Acc = Stats;

    fn init() -> Stats {
        Stats::default()
    }

    fn add(acc: &mut Stats, r: &Record) -> Result<(), Error> {
        let Ok(trade) = r.json::<Trade>() else {
            reject!("not a trade: expected a JSON object with a numeric \"ask\"");
        };
        acc.min_ask = Some(acc.min_ask.map_or(trade.ask, |m| m.min(trade.ask)));
        acc.count += 1;
        acc.sum_ask += trade.ask;
        Ok(())
    }

    fn merge(a: Stats, b: Stats) -> Stats {
        Stats {
            min_ask: match (a.min_ask, b.min_ask) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
            count: a.count + b.count,
            sum_ask: a.sum_ask + b.sum_ask,
        }
    }

    fn present(
        acc: &Stats,
        _key: Option<&[u8]>,
        _w: Option<Window>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let avg = if acc.count == 0 {
            0.0
        } else {
            acc.sum_ask / acc.count as f64
        };
        // Two decimals, as prices are shown.
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Ok(Some(weir_guest::serde_json::to_vec(
            &weir_guest::serde_json::json!({
                "min_ask": acc.min_ask.map(round),
                "count": acc.count,
                "avg_ask": round(avg),
            }),
        )?))
    }
}
