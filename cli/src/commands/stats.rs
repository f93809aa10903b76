//! `wharf stats`: one row of backlog figures per subscription, with the reason for each
//! figure the broker cannot report.

use serde::Serialize;
use serde_json::{Map, Value};
use wharf::SubscriptionStats;

use crate::context::Context;
use crate::exit::{Exit, Failure};
use crate::output::{Unknowns, age_cell, cell, table};

const EXAMPLES: &str = "\
Examples:
  wharf stats --subscription billing --subscription shipping
  wharf stats --json | jq '.subscriptions[0].backlog'

Backlog is ready + in flight + delayed (on Kafka: consumer lag + delayed). A figure the
broker cannot report is shown as – and its reason listed under the table; in JSON it is
null, with the reason in the `unknown` map. Figures are the broker's and may trail by a
few seconds: RabbitMQ's management plugin samples every 5 s, SQS counts are approximate,
Kafka's lag moves when offsets are committed (every 500 ms).";

/// Shows backlog figures.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct Args {
    /// A subscription; repeat for more. Default: the settings' subscription.
    #[arg(long = "subscription", short = 's', value_name = "NAME")]
    pub(crate) subscriptions: Vec<String>,
}

/// What `stats --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    subscriptions: Vec<Row>,
}

/// One subscription's figures; `null` where unknown, with the reason in `unknown`.
#[derive(Debug, Serialize)]
struct Row {
    subscription: String,
    ready: Value,
    in_flight: Value,
    delayed: Value,
    dead_lettered: Value,
    /// `null` both when unknown and when there is no message; `unknown` tells which.
    oldest_age_seconds: Value,
    consumer_lag: Value,
    backlog: Value,
    unknown: Map<String, Value>,
}

impl Row {
    fn new(stats: &SubscriptionStats) -> Self {
        let mut unknowns = Unknowns::default();
        let age = stats
            .oldest_age
            .clone()
            .map(|age| age.map(|age| age.as_secs_f64()));
        Self {
            subscription: stats.subscription.clone(),
            ready: unknowns.value("ready", &stats.ready),
            in_flight: unknowns.value("in_flight", &stats.in_flight),
            delayed: unknowns.value("delayed", &stats.delayed),
            dead_lettered: unknowns.value("dead_lettered", &stats.dead_lettered),
            oldest_age_seconds: unknowns.value("oldest_age_seconds", &age),
            consumer_lag: unknowns.value("consumer_lag", &stats.consumer_lag),
            backlog: unknowns.value("backlog", &stats.backlog()),
            unknown: unknowns.into_map(),
        }
    }
}

/// Reads and shows the figures of each subscription asked for.
pub(crate) async fn run(ctx: &Context, args: &Args) -> Result<Exit, Failure> {
    let names = ctx.subscriptions(&args.subscriptions)?;

    let mut all = Vec::with_capacity(names.len());
    for name in &names {
        let stats = ctx
            .backend
            .stats(name)
            .await
            .map_err(Failure::during(format!("reading the stats of `{name}`")))?;
        all.push(stats);
    }

    if ctx.out.is_json() {
        let subscriptions = all.iter().map(Row::new).collect();
        ctx.out.json(&Report { subscriptions })?;
    } else {
        ctx.out.result(&text(&all))?;
    }
    Ok(Exit::Success)
}

/// The table, then the reasons of unknown figures.
fn text(all: &[SubscriptionStats]) -> String {
    let mut table = table(&[
        "Subscription",
        "Ready",
        "In flight",
        "Delayed",
        "Dead-lettered",
        "Oldest",
        "Lag",
        "Backlog",
    ]);
    for stats in all {
        table.add_row(vec![
            stats.subscription.clone(),
            cell(&stats.ready),
            cell(&stats.in_flight),
            cell(&stats.delayed),
            cell(&stats.dead_lettered),
            age_cell(&stats.oldest_age),
            cell(&stats.consumer_lag),
            cell(&stats.backlog()),
        ]);
    }

    let mut text = table.to_string();
    let reasons: Vec<String> = all.iter().flat_map(reasons).collect();
    if !reasons.is_empty() {
        text.push_str("\n\nNot reported (–):\n");
        text.push_str(&reasons.join("\n"));
    }
    text
}

/// One line per unknown figure of `stats`, the backlog included.
fn reasons(stats: &SubscriptionStats) -> Vec<String> {
    let backlog = stats.backlog();
    let backlog = backlog.reason().map(|reason| ("backlog", reason));
    stats
        .unknown_figures()
        .into_iter()
        .chain(backlog)
        .map(|(figure, reason)| format!("  {}: {figure}: {reason}", stats.subscription))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wharf::Figure;

    use super::*;

    fn sample() -> SubscriptionStats {
        SubscriptionStats {
            ready: Figure::Known(3),
            in_flight: Figure::Known(1),
            delayed: Figure::Known(0),
            dead_lettered: Figure::Known(2),
            oldest_age: Figure::Known(Some(Duration::from_millis(1500))),
            ..SubscriptionStats::unknown("billing", "a queue is not a log")
        }
    }

    #[test]
    fn json_rows_hold_numbers_nulls_and_reasons() {
        let row = serde_json::to_value(Row::new(&sample())).unwrap();

        assert_eq!(row["ready"], 3);
        assert_eq!(row["backlog"], 4);
        assert_eq!(row["oldest_age_seconds"], 1.5);
        assert_eq!(row["consumer_lag"], Value::Null);
        assert_eq!(row["unknown"]["consumer_lag"], "a queue is not a log");
        assert!(row["unknown"].get("backlog").is_none());
    }

    #[test]
    fn the_table_shows_a_dash_and_lists_the_reason() {
        let text = text(&[sample()]);

        assert!(text.contains('–'), "{text}");
        assert!(
            text.contains("billing: consumer_lag: a queue is not a log"),
            "{text}"
        );
    }
}
