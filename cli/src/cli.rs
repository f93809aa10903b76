//! The command line: global options and the commands, as clap reads them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{dlq, doctor, publish, stats, tail};

const ABOUT: &str = "Publish, tail, inspect and repair queues on any wharf backend.";

const AFTER_HELP: &str = "\
Settings come from defaults, then the --config file, then WHARF_* variables, then --url
and its query options (e.g. ?subscription=billing&max_attempts=8), as the wharf crate
reads them. Topic and subscription default to the settings' `topic` and `subscription`.

Examples:
  export WHARF_URL=amqp://guest:guest@127.0.0.1:5672/%2f
  wharf publish --topic orders '{\"sku\": \"tea\"}' --attribute tenant=acme
  wharf tail --subscription billing
  wharf stats --subscription billing --json
  wharf dlq redrive --subscription billing --where tenant=acme --rate 50/s
  wharf doctor --subscription billing --topic orders --max-attempts 5

Exit codes:
  0  success
  1  the operation failed: the broker refused it, some messages failed, or a purge was
     not confirmed
  2  usage or configuration error: a bad option, no topic or subscription given, or a
     purge without a terminal to confirm it and without --yes
  3  doctor found at least one error
  4  not found: the topic or subscription does not exist
  5  the broker is unreachable, timed out or throttled: trying again later may help
  6  unsupported: the backend cannot do this, or cannot report that figure

Logs go to standard error; WHARF_LOG sets their level (e.g. WHARF_LOG=debug).";

/// The whole command line.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about = ABOUT, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Global {
    /// The backend URL: mem://NAME, amqp://USER:PASS@HOST:5672/%2f, kafka://HOST:9092,
    /// sqs://[KEY:SECRET@]HOST:PORT?region=R, pubsub://PROJECT[?emulator=HOST:PORT].
    #[arg(
        long,
        env = "WHARF_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) url: Option<String>,

    /// A TOML settings file (keys as in the wharf crate's `Settings`).
    #[arg(long, env = "WHARF_CONFIG", global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Writes the result as one JSON document on standard output.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Silences notes, summaries and progress bars; results and errors still show.
    #[arg(long, short = 'q', global = true)]
    pub(crate) quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Publishes a message, or one per line, to a topic.
    Publish(publish::Args),
    /// Shows the messages of a subscription (or of its dead letters), peeking or consuming.
    Tail(tail::Args),
    /// Shows backlog figures: ready, in flight, delayed, dead-lettered, oldest, lag.
    Stats(stats::Args),
    /// Peeks at, counts, redrives or purges a subscription's dead letters.
    Dlq(dlq::Args),
    /// Checks a subscription's setup against the application's retry and lease policy.
    Doctor(doctor::Args),
}

impl Command {
    /// The subscription the command names on its command line, if it reads one.
    pub(crate) fn subscription(&self) -> Option<&str> {
        match self {
            Self::Publish(_) => None,
            Self::Tail(args) => args.subscription.as_deref(),
            Self::Stats(args) => args.subscriptions.first().map(String::as_str),
            Self::Dlq(args) => args.action.subscription(),
            Self::Doctor(args) => args.subscription.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
