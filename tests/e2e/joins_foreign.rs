//! Foreign-key table-table joins on the embedded log beyond the parity
//! scenario (tests/parity/fk-join, held to Kafka Streams in parity.rs):
//! keys that move between foreign keys across partitions, a left value that
//! is not JSON, and the pipeline-file mistakes a foreign key can carry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Daemon, until};
use crate::kafka_faults::{partitions_of, start};
use crate::kafka_pipelines::{Place, suffix};
use crate::pipelines::{Data, canon, pipeline, write_pipeline};
use crate::testdriver::{embedded_run, example_lines, memory_run};
use crate::util::{assert_lines, guest, run, tempdir};

fn pipeline_text(join: &str) -> String {
    format!(
        "name = \"enrich\"\ninput = \"orders\"\noutput = \"enriched\"\n\n[[steps]]\nname = \"by-user\"\nkind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"users\"\nforeign_key = \"/user\"\njoin = \"{join}\"\n"
    )
}

/// The last value per key, without keys whose last value is a tombstone.
fn finals(records: &[Value]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for r in records {
        m.insert(r["key"].as_str().unwrap().to_string(), r["value"].clone());
    }
    m.into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, canon(&v)))
        .collect()
}

/// 60 orders move between 12 users three times each, while users change
/// and some are deleted, and `want`: each order's last user's last value (a
/// left join: with none when that user is gone), as a model computed here.
fn moving_orders(join: &str) -> (Vec<String>, Vec<String>, BTreeMap<String, String>) {
    let mut orders: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let mut users: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let (mut order_lines, mut user_lines) = (Vec::new(), Vec::new());
    let mut ts = 1_000;
    for round in 0..3 {
        for u in 0..12 {
            ts += 10;
            // Every third user is deleted in the last round.
            let value = (round < 2 || u % 3 != 0)
                .then(|| json!({"name": format!("user{u}"), "round": round}));
            let key = format!("u{u}");
            user_lines.push(json!({"key": key, "value": value, "timestamp": ts}).to_string());
            users.insert(key, value);
        }
        for o in 0..60 {
            ts += 10;
            let key = format!("o{o}");
            // Orders 50.. are deleted in the last round; orders 40..50 lose
            // their user.
            let value = match (round, o) {
                (2, 50..) => None,
                (2, 40..50) => Some(json!({"n": o})),
                _ => Some(json!({"user": format!("u{}", (o * 7 + round * 5) % 12), "n": o})),
            };
            order_lines.push(json!({"key": key, "value": value, "timestamp": ts}).to_string());
            orders.insert(key, value);
        }
    }
    let want = model(join, &[&order_lines], &[&user_lines]);
    assert_eq!(want.len(), if join == "inner" { 27 } else { 50 });
    (order_lines, user_lines, want)
}

/// The last value per key of records in `lines` (`null` for a deletion).
fn last_values(lines: &[&[String]]) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for l in lines.iter().flat_map(|l| l.iter()) {
        let r: Value = serde_json::from_str(l).unwrap();
        m.insert(r["key"].as_str().unwrap().to_string(), r["value"].clone());
    }
    m
}

/// What a foreign-key join on "/user" ends with over these inputs (merge_json
/// under "right"): the last order per key joined with its user's last value.
fn model(join: &str, orders: &[&[String]], users: &[&[String]]) -> BTreeMap<String, String> {
    let (orders, users) = (last_values(orders), last_values(users));
    let mut want = BTreeMap::new();
    for (k, v) in &orders {
        if v.is_null() {
            continue;
        }
        let right = v["user"]
            .as_str()
            .and_then(|u| users.get(u).filter(|r| !r.is_null()).cloned());
        if join == "inner" && right.is_none() {
            continue;
        }
        let mut joined = v.clone();
        joined["right"] = right.unwrap_or(Value::Null);
        want.insert(k.clone(), canon(&joined));
    }
    want
}

/// The moving orders over 4 partitions (users on other partitions than
/// their orders, mostly) end joined with their last user, in `weir run` and
/// in `weir test --partitions 4`.
#[test]
fn orders_moving_between_users_across_partitions_end_joined_with_their_last_user() {
    for join in ["inner", "left"] {
        let (order_lines, user_lines, want) = moving_orders(join);
        let d = Data::new();
        d.topic("orders", 4);
        d.topic("users", 4);
        d.produce("users", &user_lines);
        d.produce("orders", &order_lines);
        let file = write_pipeline(d.path.parent().unwrap(), &pipeline_text(join));
        let summary = d.run_pipeline(&file, &[]);
        assert!(summary.contains("0 dead letters"), "{summary}");
        assert_eq!(finals(&d.consume("enriched")), want, "{join} join");
        // `weir test` runs each segment's tasks one after another: the
        // responses of a user's task that has not yet heard an order left
        // it come after those of the order's new user, and are dropped.
        let inputs: &[(&str, &[String])] = &[("orders", &order_lines), ("users", &user_lines)];
        let tested: Vec<Value> = memory_run(&file, 4, inputs, "7")
            .into_iter()
            .filter(|r| r["topic"] == "enriched")
            .collect();
        assert_eq!(finals(&tested), want, "{join} join, weir test");
    }
}

/// A right table with another partition count than the orders' is joined
/// as Kafka Streams joins it: the subscriptions are partitioned as the
/// right table (its count of middle tasks), the responses as the orders.
#[test]
fn a_right_table_with_another_partition_count_is_joined_across_its_partitions() {
    for (join, order_parts, user_parts) in [("left", 4, 1), ("inner", 2, 5), ("left", 3, 2)] {
        let (order_lines, user_lines, want) = moving_orders(join);
        let d = Data::new();
        d.topic("orders", order_parts);
        d.topic("users", user_parts);
        d.produce("users", &user_lines);
        d.produce("orders", &order_lines);
        let file = write_pipeline(d.path.parent().unwrap(), &pipeline_text(join));
        let summary = d.run_pipeline(&file, &[]);
        assert!(summary.contains("0 dead letters"), "{summary}");
        let case = format!("{join} join, orders on {order_parts}, users on {user_parts}");
        assert_eq!(finals(&d.consume("enriched")), want, "{case}");
        for (topic, parts) in [
            ("enrich-by-user-repartition", user_parts),
            ("enrich-by-user.resolve-repartition", order_parts),
            ("enriched", order_parts),
        ] {
            let described = d.ok(&["topic", "describe", topic]);
            assert!(
                described.contains(&format!("partitions: {parts}\n")),
                "{case}: {topic}: {described}"
            );
        }
    }
}

/// A left value that is not JSON cannot name a foreign key: it goes to the
/// dead letters with the reason, and the rest of the batch goes on.
#[test]
fn a_left_value_that_is_not_json_is_a_dead_letter_and_the_rest_goes_on() {
    let d = Data::new();
    d.topic("orders", 1);
    d.topic("users", 1);
    d.produce(
        "users",
        &[json!({"key": "u1", "value": {"name": "ann"}, "timestamp": 1}).to_string()],
    );
    d.produce(
        "orders",
        &[
            json!({"key": "o1", "value": "not json", "timestamp": 2}).to_string(),
            json!({"key": "o2", "value": {"user": "u1"}, "timestamp": 3}).to_string(),
        ],
    );
    let file = write_pipeline(d.path.parent().unwrap(), &pipeline_text("inner"));
    let summary = d.run_pipeline(&file, &[]);
    assert!(summary.contains("1 dead letter,"), "{summary}");
    assert_lines(
        "enriched",
        &d.ok(&["consume", "enriched", "--from-beginning"]),
        r#"{"partition":0,"offset":0,"key":"o2","value":{"right":{"name":"ann"},"user":"u1"},"timestamp":3}"#,
    );
    assert_lines(
        "dead letters",
        &d.ok(&["consume", "enrich-dead-letters", "--from-beginning"]),
        r#"{"partition":0,"offset":0,"key":"o1","value":"not json","headers":{"weir.error":"the value is not JSON, so `foreign_key` \"/user\" cannot be read from it: expected ident at line 1 column 2","weir.error.kind":"rejected","weir.step":"by-user.subscribe","weir.topic":"orders","weir.partition":"0","weir.offset":"0"},"timestamp":2}"#,
    );
}

#[test]
fn a_foreign_key_mistake_names_the_line_and_what_to_write() {
    let d = Data::new();
    let dir = d.path.parent().unwrap().to_path_buf();
    let head = "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\n";
    let cases = [
        (
            "kind = \"map\"\nmodule = \"uppercase.wasm\"\nforeign_key = \"/user\"\n",
            "8: step s: `foreign_key` applies to join steps, not to a map step",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nforeign_key = \"user\"\n",
            "9: step s: `foreign_key` = \"user\" is not a JSON pointer into the left value: start it with `/`, as in \"/user_id\" or \"/order/customer\"",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nforeign_key = \"/user\"\njoin = \"outer\"\n",
            "10: step s: a foreign-key join is \"inner\" or \"left\", as Kafka Streams' are",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nforeign_key = \"/user\"\n\n[[steps]]\nname = \"s.resolve\"\nkind = \"map\"\nmodule = \"uppercase.wasm\"\n",
            "12: step s.resolve: the foreign-key join \"s\" runs a part of itself under this name: rename one of them",
        ),
    ];
    for (text, want) in cases {
        let file = write_pipeline(&dir, &format!("{head}{text}"));
        let r = run(d.weir().arg("run").arg(&file).arg("--until-caught-up"));
        assert_eq!(r.status.code(), Some(1));
        let expected = format!("error: {}:{want}", file.display());
        assert!(
            r.stderr.starts_with(&expected),
            "expected: {expected}\nactual: {}",
            r.stderr
        );
    }
}

/// `examples/pipelines/order-users.toml` on its sample inputs: each order
/// stays joined with the user it names as orders move and users change.
#[test]
fn the_order_users_example_keeps_each_order_joined_with_its_user() {
    let file = pipeline("order-users.toml");
    let (orders, users) = (
        example_lines("order-users.orders.jsonl"),
        example_lines("order-users.users.jsonl"),
    );
    let inputs: &[(&str, &[String])] = &[("orders", &orders), ("users", &users)];
    let out = "orders-with-users";
    let show = |recs: &[Value]| -> Vec<String> {
        recs.iter()
            .filter(|r| r["topic"].as_str().is_none_or(|t| t == out))
            .map(|r| {
                format!(
                    "{}@{} {}",
                    r["key"].as_str().unwrap(),
                    r["timestamp"],
                    canon(&r["value"])
                )
            })
            .collect()
    };
    // o1 moves from u1 to u3; u2 changes; u4 comes after o3 names it; o4
    // names nobody.
    let want = [
        r#"o1@2000 {"customer":{"name":"Ann"},"item":"pen","user":"u1"}"#,
        r#"o2@3000 {"customer":{"name":"Bo"},"item":"ink","user":"u2"}"#,
        r#"o3@4000 {"customer":null,"item":"cap","user":"u4"}"#,
        r#"o1@5000 {"customer":{"name":"Cy"},"item":"pen","user":"u3"}"#,
        r#"o2@6000 {"customer":{"city":"Oslo","name":"Bo"},"item":"ink","user":"u2"}"#,
        r#"o3@7000 {"customer":{"name":"Di"},"item":"cap","user":"u4"}"#,
        r#"o4@8000 {"customer":null,"item":"mug"}"#,
    ];
    assert_eq!(show(&memory_run(&file, 1, inputs, "1")), want);
    // On two partitions, in batches: the same last value per order.
    let last = |recs: Vec<String>| -> BTreeMap<String, String> {
        recs.into_iter()
            .map(|r| {
                let (k, v) = r.split_once(' ').unwrap();
                (k.split('@').next().unwrap().to_string(), v.to_string())
            })
            .collect()
    };
    let want_last = last(want.iter().map(|s| s.to_string()).collect());
    for batch in ["1", "100"] {
        let got = memory_run(&file, 2, inputs, batch);
        assert_eq!(last(show(&got)), want_last, "weir test, batch {batch}");
        let on_log = embedded_run(&file, 2, inputs, &[out], batch);
        assert_eq!(last(show(&on_log)), want_last, "weir run, batch {batch}");
    }
}

/// Deployed to the daemon, a foreign-key join runs as its three steps, and
/// `weir pipeline status` counts each one's state: the left keys and the
/// partition's version, the subscriptions and the right rows (and their
/// times), the newest version per left key.
#[test]
fn under_the_daemon_each_part_shows_its_state() {
    let d = Daemon::start(&[]);
    assert_eq!(d.push(&guest("merge_json"), "merge"), "merge@1");
    for t in ["orders", "users"] {
        d.ok(&["topic", "create", t, "--partitions", "1"]);
    }
    let text = std::fs::read_to_string(pipeline("order-users.toml"))
        .unwrap()
        .replace("merge_json.wasm", "merge@1");
    d.ok(&["deploy", &d.file("order-users.toml", &text)]);
    d.produce("users", &example_lines("order-users.users.jsonl"));
    d.produce("orders", &example_lines("order-users.orders.jsonl"));
    let last = || -> BTreeMap<String, String> {
        d.records("orders-with-users")
            .into_iter()
            .map(|(_, k, v)| (k, v["customer"]["name"].to_string()))
            .collect()
    };
    let want: BTreeMap<String, String> = [
        ("o1", "\"Cy\""),
        ("o2", "\"Bo\""),
        ("o3", "\"Di\""),
        ("o4", "null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    until("every order joined with its last user", || last() == want);
    let status = d.ok(&["pipeline", "status", "order-users"]);
    let entries: Vec<(String, String)> = status
        .lines()
        .filter_map(|l| {
            let step = l.trim().strip_prefix("step ")?.split(':').next()?;
            let n = l.split("state ").nth(1)?.split(' ').next()?;
            Some((step.to_string(), n.to_string()))
        })
        .collect();
    let want = [
        ("customer.subscribe", "5"),
        ("customer", "11"),
        ("customer.resolve", "4"),
    ];
    assert_eq!(
        entries,
        want.map(|(s, n)| (s.to_string(), n.to_string())).to_vec(),
        "{status}"
    );
}

/// On Kafka, two instances share a foreign-key join whose right table has
/// more partitions than its input: the consumer group assigns each topic's
/// partitions on their own (users' three are not split as orders' two), and
/// each order still ends joined with its last user, and `weir state` on each
/// shows the right table in the users' partitions it runs. Then both stop, more
/// orders and users come, and one instance on a fresh machine (an empty
/// state directory) restores every part's state from its changelogs (the
/// middle part's with three partitions) and ends on the new model.
#[test]
fn on_kafka_two_instances_share_a_join_whose_right_table_has_more_partitions() {
    let s = suffix();
    let (a, b) = (Place::kafka(), Place::kafka());
    let files = tempdir();
    let (orders, users, enriched) = (
        format!("orders-{s}"),
        format!("users-{s}"),
        format!("enriched-{s}"),
    );
    let text = pipeline_text("left")
        .replace("\"enrich\"", &format!("\"enrich-{s}\""))
        .replace("\"orders\"", &format!("\"{orders}\""))
        .replace("\"users\"", &format!("\"{users}\""))
        .replace("\"enriched\"", &format!("\"{enriched}\""));
    let file = write_pipeline(files.path(), &text);
    let (order_lines, user_lines, want) = moving_orders("left");
    a.topic(&orders, 2);
    a.topic(&users, 3);
    a.produce(&users, &user_lines);
    a.produce(&orders, &order_lines);
    // The second instance starts once the first runs (has made the
    // internal topics and joined the group), so that the group rebalances.
    let (mut ia, la) = start(&a, &file);
    let started = Instant::now();
    while partitions_of(&la).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first instance did not start within 60 s:\n{}",
            std::fs::read_to_string(&la).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut ib, lb) = start(&b, &file);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Both instances hold a partition of the orders (each runs one), and
    // the output reached the model.
    loop {
        let (pa, pb) = (partitions_of(&la), partitions_of(&lb));
        let split = matches!((&pa, &pb), (Some(x), Some(y)) if x.len() == 1 && y.len() == 1);
        let out = if run(a.weir().args(["topic", "describe", &enriched]))
            .status
            .success()
        {
            a.consume(&enriched)
        } else {
            Vec::new()
        };
        if split && finals(&out) == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not joined within 120 s: partitions {pa:?} and {pb:?}, {} of {} orders as the model\n--- instance a\n{}\n--- instance b\n{}",
            finals(&out)
                .iter()
                .filter(|(k, v)| want.get(*k) == Some(v))
                .count(),
            want.len(),
            std::fs::read_to_string(&la).unwrap_or_default(),
            std::fs::read_to_string(&lb).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // `weir state` on each instance answers for the right table (the
    // middle part's state) in the users' partitions that instance runs,
    // not in the orders' numbers: the range assignor gives the instance
    // with orders partition 0 users partitions 0 and 1, the other 2. The
    // first instance ran alone at first, so it also holds a stale copy of
    // partition 2, which it must not show.
    let app = format!("enrich-{s}");
    let last_user = last_values(&[&user_lines]);
    for (place, log) in [(&a, &la), (&b, &lb)] {
        let mine: Vec<u32> = if partitions_of(log) == Some(vec![0]) {
            vec![0, 1]
        } else {
            vec![2]
        };
        for (user, value) in &last_user {
            let p = weir::log::partitioner::partition_for_key(user.as_bytes(), 3);
            let r = run(place.weir().args(["state", "get", &app, "by-user", user]));
            let got = (
                r.status.code(),
                r.stdout.trim().to_string(),
                r.stderr.trim().to_string(),
            );
            let want = if !mine.contains(&p) {
                (
                    Some(1),
                    String::new(),
                    format!(
                        "no state for key {user:?} in step by-user of pipeline {app}: key {user:?} belongs to partition {p} of 3, which another instance of application {app} runs (this one runs partitions {mine:?}); query that one"
                    ),
                )
            } else if value.is_null() {
                (
                    Some(1),
                    String::new(),
                    format!("no state for key {user:?} in step by-user of pipeline {app}"),
                )
            } else {
                (
                    Some(0),
                    json!({"table": "right", "key": user, "value": value}).to_string(),
                    String::new(),
                )
            };
            assert_eq!(
                got, want,
                "{user} (partition {p}) from the instance running {mine:?}"
            );
        }
    }
    for c in [&mut ia, &mut ib] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    // Orders 0..20 move on, users 0..6 change, user 7 goes.
    let more_users: Vec<String> = (0..8)
        .map(|u| {
            let value = (u != 7).then(|| json!({"name": format!("user{u}"), "round": 3}));
            json!({"key": format!("u{u}"), "value": value, "timestamp": 9_000 + u}).to_string()
        })
        .collect();
    let more_orders: Vec<String> = (0..20)
        .map(|o| {
            let value = json!({"user": format!("u{}", (o * 5) % 12), "n": o, "round": 3});
            json!({"key": format!("o{o}"), "value": value, "timestamp": 9_100 + o}).to_string()
        })
        .collect();
    a.produce(&users, &more_users);
    a.produce(&orders, &more_orders);
    let want = model(
        "left",
        &[&order_lines, &more_orders],
        &[&user_lines, &more_users],
    );
    let fresh = Place::kafka();
    let (mut ic, _) = start(&fresh, &file);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = finals(&a.consume(&enriched));
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not joined after the restore within 120 s: {} of {} orders as the model",
            got.iter().filter(|(k, v)| want.get(*k) == Some(v)).count(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ic.kill().unwrap();
    ic.wait().unwrap();
    let described = a.ok(&[
        "topic",
        "describe",
        &format!("enrich-{s}-by-user-repartition"),
    ]);
    assert!(described.contains("partitions: 3\n"), "{described}");
}

/// A right table recreated with another partition count after a run: the
/// subscriptions are partitioned the old way, so the run is refused (as
/// Kafka Streams refuses an internal topic of the wrong count) until the
/// pipeline is reset; after `weir reset` it joins everything again.
#[test]
fn a_right_table_repartitioned_since_the_last_run_is_refused_until_reset() {
    let (order_lines, user_lines, want) = moving_orders("left");
    let d = Data::new();
    d.topic("orders", 2);
    d.topic("users", 2);
    d.produce("users", &user_lines);
    d.produce("orders", &order_lines);
    let file = write_pipeline(d.path.parent().unwrap(), &pipeline_text("left"));
    d.run_pipeline(&file, &[]);
    d.ok(&["topic", "delete", "users"]);
    d.topic("users", 3);
    d.produce("users", &user_lines);
    let r = run(d.weir().arg("run").arg(&file).arg("--until-caught-up"));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim_end(),
        "error: the internal topic enrich-by-user-repartition of pipeline enrich has 2 partitions, but this run needs 3: a topic it reads has another partition count than when the pipeline last ran, so its state is partitioned the old way; reset it (`weir reset enrich`) to reprocess its inputs"
    );
    d.ok(&["reset", "enrich"]);
    d.ok(&["topic", "delete", "enriched"]);
    let summary = d.run_pipeline(&file, &[]);
    assert!(summary.contains("0 dead letters"), "{summary}");
    assert_eq!(finals(&d.consume("enriched")), want);
}

/// `weir state` shows the tables a join keeps, as a Kafka Streams query of
/// a materialized table: a foreign-key join's right table under its middle
/// part (its partitions are the users', not the orders'), and both sides of
/// a table-table join.
#[test]
fn weir_state_shows_the_tables_a_join_keeps() {
    let d = Data::new();
    d.topic("orders", 2);
    d.topic("users", 3);
    d.produce("orders", &example_lines("order-users.orders.jsonl"));
    d.produce("users", &example_lines("order-users.users.jsonl"));
    d.run_pipeline(&pipeline("order-users.toml"), &[]);
    assert_lines(
        "a user",
        &d.ok(&["state", "get", "order-users", "customer", "u2"]),
        r#"{"table":"right","key":"u2","value":{"name":"Bo","city":"Oslo"}}"#,
    );
    let mut all: Vec<String> = d
        .ok(&["state", "scan", "order-users", "customer"])
        .lines()
        .map(str::to_string)
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            r#"{"table":"right","key":"u1","value":{"name":"Ann"}}"#,
            r#"{"table":"right","key":"u2","value":{"name":"Bo","city":"Oslo"}}"#,
            r#"{"table":"right","key":"u3","value":{"name":"Cy"}}"#,
            r#"{"table":"right","key":"u4","value":{"name":"Di"}}"#,
        ]
    );
    let r = run(d
        .weir()
        .args(["state", "get", "order-users", "customer", "u9"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr,
        "no state for key \"u9\" in step customer of pipeline order-users\n"
    );

    let t = Data::new();
    t.topic("left", 1);
    t.topic("right", 1);
    t.produce(
        "left",
        &[
            json!({"key": "p", "value": {"o": 1}, "timestamp": 1}).to_string(),
            json!({"key": "q", "value": {"o": 2}, "timestamp": 2}).to_string(),
            json!({"key": "q", "value": null, "timestamp": 4}).to_string(),
        ],
    );
    t.produce(
        "right",
        &[
            json!({"key": "p", "value": "x", "timestamp": 3}).to_string(),
            json!({"key": "r", "value": 7, "timestamp": 5}).to_string(),
        ],
    );
    let text = "name = \"tt\"\ninput = \"left\"\noutput = \"out\"\n\n[[steps]]\nname = \"join\"\nkind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"right\"\nas_table = true\njoin = \"outer\"\n";
    let file = write_pipeline(t.path.parent().unwrap(), text);
    t.run_pipeline(&file, &[]);
    assert_lines(
        "both sides of p",
        &t.ok(&["state", "get", "tt", "join", "p"]),
        r#"{"table":"left","key":"p","value":{"o":1}}
           {"table":"right","key":"p","value":"x"}"#,
    );
    assert_lines(
        "every key",
        &t.ok(&["state", "scan", "tt", "join"]),
        r#"{"table":"left","key":"p","value":{"o":1}}
           {"table":"right","key":"p","value":"x"}
           {"table":"right","key":"r","value":7}"#,
    );
}
