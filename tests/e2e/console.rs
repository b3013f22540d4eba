//! Kafka's console habits: `weir produce --text` takes each line as a
//! record's value (with `--key-separator`, the text before the separator as
//! its key), and `weir consume --text` prints values, or keys and values, a
//! line each: on the embedded log, with and without a `weir run` serving
//! the data directory, and on Kafka.

use crate::kafka::{kweir, ok, unique, with_input};
use crate::live::{Data, map_pipeline, until};
use crate::util::{assert_lines, guest, run, tempdir, weir};

#[test]
fn text_lines_are_produced_and_consumed_as_kafkas_console_tools_do_with_and_without_an_owner() {
    let d = Data::new();
    ok(d.weir()
        .args(["topic", "create", "in", "--partitions", "1"]));

    // Every line a value as it is: an empty line an empty value, a CR LF
    // ending left out.
    let (success, out, err) = with_input(
        d.weir().args(["produce", "in", "--text"]),
        "the river\n\nflows: on\r\n",
    );
    assert!(success, "{err}");
    assert_eq!(out, "");
    assert_lines("stderr", &err, "produced 3 records to in");
    // The key is the text before the first separator; a line without one
    // is named and the others are produced.
    let (success, _, err) = with_input(
        d.weir()
            .args(["produce", "in", "--text", "--key-separator", ":"]),
        "u1:a:b\nno separator here\nu2:\n",
    );
    assert!(!success);
    assert_lines(
        "stderr",
        &err,
        r#"error: stdin:2: no key separator ":" in the line (with --key-separator, every line is KEY:VALUE)
           produced 2 records to in
           error: 1 malformed line in stdin was not produced"#,
    );
    assert_lines(
        "the records as JSON",
        &ok(d.weir().args(["consume", "in", "--from-beginning"])),
        r#"{"partition":0,"offset":0,"key":null,"value":"the river","timestamp":0}
           {"partition":0,"offset":1,"key":null,"value":"","timestamp":0}
           {"partition":0,"offset":2,"key":null,"value":"flows: on","timestamp":0}
           {"partition":0,"offset":3,"key":"u1","value":"a:b","timestamp":0}
           {"partition":0,"offset":4,"key":"u2","value":"","timestamp":0}"#,
    );
    assert_eq!(
        ok(d.weir()
            .args(["consume", "in", "--from-beginning", "--text"])),
        "the river\n\nflows: on\na:b\n\n"
    );
    assert_eq!(
        ok(d.weir().args([
            "consume",
            "in",
            "--from-beginning",
            "--text",
            "--key-separator",
            "\t"
        ])),
        "null\tthe river\nnull\t\nnull\tflows: on\nu1\ta:b\nu2\t\n"
    );

    // The same through a running pipeline that owns the directory (it
    // upper-cases values from `in` to `out`).
    let dir = tempdir();
    let owner = d.start(&map_pipeline(dir.path()));
    let (success, _, err) = with_input(
        d.weir()
            .args(["produce", "in", "--text", "--key-separator", "="]),
        "k1=hello\nk2=a=b\n",
    );
    assert!(success, "{err}");
    assert_lines("stderr", &err, "produced 2 records to in");
    let expected = "null THE RIVER\nnull \nnull FLOWS: ON\nu1 A:B\nu2 \nk1 HELLO\nk2 A=B\n";
    let args = [
        "consume",
        "out",
        "--from-beginning",
        "--text",
        "--key-separator",
        " ",
    ];
    let mut seen = String::new();
    until("the owner's outputs", || {
        seen = ok(d.weir().args(args));
        seen == expected
    });
    drop(owner);
    assert_eq!(seen, expected);
}

#[test]
fn text_lines_are_produced_to_and_consumed_from_kafka() {
    let topic = unique("text");
    ok(&mut kweir(&[
        "topic",
        "create",
        &topic,
        "--partitions",
        "1",
    ]));
    let (success, _, err) = with_input(
        &mut kweir(&["produce", &topic, "--text", "--key-separator", ":"]),
        "u1:x\nu2:y:z\n",
    );
    assert!(success, "{err}");
    assert_lines("stderr", &err, &format!("produced 2 records to {topic}"));
    assert_eq!(
        ok(&mut kweir(&[
            "consume",
            &topic,
            "--from-beginning",
            "--text",
            "--key-separator",
            ","
        ])),
        "u1,x\nu2,y:z\n"
    );
    assert_eq!(
        ok(&mut kweir(&[
            "consume",
            &topic,
            "--from-beginning",
            "--text"
        ])),
        "x\ny:z\n"
    );
}

#[test]
fn weir_test_reads_plain_text_inputs_with_text() {
    let tmp = tempdir();
    let lines = tmp.path().join("lines.txt");
    std::fs::write(&lines, "a river\nthe weir\r\nriver\n").unwrap();
    let r = run(weir()
        .env("WEIR_MODULE_PATH", guest("count").parent().unwrap())
        .arg("test")
        .arg(crate::util::root().join("examples/pipelines/wordcount.toml"))
        .arg("--input")
        .arg(format!("lines={}", lines.display()))
        .args(["--text", "--batch", "1"]));
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    // split-words drops "the"; one output per update with --batch 1.
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"topic":"counts","partition":0,"offset":0,"key":"a","value":1,"timestamp":0}
           {"topic":"counts","partition":0,"offset":1,"key":"river","value":1,"timestamp":0}
           {"topic":"counts","partition":0,"offset":2,"key":"weir","value":1,"timestamp":0}
           {"topic":"counts","partition":0,"offset":3,"key":"river","value":2,"timestamp":0}"#,
    );

    let keyed = tmp.path().join("keyed.txt");
    std::fs::write(&keyed, "k1:the river\nno separator\nk2:\n").unwrap();
    let r = run(weir()
        .arg("test")
        .arg(guest("uppercase"))
        .arg("--input")
        .arg(&keyed)
        .args(["--text", "--key-separator", ":"]));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"output":null,"key":"k1","value":"THE RIVER","timestamp":0}
           {"output":null,"key":"k2","value":"","timestamp":0}"#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            r#"error: {file}:2: no key separator ":" in the line (with --key-separator, every line is KEY:VALUE)
               error: 1 malformed line in {file} (the other records were processed)"#,
            file = keyed.display()
        ),
    );
}
