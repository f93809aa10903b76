//! The `wharf` command's help, usage errors and error paths, without a broker: a
//! mem:// broker lives inside one process, so here it only ever starts empty.

mod common;

use assert_cmd::Command;
use predicates::prelude::*;

use common::wharf_with;

fn wharf() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for variable in [
        "WHARF_URL",
        "WHARF_CONFIG",
        "WHARF_TOPIC",
        "WHARF_SUBSCRIPTION",
    ] {
        command.env_remove(variable);
    }
    command
}

#[test]
fn help_lists_the_commands_and_the_exit_codes() {
    wharf()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes:"))
        .stdout(predicate::str::contains("4  not found"))
        .stdout(predicate::str::contains("dlq"));
}

#[test]
fn every_command_has_examples() {
    for command in [
        &["publish"][..],
        &["tail"],
        &["stats"],
        &["dlq"],
        &["doctor"],
    ] {
        wharf()
            .args(command)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"));
    }
}

#[test]
fn without_a_url_the_command_says_where_to_give_one() {
    wharf()
        .args(["stats", "-s", "billing"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no backend URL"))
        .stderr(predicate::str::contains("WHARF_URL"));
}

#[test]
fn a_bad_option_value_is_a_usage_error() {
    wharf()
        .args([
            "--url", "mem://x", "dlq", "redrive", "-s", "b", "--rate", "fast",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("50/s"));
}

#[test]
fn an_unknown_scheme_is_a_usage_error_naming_the_backends() {
    wharf()
        .args(["--url", "nats://localhost", "stats", "-s", "billing"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("amqp://"));
}

#[test]
fn a_missing_subscription_exits_with_4_and_says_what_to_do() {
    wharf()
        .args(["--url", "mem://usage", "stats", "-s", "billing"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("`billing`"))
        .stderr(predicate::str::contains("next:"));
}

#[test]
fn with_json_an_error_is_a_json_document() {
    let output = wharf()
        .args(["--url", "mem://usage", "--json", "tail", "-s", "billing"])
        .output()
        .expect("runs");

    assert_eq!(output.status.code(), Some(4));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(document["error"]["kind"], "not_found");
    assert_eq!(document["error"]["exit_code"], 4);
    assert!(document["error"]["hint"].is_string());
}

#[test]
fn doctor_reports_a_missing_subscription_with_exit_code_3() {
    let output = wharf()
        .args([
            "--url",
            "mem://usage",
            "--json",
            "doctor",
            "-s",
            "billing",
            "-t",
            "orders",
        ])
        .output()
        .expect("runs");

    assert_eq!(output.status.code(), Some(3));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(document["errors"], 1);
    assert_eq!(document["findings"][0]["severity"], "error");
    assert_eq!(document["findings"][0]["subject"], "billing");
}

#[test]
fn publishing_to_a_missing_topic_exits_with_4() {
    wharf()
        .args([
            "--url",
            "mem://usage",
            "publish",
            "--topic",
            "orders",
            "hello",
        ])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("`orders`"));
}

#[test]
fn publish_needs_something_to_publish() {
    wharf()
        .args(["--url", "mem://usage", "publish", "--topic", "orders"])
        .assert()
        .code(2);
}

#[test]
fn a_missing_file_is_a_usage_error_that_names_it() {
    wharf()
        .args([
            "--url",
            "mem://usage",
            "publish",
            "-t",
            "orders",
            "--file",
            "/no/such/file",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/no/such/file"));
}

#[test]
fn purge_without_a_terminal_needs_yes() {
    wharf()
        .args(["--url", "mem://usage", "dlq", "purge", "-s", "billing"])
        .write_stdin("y\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--yes"));
}

#[test]
fn the_subscription_comes_from_the_config_file() {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(
        file.path(),
        "url = \"mem://from-config\"\nsubscription = \"configured\"\n",
    )
    .expect("write the settings");

    wharf()
        .arg("--config")
        .arg(file.path())
        .args(["dlq", "count"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("`configured`"));
}

#[test]
fn no_subscription_anywhere_is_a_usage_error() {
    wharf()
        .args(["--url", "mem://usage", "dlq", "count"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("WHARF_SUBSCRIPTION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_exits_with_5_and_never_shows_the_password() {
    // Port 9 (discard) has no broker listening.
    let url = "amqp://app:hunter2-secret@127.0.0.1:9/%2f";

    let run = wharf_with(Some(url), &["stats", "-s", "billing"], None).await;

    run.expect_code(5);
    let printed = format!("{}{}", run.stdout(), run.stderr());
    assert!(!printed.contains("hunter2-secret"), "{printed}");
    assert!(printed.contains("next:"), "{printed}");
}
