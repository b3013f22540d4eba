//! The daemon: its token, refused uploads and registry paths, a failed run,
//! and a restart after SIGKILL; the harness is in daemon.rs.

use serde_json::Value;

use crate::daemon::{Daemon, map_pipeline, step_u64, tally_pipeline, until};
use crate::util::{assert_lines, guest, run, tempdir, weir};

#[test]
fn requests_without_a_token_or_with_a_wrong_one_get_401_and_change_nothing() {
    let d = Daemon::start(&["--max-body-mb", "1"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.data.join("weir.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token file is the user's only");
    let wasm = std::fs::read(guest("uppercase")).unwrap();
    for token in [None, Some("not-the-token-at-all")] {
        let (code, body) = d.http("POST", "/modules?name=case", token, &wasm);
        assert_eq!(code, 401, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["error"],
            "a valid bearer token is needed (Authorization: Bearer TOKEN): the daemon's token is in DATA/weir.token, or WEIR_TOKEN"
        );
        let (code, _) = d.http("GET", "/modules", token, b"");
        assert_eq!(code, 401);
    }
    let r = run(d.weir().env("WEIR_TOKEN", "not-the-token-at-all").args([
        "module",
        "push",
        guest("uppercase").to_str().unwrap(),
        "--name",
        "case",
    ]));
    assert!(!r.status.success());
    assert!(r.stderr.contains("refused the token (401)"), "{}", r.stderr);
    assert_eq!(d.ok(&["module", "list"]), "", "nothing was stored");

    // Oversized and malformed requests: a 4xx with a JSON error.
    let big = vec![0u8; (1 << 20) + 10];
    let (code, body) = d.http("POST", "/modules?name=big", d.token().as_deref(), &big);
    assert_eq!(code, 413, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"],
        "the request body (1048586 bytes) is larger than the limit (1048576 bytes); start the daemon with a larger --max-body-mb"
    );
    let (code, body) = d.http("POST", "/pipelines", d.token().as_deref(), b"{not json");
    assert_eq!(code, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON: "),
        "{v}"
    );
    let (code, body) = d.http("GET", "/nothing/here", d.token().as_deref(), b"");
    assert_eq!(code, 404, "{body}");
    assert_eq!(d.ok(&["module", "list"]), "");
}

#[test]
fn a_garbage_upload_is_refused_with_the_reason_and_the_registry_is_unchanged() {
    let d = Daemon::start(&[]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    let before = d.ok(&["module", "list"]);
    let modules = d.data.join("weir-daemon/modules");
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&modules)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let stored = files();
    assert_eq!(stored.len(), 2, "{stored:?}");

    let garbage = d.tmp.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let err = d.fails(&[
        "module",
        "push",
        garbage.to_str().unwrap(),
        "--name",
        "case",
    ]);
    assert_lines(
        "garbage",
        &err,
        &format!(
            "error: {} was refused: case@2: not a WebAssembly component: it does not start with the bytes \\0asm (it starts with \"this is \")",
            garbage.display()
        ),
    );
    // A component of no world: refused with the missing export named.
    let err = d.fails(&[
        "module",
        "push",
        guest("half-mapper").to_str().unwrap(),
        "--name",
        "case",
    ]);
    assert!(err.contains("process"), "{err}");
    assert_eq!(d.ok(&["module", "list"]), before);
    assert_eq!(files(), stored, "nothing stored");
    // The next good upload takes the next version.
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    assert_lines(
        "show",
        &d.ok(&["module", "show", "case"])
            .lines()
            .map(|l| l.split("  ").next().unwrap().to_string() + "\n")
            .collect::<String>(),
        "case@1\ncase@2",
    );
    let err = d.fails(&["module", "show", "nope"]);
    assert_lines(
        "show",
        &err,
        "error: no module named nope in the registry (`weir module list` shows them; `weir module push FILE.wasm --name nope` adds one)",
    );
}

#[test]
fn the_daemon_killed_with_sigkill_resumes_every_pipeline_at_its_last_versions() {
    let mut d = Daemon::start(&["--swap-wait-ms", "30000"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("faulty"), "logger"), "logger@1");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    d.ok(&[
        "deploy",
        &d.file("live.toml", &map_pipeline("live", "case@1")),
    ]);
    d.ok(&["deploy", &d.file("tally.toml", &tally_pipeline("tally@1"))]);
    let logged = "name = \"logged\"\ninput = \"in\"\noutput = \"logged-out\"\n\n[[steps]]\nname = \"echo\"\nkind = \"map\"\nmodule = \"logger@1\"\n";
    d.ok(&["deploy", &d.file("logged.toml", logged)]);
    d.ok(&["pipeline", "stop", "logged"]);
    d.produce("in", &["{\"key\":\"a\",\"value\":\"Hello\"}".to_string()]);
    until("the first output", || d.records("out").len() == 1);
    // Swapped while records flow: its first batch confirms it.
    // Keys on both partitions: each task's first batch confirms it.
    let lines: Vec<String> = (0..20)
        .map(|i| format!("{{\"key\":\"m{i}\",\"value\":\"Mid-{i}\"}}"))
        .collect();
    let out = std::thread::scope(|s| {
        let swap = s.spawn(|| d.ok(&["swap", "live", "case", "case@2"]));
        let mut n = 0;
        while !swap.is_finished() {
            d.produce("in", &lines);
            n += 1;
            assert!(n < 1000, "the swap never confirmed");
        }
        swap.join().unwrap()
    });
    assert!(
        out.starts_with("step case of live: case@1 -> case@2 (its first batch committed"),
        "{out}"
    );
    until("the tally caught up", || {
        step_u64(&d.status("tally"), 0, "lag") == 0
    });
    let count_of = |d: &Daemon, key: &str| {
        d.records("tallies")
            .into_iter()
            .rfind(|r| r.1 == key)
            .and_then(|r| r.2.as_u64())
    };
    assert_eq!(count_of(&d, "a"), Some(1));

    d.kill9();
    d.spawn();
    assert_lines(
        "after the restart",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2\nlogged  stopped  echo=logger@1\ntally  running  count=tally@1",
    );
    d.produce("in", &["{\"key\":\"a\",\"value\":\"After\"}".to_string()]);
    until("the output after the restart", || {
        d.records("out").iter().any(|r| r.2 == "after")
    });
    until("the tally after the restart", || {
        count_of(&d, "a") == Some(2)
    });
    // Guest log lines of a pipeline started again.
    d.ok(&["pipeline", "start", "logged"]);
    d.produce("in", &["{\"key\":\"b\",\"value\":\"log\"}".to_string()]);
    until("the guest's log line", || {
        d.ok(&["logs", "logged", "--step", "echo"])
            .contains("hello from offset")
    });
    let logs = d.ok(&["logs", "logged"]);
    assert!(
        logs.lines()
            .all(|l| l.starts_with("INFO echo logger@1: hello from offset ")),
        "{logs}"
    );
    assert_eq!(d.ok(&["logs", "live"]), "", "live's guest logs nothing");
    // The lines are kept in the data directory: a daemon killed and
    // started again still shows them.
    d.kill9();
    d.spawn();
    assert_eq!(
        d.ok(&["logs", "logged"]),
        logs,
        "the guest's lines after a restart"
    );
    // Delete refuses a version in use, and a pipeline can be deleted.
    let err = d.fails(&["module", "delete", "case@2"]);
    assert!(
        err.contains("case@2 is in use by step case of pipeline live"),
        "{err}"
    );
    assert_lines(
        "delete",
        &d.ok(&["pipeline", "delete", "logged"]),
        "deleted logged",
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2\ntally  running  count=tally@1",
    );
}

#[test]
fn a_registry_module_outside_the_daemon_is_refused_with_a_hint() {
    let tmp = tempdir();
    let file = tmp.path().join("live.toml");
    std::fs::write(&file, map_pipeline("live", "case@1")).unwrap();
    let r = run(weir()
        .args(["run", "--data"])
        .arg(tmp.path().join("data"))
        .arg(&file));
    assert!(!r.status.success());
    assert_lines(
        "run",
        &r.stderr,
        &format!(
            "error: {}:8: step case: `module` = \"case@1\" names a module of the daemon's registry: deploy the pipeline to `weir serve` with `weir deploy` (or give the .wasm file's path)",
            file.display()
        ),
    );
}

/// A run that fails (its module's init never returns) shows as failed with
/// the reason, naming the module by its registry name; it is reset as it
/// is, with no stop first, and is then stopped.
#[test]
fn a_failed_run_says_why_and_is_reset_without_a_stop() {
    let d = Daemon::start(&["--deadline-ms", "300"]);
    assert_eq!(d.push(&guest("hostile"), "hostile"), "hostile@1");
    d.ok(&["topic", "create", "in"]);
    let file = d.file(
        "h.toml",
        "name = \"h\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"attack\"\nkind = \"map\"\nmodule = \"hostile@latest\"\nconfig = { init = \"sleep-loop\" }\n",
    );
    d.ok(&["deploy", &file]);
    d.produce("in", &["{\"value\":\"a\"}".to_string()]);
    until("the run to fail", || {
        d.ok(&["pipeline", "list"]).starts_with("h  failed")
    });
    assert_lines(
        "status",
        &d.ok(&["pipeline", "status", "h"]),
        r#"
        pipeline h: failed (application id h)
          error: task 0-0: step attack of pipeline h: hostile@1: cannot start an instance: init deadline exceeded: the call ran longer than 300 ms
          input in, outputs out
          step attack: module hostile@1, in 0, out 0, dead letters 0, lag 1, state 0 entries (0 bytes), swaps 0 (last: none, pause 0 us)
        "#,
    );
    assert_lines(
        "reset",
        &d.ok(&["pipeline", "reset", "h"]),
        "reset h: forgot 0 entries of positions and state; `weir pipeline start h` reprocesses its inputs from the start",
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "h  stopped  attack=hostile@1",
    );
}

#[test]
fn a_token_given_by_weir_token_is_the_one_the_daemon_takes() {
    let d = Daemon::start_with(&[], Some("a-token-from-the-environment"));
    assert!(d.token_file().is_none(), "no token file is made");
    let r = run(d.weir().args(["module", "list"]));
    assert!(!r.status.success());
    assert_lines(
        "no token",
        &r.stderr,
        &format!(
            "error: no token: give --token or WEIR_TOKEN, or run on the daemon's data directory (cannot read {}): No such file or directory (os error 2)",
            d.data.join("weir.token").display()
        ),
    );
    let r = run(d
        .weir()
        .env("WEIR_TOKEN", "a-token-from-the-environment")
        .args([
            "module",
            "push",
            guest("uppercase").to_str().unwrap(),
            "--name",
            "case",
        ]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout, "case@1\n");
    // --server instead of the address file.
    let addr = std::fs::read_to_string(d.data.join("weir.addr")).unwrap();
    let r = run(d
        .weir()
        .env("WEIR_DATA", d.tmp.path().join("elsewhere"))
        .args([
            "module",
            "show",
            "case",
            "--server",
            addr.trim(),
            "--token",
            "a-token-from-the-environment",
        ]));
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stdout.starts_with("case@1  mapper  "), "{}", r.stdout);
}

/// Two daemons run one pipeline on Kafka, a partition each. A state query
/// answers for the partitions its instance runs, not from the copy it kept
/// of one it gave away, and for a key of the other's partition says which
/// partition that is (Kafka Streams' `queryMetadataForKey`); so does `weir
/// state get --brokers`.
#[test]
fn on_kafka_a_state_query_answers_for_its_own_partitions_and_names_the_others() {
    let kafka = crate::kafka::brokers();
    let n = std::process::id();
    let (input, output, app) = (format!("iqin-{n}"), format!("iqout-{n}"), format!("iq-{n}"));
    let ds = [Daemon::start(&[]), Daemon::start(&[])];
    for d in &ds {
        assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    }
    let k = |d: &Daemon, args: &[&str]| {
        let mut c = d.weir();
        c.args(args).args(["--brokers", kafka]);
        c
    };
    let r = run(&mut k(
        &ds[0],
        &["topic", "create", &input, "--partitions", "2"],
    ));
    assert!(r.status.success(), "{}", r.stderr);
    // Two keys in each partition.
    let part = |key: &str| weir::log::partitioner::partition_for_key(key.as_bytes(), 2);
    let mut keys: Vec<String> = Vec::new();
    for p in 0..2 {
        keys.extend(
            (0..)
                .map(|i| format!("k{i}"))
                .filter(|key| part(key) == p)
                .take(2),
        );
    }
    let produce = || {
        let lines: Vec<String> = keys
            .iter()
            .map(|key| format!("{{\"key\":\"{key}\",\"value\":\"x\"}}"))
            .collect();
        crate::util::feed(&mut k(&ds[0], &["produce", &input]), &lines);
    };
    let text = tally_pipeline("tally@1")
        .replace("name = \"tally\"", &format!("name = \"{app}\""))
        .replace("input = \"in\"", &format!("input = \"{input}\""))
        .replace("output = \"tallies\"", &format!("output = \"{output}\""))
        + &format!("\n[kafka]\n\"bootstrap.servers\" = \"{kafka}\"\n");
    let counted = |want: u64| {
        let r = run(&mut k(&ds[0], &["consume", &output, "--from-beginning"]));
        let values: Vec<Value> = r
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["value"].clone())
            .collect();
        values.iter().filter(|v| v.as_u64() == Some(want)).count() == keys.len()
    };
    // The first instance alone counts every key once...
    produce();
    ds[0].ok(&["deploy", &ds[0].file("iq.toml", &text)]);
    until("the first counts", || counted(1));
    // ...then the second joins and takes a partition, and every key is
    // counted again, each by the instance that runs its partition.
    ds[1].ok(&["deploy", &ds[1].file("iq.toml", &text)]);
    let runs = |d: &Daemon| -> Vec<u64> {
        d.status(&app)["partitions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    until("a partition each", || {
        let (a, b) = (runs(&ds[0]), runs(&ds[1]));
        a.len() == 1 && b.len() == 1 && a != b
    });
    produce();
    until("the second counts", || counted(2));
    for key in &keys {
        let p = part(key);
        for d in &ds {
            let (code, body) = d.http(
                "GET",
                &format!("/pipelines/{app}/steps/count/state?key={key}"),
                d.token().as_deref(),
                b"",
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            // The same through the CLI, which reads the instance's local
            // copy and the assignment it published beside it.
            let cli = run(&mut k(d, &["state", "get", &app, "count", key]));
            if runs(d) == [u64::from(p)] {
                assert_eq!(
                    (code, v),
                    (200, serde_json::json!([{"key": key, "value": 2}])),
                    "{key} from the instance that runs partition {p}"
                );
                assert_eq!(
                    (cli.status.code(), cli.stdout.trim()),
                    (
                        Some(0),
                        format!("{{\"key\":\"{key}\",\"value\":2}}").as_str()
                    ),
                    "{}",
                    cli.stderr
                );
            } else {
                let elsewhere = format!(
                    "no state for key {key:?} in step count of pipeline {app}: key {key:?} belongs to partition {p} of 2, which another instance of application {app} runs (this one runs partitions [{}]); query that one",
                    1 - p
                );
                assert_eq!(
                    (code, v["error"].as_str().unwrap_or_default()),
                    (404, elsewhere.as_str()),
                    "{key} from the other instance"
                );
                assert_eq!(
                    (cli.status.code(), cli.stderr.trim()),
                    (Some(1), elsewhere.as_str()),
                    "{key} from the other instance, by the CLI"
                );
            }
        }
    }
}
