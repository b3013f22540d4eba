//! Global table joins (`with_kind = "global"`, Kafka Streams' `GlobalKTable`)
//! beyond tests/parity/global-table: a table with another partition count
//! than the stream, updated and deleted while a pipeline runs, and a
//! restart that goes on from where every task was in every partition of
//! the table, on the embedded log and, from its changelogs, on Kafka.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::kafka_pipelines::{Place, suffix};
use crate::live::{Data, until};
use crate::util::guest;

fn pipeline(dir: &Path, s: &str) -> PathBuf {
    let file = dir.join(format!("enrich-{s}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"name = "enrich-{s}"
input = "orders-{s}"
output = "out-{s}"

[[steps]]
name = "join"
kind = "join"
module = {:?}
with = "products-{s}"
with_kind = "global"
join = "left"
lookup = "/product"
"#,
            guest("merge_json")
        ),
    )
    .unwrap();
    file
}

fn order(key: &str, product: &str, ts: i64) -> String {
    json!({"key": key, "value": {"product": product}, "timestamp": ts}).to_string()
}

fn product(key: &str, name: Option<&str>, ts: i64) -> String {
    let value = name.map(|n| json!({"name": n}));
    json!({"key": key, "value": value, "timestamp": ts}).to_string()
}

/// The joined records of a consume's output, as "order product name" (or
/// "-" for no row), by order key.
fn joined(consumed: &str) -> Vec<String> {
    let mut out: Vec<String> = consumed
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let name = v["value"]["right"]["name"].as_str().unwrap_or("-");
            format!(
                "{} {} {name}",
                v["key"].as_str().unwrap(),
                v["value"]["product"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

/// Products p1..p3 on 3 partitions, stamped after every order: a global
/// table is read ahead of the stream, whatever its times.
fn first_products() -> Vec<String> {
    vec![
        product("p1", Some("pen"), 50_000),
        product("p2", Some("ink"), 50_000),
        product("p3", Some("pad"), 50_000),
    ]
}

#[test]
fn a_global_table_of_another_partition_count_is_updated_while_it_runs_and_restarts_where_it_was() {
    let d = Data::new();
    let s = "live";
    d.ok(&["topic", "create", "orders-live", "--partitions", "2"]);
    d.ok(&["topic", "create", "products-live", "--partitions", "3"]);
    d.produce("products-live", &first_products());
    let file = pipeline(d.path.parent().unwrap(), s);
    let owner = d.start(&file);
    d.produce(
        "orders-live",
        &[
            order("o1", "p1", 1_000),
            order("o2", "p2", 2_000),
            order("o3", "p9", 3_000),
        ],
    );
    let out = || d.ok(&["consume", "out-live", "--from-beginning"]);
    until("three joined orders", || out().lines().count() == 3);
    // The table changes while the pipeline runs: every task sees it.
    d.produce("products-live", &[product("p1", Some("pen2"), 60_000)]);
    d.produce(
        "orders-live",
        &[order("o4", "p1", 4_000), order("o5", "p1", 4_500)],
    );
    until("five joined orders", || out().lines().count() == 5);
    owner.interrupt();
    // Stopped: a deletion and two orders; the next run reads on from where
    // every task was in the table and the stream, and repeats nothing.
    d.produce("products-live", &[product("p2", None, 70_000)]);
    d.produce(
        "orders-live",
        &[order("o6", "p3", 5_000), order("o7", "p2", 6_000)],
    );
    d.ok(&[
        "run",
        "--until-caught-up",
        "--quiet",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        joined(&out()),
        [
            "o1 p1 pen",
            "o2 p2 ink",
            "o3 p9 -",
            "o4 p1 pen2",
            "o5 p1 pen2",
            "o6 p3 pad",
            "o7 p2 -"
        ]
    );
    // Every task keeps the whole table; `weir state` shows each row once.
    assert_eq!(
        d.ok(&["state", "get", "enrich-live", "join", "p1"]),
        "{\"table\":\"right\",\"key\":\"p1\",\"value\":{\"name\":\"pen2\"}}\n"
    );
    assert_eq!(
        d.ok(&["state", "scan", "enrich-live", "join"])
            .lines()
            .count(),
        2
    );
    // No repartition topic: a global table join needs none.
    let topics = d.ok(&["topic", "list"]);
    assert!(!topics.contains("repartition"), "{topics}");
}

#[test]
fn on_kafka_a_global_table_comes_back_from_the_changelog_with_where_each_task_was() {
    let s = suffix();
    let place = Place::kafka();
    place.topic(&format!("orders-{s}"), 2);
    place.topic(&format!("products-{s}"), 3);
    place.produce(&format!("products-{s}"), &first_products());
    place.produce(
        &format!("orders-{s}"),
        &[
            order("o1", "p1", 1_000),
            order("o2", "p2", 2_000),
            order("o3", "p9", 3_000),
        ],
    );
    let file = pipeline(place.dir.path(), &s);
    place.run_pipeline(&file);
    // A second run on a fresh state directory: its tasks restore the table
    // and their positions in it from the changelog, then read the update.
    place.produce(
        &format!("products-{s}"),
        &[
            product("p1", Some("pen2"), 60_000),
            product("p2", None, 60_000),
        ],
    );
    place.produce(
        &format!("orders-{s}"),
        &[
            order("o4", "p1", 4_000),
            order("o5", "p2", 5_000),
            order("o6", "p3", 6_000),
        ],
    );
    let fresh = Place::kafka();
    fresh.run_pipeline(&file);
    let out = fresh.ok(&["consume", &format!("out-{s}"), "--from-beginning"]);
    assert_eq!(
        joined(&out),
        [
            "o1 p1 pen",
            "o2 p2 ink",
            "o3 p9 -",
            "o4 p1 pen2",
            "o5 p2 -",
            "o6 p3 pad"
        ]
    );
}
