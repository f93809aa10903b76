//! The `order-processing` command: `serve` runs the system until Ctrl-C, `demo` fires
//! orders at it and prints a summary. See the crate's README.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use order_processing::config::{Mode, Overrides, Settings};
use order_processing::demo::{self, DemoOptions};
use order_processing::load::Traffic;
use order_processing::progress::ProgressMode;
use order_processing::serve;
use tracing_subscriber::EnvFilter;

/// Order processing on wharf: an HTTP API, a worker pool, a SQLite inventory and a reply
/// queue, on the message backend the configuration names.
#[derive(Debug, Parser)]
#[command(name = "order-processing", version)]
struct Cli {
    /// Configuration file [default: order-processing.toml, if present]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the workers until Ctrl-C
    Serve,
    /// Fire orders at the system over HTTP, wait for them to settle, check and summarise
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Orders to send
    #[arg(long, default_value_t = 10_000)]
    orders: usize,
    /// Orders per second before the flash sale
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// Share of the orders sent in the flash-sale burst
    #[arg(long, default_value_t = 0.4)]
    spike_share: f64,
    /// Requests in flight before the flash sale
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Requests in flight during the flash sale
    #[arg(long, default_value_t = 128)]
    spike_clients: usize,
    /// Share of orders for products that do not exist (poison)
    #[arg(long, default_value_t = 0.01)]
    poison_rate: f64,
    /// Seconds to wait for every order to settle
    #[arg(long, default_value_t = 300)]
    deadline: u64,
    /// How to show progress on stderr
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    progress: Progress,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Progress {
    Auto,
    Bars,
    Lines,
    Quiet,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mode = match cli.command {
        Command::Serve => Mode::Serve,
        Command::Demo(_) => Mode::Demo,
    };
    init_tracing(mode);

    let settings = match Settings::load(mode, cli.config.as_deref(), &cli.overrides) {
        Ok(settings) => settings,
        Err(error) => return fail(&error),
    };
    match cli.command {
        Command::Serve => match serve::serve(&settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        },
        Command::Demo(args) => run_demo(&settings, &args).await,
    }
}

async fn run_demo(settings: &Settings, args: &DemoArgs) -> ExitCode {
    let options = demo_options(settings, args);

    let summary = match demo::run(settings, &options).await {
        Ok(summary) => summary,
        Err(error) => return fail(&error),
    };
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(json) => println!("{json}"),
            Err(error) => return fail(&error),
        }
    } else {
        print!("{}", summary.render());
    }

    if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn demo_options(settings: &Settings, args: &DemoArgs) -> DemoOptions {
    let progress = match args.progress {
        Progress::Auto => ProgressMode::Auto,
        Progress::Bars => ProgressMode::Bars,
        Progress::Lines => ProgressMode::Lines,
        Progress::Quiet => ProgressMode::Quiet,
    };
    DemoOptions {
        traffic: Traffic {
            orders: args.orders,
            spike_share: args.spike_share,
            steady_rate: args.rate,
            steady_clients: args.clients,
            spike_clients: args.spike_clients,
            poison_rate: args.poison_rate,
            seed: settings.seed,
        },
        deadline: Duration::from_secs(args.deadline),
        progress,
    }
}

/// Logs go to stderr: `info` when serving, only warnings during a demo (its progress
/// and summary say the rest). `RUST_LOG` overrides either.
fn init_tracing(mode: Mode) {
    let default = match mode {
        Mode::Serve => "info",
        Mode::Demo => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));

    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints an error with its causes and returns the exit code for errors.
fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("error: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        eprintln!("  caused by: {inner}");
        cause = inner.source();
    }
    ExitCode::from(2)
}
