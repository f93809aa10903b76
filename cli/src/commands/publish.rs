//! `wharf publish`: sends one message, or one per line, to a topic.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tracing::debug;
use wharf::{Message, PublishError};

use crate::context::Context;
use crate::exit::{Exit, Failure};
use crate::parse;

/// Messages handed to the publisher at once; the publisher splits them into requests
/// that fit the backend, and the progress bar moves after each.
const CHUNK: usize = 500;

/// Most failure messages the summary repeats.
const SHOWN_ERRORS: usize = 5;

const EXAMPLES: &str = "\
Examples:
  wharf publish --topic orders '{\"sku\": \"tea\"}' --attribute tenant=acme
  wharf publish --topic orders --file order.json --ordering-key customer-7
  cat orders.jsonl | wharf publish --topic orders --lines -
  wharf publish --topic reminders --delay 30s 'call back'";

/// Publishes a message from an argument, a file or standard input.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct Args {
    /// The payload; `-` reads it from standard input.
    #[arg(
        value_name = "PAYLOAD",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    payload: Option<String>,

    /// Reads the payload from PATH (`-`: standard input), bytes as they are.
    #[arg(long, short = 'f', value_name = "PATH")]
    file: Option<PathBuf>,

    /// Publishes each line as its own message. Line endings are removed and empty lines
    /// skipped.
    #[arg(long)]
    lines: bool,

    /// An attribute for every message; repeat for more.
    #[arg(
        long = "attribute",
        short = 'a',
        value_name = "KEY=VALUE",
        value_parser = parse::key_value
    )]
    attributes: Vec<(String, String)>,

    /// Messages with one ordering key are delivered in order, where the backend can.
    #[arg(long, value_name = "KEY")]
    ordering_key: Option<String>,

    /// Keeps the messages from consumers for this long, e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    delay: Option<Duration>,

    /// The topic; default: the settings' topic.
    #[arg(long, short = 't', value_name = "NAME")]
    topic: Option<String>,
}

/// What `publish --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    topic: String,
    published: u64,
    failed: u64,
    bytes: u64,
    errors: Vec<String>,
}

/// Reads the input before anything connects, so a missing file costs no connection.
pub(crate) fn read_input(args: &Args) -> Result<Vec<u8>, Failure> {
    match (&args.payload, &args.file) {
        (Some(text), _) if text == "-" => read_stdin(),
        (Some(text), _) => Ok(text.clone().into_bytes()),
        (None, Some(path)) if path == Path::new("-") => read_stdin(),
        (None, Some(path)) => std::fs::read(path).map_err(|e| unreadable(path, &e)),
        (None, None) => Err(Failure::usage(
            "nothing to publish",
            "give the payload as an argument, `--file PATH`, or `-` to read standard input",
        )),
    }
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| Failure::io("reading standard input", &e))?;
    Ok(input)
}

/// Publishes `input` as `args` say.
pub(crate) async fn run(ctx: &Context, args: &Args, input: Vec<u8>) -> Result<Exit, Failure> {
    let topic = ctx.topic(args.topic.as_deref())?;
    let messages = messages(args, input);
    let publisher = ctx
        .backend
        .publisher(&topic)
        .await
        .map_err(Failure::during(format!("opening topic `{topic}`")))?;

    let (report, first_error) = publish(ctx, &topic, &publisher, messages).await;
    if let Err(error) = publisher.close().await {
        debug!(topic, %error, "closing the publisher failed");
    }

    print(ctx, &report)?;
    match first_error {
        None => Ok(Exit::Success),
        Some(error) => Err(Failure::wharf(
            format!(
                "{} of {} messages to `{topic}` failed",
                report.failed,
                report.failed + report.published
            ),
            &error,
        )),
    }
}

/// The messages to publish: one, or one per non-empty line.
fn messages(args: &Args, input: Vec<u8>) -> Vec<Message> {
    let payloads: Vec<Vec<u8>> = if args.lines {
        input
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    } else {
        vec![input]
    };
    payloads
        .into_iter()
        .map(|payload| message(args, payload))
        .collect()
}

fn message(args: &Args, payload: Vec<u8>) -> Message {
    let mut message = Message::new(payload);
    for (key, value) in &args.attributes {
        message = message.with_attribute(key.clone(), value.clone());
    }
    if let Some(key) = &args.ordering_key {
        message = message.with_ordering_key(key.clone());
    }
    if let Some(delay) = args.delay {
        message = message.with_delay(delay);
    }
    message
}

/// Publishes in chunks, moving the progress bar after each.
async fn publish(
    ctx: &Context,
    topic: &str,
    publisher: &wharf::Publisher,
    mut messages: Vec<Message>,
) -> (Report, Option<wharf::Error>) {
    let total = messages.len() as u64;
    let progress = (total > 1).then(|| ctx.out.progress(Some(total)));
    let mut report = Report {
        topic: topic.to_owned(),
        published: 0,
        failed: 0,
        bytes: 0,
        errors: Vec::new(),
    };
    let mut first_error = None;

    while !messages.is_empty() {
        let rest = messages.split_off(messages.len().min(CHUNK));
        let chunk = std::mem::replace(&mut messages, rest);
        let sizes: Vec<u64> = chunk.iter().map(|m| m.payload().len() as u64).collect();

        for (result, size) in publisher.publish_batch(chunk).await.into_iter().zip(sizes) {
            match result {
                Ok(()) => {
                    report.published += 1;
                    report.bytes += size;
                }
                Err(failed) => record_failure(&mut report, &mut first_error, failed),
            }
        }
        if let Some(bar) = &progress {
            bar.set_position(report.published + report.failed);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    (report, first_error)
}

fn record_failure(report: &mut Report, first: &mut Option<wharf::Error>, failed: PublishError) {
    report.failed += 1;
    if report.errors.len() < SHOWN_ERRORS {
        report.errors.push(failed.error.to_string());
    }
    first.get_or_insert(failed.error);
}

fn print(ctx: &Context, report: &Report) -> Result<(), Failure> {
    if ctx.out.is_json() {
        return ctx.out.json(report);
    }
    let plural = if report.published == 1 { "" } else { "s" };
    ctx.out.note(&format!(
        "published {} message{plural} ({} bytes) to `{}`",
        report.published, report.bytes, report.topic
    ));
    for error in &report.errors {
        ctx.out.note(&format!("  failed: {error}"));
    }
    Ok(())
}

/// A --file that cannot be read is the caller's to fix: a usage error, not the broker's.
fn unreadable(path: &std::path::Path, error: &std::io::Error) -> Failure {
    Failure::new(
        Exit::Usage,
        format!("reading {}: {error}", path.display()),
        "check that the path exists and is readable, or pipe the input through `-`",
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Args {
        Command::parse_from(std::iter::once("publish").chain(argv.iter().copied())).args
    }

    #[test]
    fn lines_become_messages_without_endings_or_blank_lines() {
        let args = args(&["--lines", "-", "-a", "tenant=acme"]);

        let messages = messages(&args, b"one\r\ntwo\n\nthree".to_vec());

        let payloads: Vec<_> = messages.iter().map(|m| m.payload().to_vec()).collect();
        assert_eq!(
            payloads,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert!(messages.iter().all(|m| m.attributes()["tenant"] == "acme"));
    }

    #[test]
    fn one_message_keeps_its_bytes_and_options() {
        let args = args(&["x", "--ordering-key", "k", "--delay", "5s"]);

        let messages = messages(&args, b"a\nb\n".to_vec());

        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].payload().as_ref(), b"a\nb\n");
        assert_eq!(messages[0].ordering_key(), Some("k"));
        assert_eq!(messages[0].delay(), Some(Duration::from_secs(5)));
    }
}
