//! `wharf tail`: shows the messages of a subscription or of its dead-letter
//! destination, leaving them in place (`--peek`, the default) or acking them
//! (`--consume`).

use std::time::Duration;

use serde::Serialize;
use tracing::debug;
use wharf::operations::dead_letters::peek_by_receiving;
use wharf::{Delivery, Received, Subscriber};

use crate::context::Context;
use crate::exit::{Exit, Failure};
use crate::messages::{MessageView, ShowArgs, print_text};
use crate::parse;

const EXAMPLES: &str = "\
Examples:
  wharf tail --subscription billing                 # the next 10, left in place
  wharf tail --subscription billing --consume -n 1  # take one off the queue
  wharf tail --subscription billing --dead-letters  # what failed, and why
  wharf tail -s billing -n 1 --raw > payload.bin     # one payload's bytes

--peek receives each message and releases it at once with a zero-delay nack: nothing is
consumed, but each peeked message counts one more delivery attempt on the broker, so
peeking often can push a message past a delivery limit into the dead-letter destination.
With --dead-letters, --peek uses the backend's dead-letter peek: memory, RabbitMQ and
Kafka leave the dead letters untouched; SQS and Pub/Sub receive and release them too,
which raises their receive count. Kafka has no way to hand a record back, so on Kafka
only the dead letters can be peeked.";

/// Reads messages of a subscription.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct Args {
    /// The subscription; default: the settings' subscription.
    #[arg(long, short = 's', value_name = "NAME")]
    pub(crate) subscription: Option<String>,

    /// Leaves the messages where they are (the default).
    #[arg(long, conflicts_with = "consume")]
    peek: bool,

    /// Acks each message once it is shown, removing it.
    #[arg(long)]
    consume: bool,

    /// Shows at most this many messages.
    #[arg(long, short = 'n', default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    /// Stops once no message arrived for this long.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse::duration)]
    wait: Duration,

    /// Reads the subscription's dead-letter destination instead.
    #[arg(long)]
    dead_letters: bool,

    #[command(flatten)]
    show: ShowArgs,
}

impl Args {
    /// Whether messages are acked; `--peek` (the default) wins if both were given.
    fn consumes(&self) -> bool {
        self.consume && !self.peek
    }
}

/// What `tail --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    subscription: String,
    /// `subscription` or `dead_letters`.
    source: &'static str,
    /// `peek` or `consume`.
    mode: &'static str,
    messages: Vec<MessageView>,
}

/// Shows the messages `args` ask for.
pub(crate) async fn run(ctx: &Context, args: &Args) -> Result<Exit, Failure> {
    if args.show.raw && ctx.out.is_json() {
        return Err(Failure::usage(
            "--raw and --json both say how to write messages",
            "keep one of them",
        ));
    }
    let subscription = ctx.subscription(args.subscription.as_deref())?;
    let max = args.count as usize;

    let shown = if args.consumes() {
        let subscriber = open(ctx, &subscription, args.dead_letters).await?;
        let consumed = consume(ctx, &subscriber, max, args).await;
        close(&subscriber).await;
        consumed?
    } else {
        let peeked = peek(ctx, &subscription, max, args).await?;
        print(ctx, args, &subscription, &peeked, 1)?;
        peeked.len()
    };

    if !ctx.out.is_json() {
        summarise(ctx, args, &subscription, shown);
    }
    Ok(Exit::Success)
}

/// Says on standard error what was shown, or that nothing arrived.
fn summarise(ctx: &Context, args: &Args, subscription: &str, shown: usize) {
    let verb = if args.consumes() {
        "consumed"
    } else {
        "peeked at"
    };
    let place = if args.dead_letters {
        format!("the dead letters of `{subscription}`")
    } else {
        format!("`{subscription}`")
    };
    ctx.out.note(&match shown {
        0 => format!(
            "no message in {place} arrived within {}",
            crate::output::human(args.wait)
        ),
        n => format!("{verb} {n} message(s) of {place}"),
    });
}

async fn open(
    ctx: &Context,
    subscription: &str,
    dead_letters: bool,
) -> Result<Subscriber, Failure> {
    let opened = if dead_letters {
        ctx.backend.dead_letter_subscriber(subscription).await
    } else {
        ctx.backend.subscriber(subscription).await
    };
    opened.map_err(Failure::during(format!("opening `{subscription}`")))
}

async fn close(subscriber: &Subscriber) {
    if let Err(error) = subscriber.close().await {
        debug!(%error, "closing the subscriber failed");
    }
}

/// Messages left in place: the backend's native peek for dead letters, receive and
/// release for a subscription.
async fn peek(
    ctx: &Context,
    subscription: &str,
    max: usize,
    args: &Args,
) -> Result<Vec<Received>, Failure> {
    let doing = format!("peeking at `{subscription}`");
    if args.dead_letters {
        return ctx
            .backend
            .peek_dead_letters(subscription, max)
            .await
            .map_err(Failure::during(format!(
                "peeking at the dead letters of `{subscription}`"
            )));
    }
    if ctx.backend.capabilities().backend == "kafka" {
        return Err(Failure::new(
            Exit::Unsupported,
            format!(
                "Kafka cannot peek at `{subscription}`: handing a record back re-publishes \
                 it to the retry topic and joins the consumers' group"
            ),
            format!(
                "use `wharf stats -s {subscription}` for the backlog, `wharf tail -s \
                 {subscription} --dead-letters` to peek at what failed, or --consume"
            ),
        ));
    }
    let subscriber = open(ctx, subscription, false).await?;
    let peeked = peek_by_receiving(&subscriber, max, args.wait).await;
    close(&subscriber).await;
    peeked.map_err(Failure::during(doing))
}

/// Receives up to `max` messages, acking each batch once it is shown (in JSON, once the
/// document is written), so a message is removed only after it reached the output.
async fn consume(
    ctx: &Context,
    subscriber: &Subscriber,
    max: usize,
    args: &Args,
) -> Result<usize, Failure> {
    let subscription = subscriber.subscription().to_owned();
    let mut held: Vec<Delivery> = Vec::new();
    let mut shown = 0;

    while shown + held.len() < max {
        let batch = subscriber
            .receive(max - shown - held.len(), args.wait)
            .await
            .map_err(Failure::during(format!("receiving from `{subscription}`")))?;
        if batch.is_empty() {
            break;
        }
        if ctx.out.is_json() {
            held.extend(batch);
            continue;
        }
        let received: Vec<Received> = batch.iter().map(|d| d.received().clone()).collect();
        print(ctx, args, &subscription, &received, shown + 1)?;
        shown += received.len();
        ack(batch).await?;
    }

    if !held.is_empty() || ctx.out.is_json() {
        let received: Vec<Received> = held.iter().map(|d| d.received().clone()).collect();
        print(ctx, args, &subscription, &received, shown + 1)?;
        shown += received.len();
        ack(held).await?;
    }
    Ok(shown)
}

async fn ack(deliveries: Vec<Delivery>) -> Result<(), Failure> {
    let failures: Vec<_> = Delivery::ack_all(deliveries)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    match failures.first() {
        None => Ok(()),
        Some(failed) => Err(Failure::wharf(
            format!(
                "{} message(s) were shown but their ack failed, so the broker will deliver \
                 them again; the first, {}",
                failures.len(),
                failed.delivery.id()
            ),
            &failed.error,
        )),
    }
}

fn print(
    ctx: &Context,
    args: &Args,
    subscription: &str,
    messages: &[Received],
    first_number: usize,
) -> Result<(), Failure> {
    if !ctx.out.is_json() {
        return print_text(&ctx.out, messages, first_number, &args.show);
    }
    ctx.out.json(&Report {
        subscription: subscription.to_owned(),
        source: if args.dead_letters {
            "dead_letters"
        } else {
            "subscription"
        },
        mode: if args.consumes() { "consume" } else { "peek" },
        messages: messages
            .iter()
            .map(|m| MessageView::new(m, args.show.binary))
            .collect(),
    })
}
