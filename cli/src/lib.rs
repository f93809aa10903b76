//! `wharf`, the command line for operating queues on any wharf backend: publish
//! messages, look at what a subscription holds, read its backlog figures, peek at,
//! count, redrive and purge its dead letters, and check its setup against the
//! application's retry policy.
//!
//! ```sh
//! export WHARF_URL='amqp://guest:guest@127.0.0.1:5672/%2f'
//! wharf publish --topic orders '{"sku": "tea"}' --attribute tenant=acme
//! cat orders.jsonl | wharf publish --topic orders --lines -
//! wharf tail --subscription billing             # peek: nothing is consumed
//! wharf stats --subscription billing --json
//! wharf dlq redrive --subscription billing --where tenant=acme --rate 50/s
//! wharf doctor --subscription billing --topic orders --max-attempts 5
//! ```
//!
//! # Commands
//!
//! - `publish [PAYLOAD | -] [--file PATH] [--lines]`: one message, or one per line, with
//!   `--attribute k=v`, `--ordering-key` and `--delay`.
//! - `tail [--peek | --consume] [--dead-letters]`: up to `--count` messages; `--peek`, the
//!   default, releases each at once with a zero-delay nack, so nothing is consumed.
//! - `stats [--subscription S]...`: ready, in flight, delayed, dead-lettered, oldest age,
//!   consumer lag and backlog, one row per subscription.
//! - `dlq peek | count | redrive | purge`: look at, count, move back (filtered and
//!   rate-limited) or remove the dead letters.
//! - `doctor`: the broker's setup against the retry attempts, the handler timeout, the
//!   lease and the dead-letter destination.
//!
//! # Settings
//!
//! The backend and the default topic and subscription come from the `wharf` crate's
//! `Settings`: defaults, then the `--config` TOML file (or `WHARF_CONFIG`), then `WHARF_*`
//! variables, then `--url` (or `WHARF_URL`) with its query options. `doctor` checks
//! against the settings' `retry.max_attempts`, `lease` and `dead_letter`, which its flags
//! override. A URL's password never appears in the output: URLs are shown redacted, and
//! every error is scrubbed of the passwords and secret options it was given.
//!
//! # Output
//!
//! Results go to standard output: text and tables by default, or one JSON document with
//! `--json` (stable field names; a figure the broker cannot report is `null`, with its
//! reason in an `unknown` map; an error is `{"error": {"exit_code", "kind", "message",
//! "hint"}}`). Notes, summaries and progress bars go to standard error; progress bars
//! only when it is a terminal, and `--quiet` silences all three. Payloads are shown as
//! text when they are printable UTF-8, otherwise as base64 (or `--binary hex`); `--raw`
//! writes payload bytes exactly.
//!
//! # Exit codes
//!
//! | Code | Meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the operation failed: the broker refused it, or some messages failed |
//! | 2 | usage or configuration error, or a `purge` nobody confirmed (no terminal, no `--yes`) |
//! | 3 | `doctor` found at least one error |
//! | 4 | not found: the topic or subscription does not exist |
//! | 5 | the broker is unreachable, timed out or throttled: trying again later may help |
//! | 6 | unsupported: the backend cannot do this, or cannot report the figure (`dlq count`) |
//!
//! Every error message names what was being done and ends with what to do next.

mod cli;
mod commands;
mod context;
mod exit;
mod messages;
mod output;
mod parse;
mod secrets;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::context::Context;
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::secrets::Secrets;

/// How long background work of the broker clients may take to wind down at exit.
const SHUTDOWN: Duration = Duration::from_secs(2);

/// Runs the command line of this process and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.global.json, cli.global.quiet);
    init_tracing(cli.global.quiet);

    let mut secrets = Secrets::default();
    if let Some(url) = &cli.global.url {
        secrets.add_url(url);
    }
    let exit = match run(&cli, out, &mut secrets) {
        Ok(exit) => exit,
        Err(failure) => report(&out, &secrets, &failure),
    };
    exit.into()
}

/// Logs to standard error at the level WHARF_LOG asks (default: warnings).
///
/// lapin logs every closed channel as an error, also the ones wharf expects and turns
/// into a clear message itself (a missing queue), so it is silenced unless asked for.
fn init_tracing(quiet: bool) {
    let default = if quiet {
        "error,lapin=off"
    } else {
        "warn,lapin=off"
    };
    // A malformed WHARF_LOG falls back to the default rather than stopping the command.
    let filter = std::env::var("WHARF_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run(cli: &Cli, out: Output, secrets: &mut Secrets) -> Result<Exit, Failure> {
    let global = &cli.global;
    let settings =
        context::load_settings(global.config.as_deref(), global.url.as_deref(), secrets)?;
    secrets.add_url(&settings.url);
    context::require_subscription(&settings, cli.command.subscription()).or_else(|failure| {
        match &cli.command {
            Command::Publish(_) => Ok(()),
            _ => Err(failure),
        }
    })?;
    // Read before connecting, so a missing file costs no connection.
    let input = match &cli.command {
        Command::Publish(args) => Some(commands::publish::read_input(args)?),
        _ => None,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::io("starting the async runtime", &e))?;
    let exit = runtime.block_on(async {
        let ctx = Context::connect(settings, out).await?;
        dispatch(&ctx, &cli.command, input).await
    });
    runtime.shutdown_timeout(SHUTDOWN);
    exit
}

async fn dispatch(
    ctx: &Context,
    command: &Command,
    input: Option<Vec<u8>>,
) -> Result<Exit, Failure> {
    match command {
        Command::Publish(args) => {
            commands::publish::run(ctx, args, input.unwrap_or_default()).await
        }
        Command::Tail(args) => commands::tail::run(ctx, args).await,
        Command::Stats(args) => commands::stats::run(ctx, args).await,
        Command::Dlq(args) => commands::dlq::run(ctx, args).await,
        Command::Doctor(args) => commands::doctor::run(ctx, args).await,
    }
}

/// Prints `failure` without secrets: on standard error, and with `--json` also as the
/// document on standard output unless the command already wrote one.
fn report(out: &Output, secrets: &Secrets, failure: &Failure) -> Exit {
    let message = secrets.scrub(&failure.message);
    let hint = secrets.scrub(&failure.hint);
    eprintln!("error: {message}\n  next: {hint}");

    if out.is_json() && !out.wrote_document() {
        let document = json!({
            "error": {
                "exit_code": failure.exit as u8,
                "kind": failure.exit.name(),
                "message": message,
                "hint": hint,
            }
        });
        let _ = out.json(&document);
    }
    failure.exit
}
