//! `wharf dlq`: the dead letters of a subscription: look at them, count them, redrive
//! them back onto the subscription, or purge them.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use wharf::Figure;
use wharf::operations::{RedriveOptions, RedriveReport, redrive};

use crate::context::Context;
use crate::exit::{Exit, Failure};
use crate::messages::{MessageView, ShowArgs, print_text};
use crate::output::Unknowns;
use crate::parse;

const EXAMPLES: &str = "\
Examples:
  wharf dlq peek --subscription billing -n 5
  wharf dlq count --subscription billing
  wharf dlq redrive --subscription billing --where tenant=acme --rate 50/s
  wharf dlq redrive --subscription billing --reason-contains timeout --limit 100
  wharf dlq purge --subscription billing --yes

`count` exits with 6 (unsupported) when the broker cannot say how many dead letters there
are, printing the reason. A redriven message is published again with its payload, ordering
key and original attributes, `wharf-redrive-count` one higher, and starts again at
attempt 1; its dead letter is removed only after the broker confirmed the publish. It
reaches only this subscription, except on Pub/Sub, where it goes to the subscription's
topic and so to every subscription of it. Dead letters that another subscription sharing
the dead-letter destination put there stay, unless --any-source is given. A purge removes
everything in the dead-letter destination, whichever subscription it came from.";

/// Works with a subscription's dead letters.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) action: Action,
}

/// What to do with the dead letters.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// Shows dead letters without removing them.
    Peek(PeekArgs),
    /// Prints how many dead letters the subscription has.
    Count(Target),
    /// Moves dead letters back onto their subscription, all or those that match.
    Redrive(RedriveArgs),
    /// Removes every dead letter, after asking (or with --yes).
    Purge(PurgeArgs),
}

impl Action {
    /// The subscription the action names, if any.
    pub(crate) fn subscription(&self) -> Option<&str> {
        let target = match self {
            Self::Peek(args) => &args.target,
            Self::Count(target) => target,
            Self::Redrive(args) => &args.target,
            Self::Purge(args) => &args.target,
        };
        target.subscription.as_deref()
    }
}

/// Whose dead letters.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The subscription; default: the settings' subscription.
    #[arg(long, short = 's', value_name = "NAME")]
    subscription: Option<String>,
}

/// Options of `dlq peek`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeekArgs {
    #[command(flatten)]
    target: Target,

    /// Shows at most this many dead letters.
    #[arg(long, short = 'n', default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    #[command(flatten)]
    show: ShowArgs,
}

/// Options of `dlq redrive`.
#[derive(Debug, clap::Args)]
pub(crate) struct RedriveArgs {
    #[command(flatten)]
    target: Target,

    /// Redrives only dead letters whose attribute KEY is VALUE; repeat to require more.
    #[arg(long = "where", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    filters: Vec<(String, String)>,

    /// Redrives only dead letters whose dead-letter reason contains TEXT.
    #[arg(long, value_name = "TEXT")]
    reason_contains: Option<String>,

    /// Redrives at most this many messages a second, e.g. 50/s or 600/m.
    #[arg(long, value_name = "N/s", value_parser = parse::rate)]
    rate: Option<std::num::NonZeroU32>,

    /// Stops after redriving this many.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,

    /// Ends once no dead letter arrived for this long.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse::duration)]
    idle: Duration,

    /// Also redrives dead letters that another subscription sharing the dead-letter
    /// destination put there (by default they stay).
    #[arg(long)]
    any_source: bool,
}

/// Options of `dlq purge`.
#[derive(Debug, clap::Args)]
pub(crate) struct PurgeArgs {
    #[command(flatten)]
    target: Target,

    /// Purges without asking. Needed when standard input is not a terminal.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Runs the dead-letter action.
pub(crate) async fn run(ctx: &Context, args: &Args) -> Result<Exit, Failure> {
    let subscription = ctx.subscription(args.action.subscription())?;
    match &args.action {
        Action::Peek(peek_args) => peek(ctx, &subscription, peek_args).await,
        Action::Count(_) => count(ctx, &subscription).await,
        Action::Redrive(redrive_args) => {
            redrive_dead_letters(ctx, &subscription, redrive_args).await
        }
        Action::Purge(purge_args) => purge(ctx, &subscription, purge_args).await,
    }
}

/// What `dlq peek --json` prints.
#[derive(Debug, Serialize)]
struct PeekReport {
    subscription: String,
    messages: Vec<MessageView>,
}

async fn peek(ctx: &Context, subscription: &str, args: &PeekArgs) -> Result<Exit, Failure> {
    if args.show.raw && ctx.out.is_json() {
        return Err(Failure::usage(
            "--raw and --json both say how to write messages",
            "keep one of them",
        ));
    }
    let peeked = ctx
        .backend
        .peek_dead_letters(subscription, args.count as usize)
        .await
        .map_err(Failure::during(format!(
            "peeking at the dead letters of `{subscription}`"
        )))?;

    if ctx.out.is_json() {
        let messages = peeked
            .iter()
            .map(|m| MessageView::new(m, args.show.binary))
            .collect();
        ctx.out.json(&PeekReport {
            subscription: subscription.to_owned(),
            messages,
        })?;
        return Ok(Exit::Success);
    }
    print_text(&ctx.out, &peeked, 1, &args.show)?;
    ctx.out.note(&format!(
        "{} dead letter(s) of `{subscription}` shown; they stay where they are",
        peeked.len()
    ));
    Ok(Exit::Success)
}

/// What `dlq count --json` and `dlq purge --json` print: one figure, `null` with the
/// reason in `unknown` where the broker does not say.
#[derive(Debug, Serialize)]
struct CountReport {
    subscription: String,
    #[serde(flatten)]
    figure: Map<String, Value>,
    unknown: Map<String, Value>,
}

impl CountReport {
    fn new(subscription: &str, name: &str, figure: &Figure<u64>) -> Self {
        let mut unknowns = Unknowns::default();
        let value = unknowns.value(name, figure);
        Self {
            subscription: subscription.to_owned(),
            figure: Map::from_iter([(name.to_owned(), value)]),
            unknown: unknowns.into_map(),
        }
    }
}

async fn count(ctx: &Context, subscription: &str) -> Result<Exit, Failure> {
    let stats = ctx
        .backend
        .stats(subscription)
        .await
        .map_err(Failure::during(format!(
            "reading the stats of `{subscription}`"
        )))?;

    let figure = &stats.dead_lettered;
    if ctx.out.is_json() {
        ctx.out
            .json(&CountReport::new(subscription, "dead_lettered", figure))?;
    } else if let Figure::Known(count) = figure {
        ctx.out.result(&count.to_string())?;
    }
    match figure {
        Figure::Known(_) => Ok(Exit::Success),
        Figure::Unknown(reason) => Err(Failure::new(
            Exit::Unsupported,
            format!(
                "the broker does not report how many dead letters `{subscription}` has: {reason}"
            ),
            format!(
                "`wharf dlq peek --subscription {subscription} -n 100` shows up to 100 of them"
            ),
        )),
    }
}

/// What `dlq redrive --json` prints.
#[derive(Debug, Serialize)]
struct RedriveSummary {
    subscription: String,
    examined: u64,
    redriven: u64,
    skipped: u64,
    other_source: u64,
    failed: u64,
    not_removed: u64,
    unexamined: Option<u64>,
    errors: Vec<String>,
}

async fn redrive_dead_letters(
    ctx: &Context,
    subscription: &str,
    args: &RedriveArgs,
) -> Result<Exit, Failure> {
    let options = options(args);
    if ctx.backend.capabilities().backend == "pubsub" {
        ctx.out.note(
            "note: Pub/Sub cannot publish to one subscription, so redriven messages go to the \
             subscription's topic and every subscription of that topic receives them",
        );
    }
    let total = dead_letter_count(ctx, subscription).await;
    let bar = ctx.out.progress(total);
    bar.set_message("examined");

    let progress = {
        let bar = bar.clone();
        move |report: &RedriveReport| {
            bar.set_position(report.examined);
            bar.set_message(format!(
                "examined: {} redriven, {} skipped, {} failed",
                report.redriven, report.skipped, report.failed
            ));
        }
    };
    let result = redrive(ctx.backend.as_ref(), subscription, &options, progress).await;
    bar.finish_and_clear();
    let report = result.map_err(Failure::during(format!(
        "redriving the dead letters of `{subscription}`"
    )))?;

    summarise(ctx, subscription, &report)?;
    if report.not_removed > 0 {
        return Err(Failure::new(
            Exit::Failed,
            format!(
                "{} dead letter(s) of `{subscription}` were redriven but could not be removed \
                 from the dead-letter destination",
                report.not_removed
            ),
            "they are now in both places: do not redrive again; peek at the dead letters \
             and purge them once the redriven copies are processed",
        ));
    }
    if report.failed == 0 {
        return Ok(Exit::Success);
    }
    Err(Failure::new(
        Exit::Failed,
        format!(
            "{} dead letter(s) of `{subscription}` could not be redriven: {}",
            report.failed,
            report.errors.first().map_or("", String::as_str)
        ),
        "they are still in the dead-letter destination; fix the cause and run the redrive \
         again (it redrives only what is left)",
    ))
}

fn options(args: &RedriveArgs) -> RedriveOptions {
    let mut options = RedriveOptions::default().idle(args.idle);
    for (key, value) in &args.filters {
        options = options.with_attribute(key.clone(), value.clone());
    }
    if let Some(text) = &args.reason_contains {
        options = options.reason_contains(text.clone());
    }
    if let Some(rate) = args.rate {
        options = options.rate(rate);
    }
    if let Some(limit) = args.limit {
        options = options.limit(limit);
    }
    if args.any_source {
        options = options.any_source();
    }
    options
}

/// How many dead letters there are, for the length of the progress bar; `None` where
/// the broker does not say (the bar is then a spinner).
async fn dead_letter_count(ctx: &Context, subscription: &str) -> Option<u64> {
    let stats = ctx.backend.stats(subscription).await.ok()?;
    stats.dead_lettered.known().copied()
}

fn summarise(ctx: &Context, subscription: &str, report: &RedriveReport) -> Result<(), Failure> {
    if ctx.out.is_json() {
        return ctx.out.json(&RedriveSummary {
            subscription: subscription.to_owned(),
            examined: report.examined,
            redriven: report.redriven,
            skipped: report.skipped,
            other_source: report.other_source,
            failed: report.failed,
            not_removed: report.not_removed,
            unexamined: report.unexamined,
            errors: report.errors.clone(),
        });
    }
    ctx.out.note(&format!(
        "redrove {} dead letter(s) back onto `{subscription}`: {} examined, {} skipped by \
         the filters and {} from other subscriptions (left in place), {} failed",
        report.redriven, report.examined, report.skipped, report.other_source, report.failed
    ));
    if report.not_removed > 0 {
        ctx.out.note(&format!(
            "  {} were published back but are still in the dead-letter destination too: \
             do not redrive again; check them with `wharf dlq peek` and purge them",
            report.not_removed
        ));
    }
    if let Some(left) = report.unexamined.filter(|&left| left > 0) {
        ctx.out.note(&format!(
            "  {left} dead letter(s) were not looked at (a consumer holds only so many \
             skipped ones at once): run the redrive again"
        ));
    }
    for error in &report.errors {
        ctx.out.note(&format!("  failed: {error}"));
    }
    Ok(())
}

async fn purge(ctx: &Context, subscription: &str, args: &PurgeArgs) -> Result<Exit, Failure> {
    if !args.yes {
        confirm(ctx, subscription).await?;
    }
    let purged = ctx
        .backend
        .purge_dead_letters(subscription)
        .await
        .map_err(Failure::during(format!(
            "purging the dead letters of `{subscription}`"
        )))?;

    if ctx.out.is_json() {
        ctx.out
            .json(&CountReport::new(subscription, "purged", &purged))?;
        return Ok(Exit::Success);
    }
    ctx.out.note(&match &purged {
        Figure::Known(count) => format!("purged {count} dead letter(s) of `{subscription}`"),
        Figure::Unknown(reason) => format!(
            "purged the dead letters of `{subscription}`; the broker does not say how many \
             ({reason})"
        ),
    });
    Ok(Exit::Success)
}

/// Asks on the terminal before purging; refuses when nobody can be asked.
async fn confirm(ctx: &Context, subscription: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            format!("refusing to purge the dead letters of `{subscription}` without confirmation"),
            "standard input is not a terminal to ask on; pass --yes to purge anyway",
        ));
    }
    let how_many = match dead_letter_count(ctx, subscription).await {
        Some(count) => format!("all {count} dead letter(s)"),
        None => "every dead letter".to_owned(),
    };
    eprint!("Remove {how_many} of `{subscription}`? They cannot be recovered. [y/N] ");
    let _ = std::io::stderr().flush();

    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::io("reading the answer", &e))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        return Ok(());
    }
    Err(Failure::new(
        Exit::Failed,
        "purge cancelled; nothing was removed",
        "answer y to purge, or pass --yes",
    ))
}
