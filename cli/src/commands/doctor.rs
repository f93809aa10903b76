//! `wharf doctor`: compares the broker's setup of a subscription with the policy the
//! application runs by, and lists each mismatch with its fix.

use std::time::Duration;

use serde::Serialize;
use wharf::{Expectations, Finding, Severity, SubscriptionSpec};

use crate::context::Context;
use crate::exit::{Exit, Failure};
use crate::output::human;
use crate::parse;

const EXAMPLES: &str = "\
Examples:
  wharf doctor --subscription billing --topic orders
  wharf --config wharf.toml doctor --max-attempts 8 --handler-timeout 2m

The policy comes from the settings (retry.max_attempts, lease, dead_letter) unless a flag
overrides it; the handler timeout defaults to the worker's 60s. Exits with 3 when any
finding is an error, 0 when there are only warnings or none.";

/// Checks a subscription's setup.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct Args {
    /// The subscription; default: the settings' subscription.
    #[arg(long, short = 's', value_name = "NAME")]
    pub(crate) subscription: Option<String>,

    /// The topic it reads; default: the settings' topic (on a backend without fan-out,
    /// the subscription itself).
    #[arg(long, short = 't', value_name = "NAME")]
    topic: Option<String>,

    /// Deliveries the application's retry policy makes before dead-lettering.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,

    /// Longest a handler may run.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    handler_timeout: Option<Duration>,

    /// The lease the application expects the subscription to have.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    lease: Option<Duration>,

    /// Where the application expects dead letters; default `<subscription>-dlq`.
    #[arg(long, value_name = "NAME")]
    dead_letter: Option<String>,

    /// The broker's own delivery limit the application expects, as a safety net for
    /// messages that crash consumers (SQS maxReceiveCount, Pub/Sub max_delivery_attempts,
    /// RabbitMQ x-delivery-limit); without it, a missing limit is not an error.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_deliveries: Option<u32>,
}

/// What `doctor --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    subscription: String,
    topic: String,
    expected: Expected,
    findings: Vec<FindingView>,
    errors: usize,
    warnings: usize,
}

/// The policy the setup was checked against.
#[derive(Debug, Serialize)]
struct Expected {
    max_attempts: u32,
    handler_timeout_seconds: f64,
    lease_seconds: f64,
    dead_letter: String,
}

/// One finding; `severity` is `error` or `warning`.
#[derive(Debug, Serialize)]
struct FindingView {
    severity: String,
    subject: String,
    problem: String,
    fix: String,
}

/// Runs the checks and reports them.
pub(crate) async fn run(ctx: &Context, args: &Args) -> Result<Exit, Failure> {
    let subscription = ctx.subscription(args.subscription.as_deref())?;
    let expected = expectations(ctx, args, &subscription)?;

    let findings = ctx
        .backend
        .doctor(&expected)
        .await
        .map_err(Failure::during(format!(
            "checking the setup of `{subscription}`"
        )))?;

    let report = report(&expected, &findings);
    if ctx.out.is_json() {
        ctx.out.json(&report)?;
    } else {
        ctx.out.result(&text(&report))?;
    }
    Ok(if report.errors > 0 {
        Exit::Findings
    } else {
        Exit::Success
    })
}

/// The settings' policy with the flags over it.
fn expectations(ctx: &Context, args: &Args, subscription: &str) -> Result<Expectations, Failure> {
    let settings = &ctx.settings;
    let topic = match ctx.topic(args.topic.as_deref()) {
        Ok(topic) => topic,
        Err(_) if !ctx.backend.capabilities().fan_out => subscription.to_owned(),
        Err(failure) => return Err(failure),
    };
    let mut policy = settings.retry_policy();
    if let Some(attempts) = args.max_attempts {
        policy = policy.max_attempts(attempts);
    }
    let handler_timeout = args
        .handler_timeout
        .unwrap_or(settings.worker_options().handler_timeout);

    let mut spec =
        SubscriptionSpec::new(topic, subscription).lease(args.lease.unwrap_or(settings.lease));
    spec.dead_letter = args
        .dead_letter
        .clone()
        .or_else(|| settings.dead_letter.clone());
    spec.max_delivery_attempts = args.max_deliveries;
    Ok(Expectations::from_policy(spec, &policy, handler_timeout))
}

fn report(expected: &Expectations, findings: &[Finding]) -> Report {
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    Report {
        subscription: expected.subscription().to_owned(),
        topic: expected.spec.topic.clone(),
        expected: Expected {
            max_attempts: expected.max_attempts,
            handler_timeout_seconds: expected.handler_timeout.as_secs_f64(),
            lease_seconds: expected.spec.lease.as_secs_f64(),
            dead_letter: expected.spec.dead_letter_name(),
        },
        findings: findings
            .iter()
            .map(|f| FindingView {
                severity: f.severity.to_string(),
                subject: f.subject.clone(),
                problem: f.problem.clone(),
                fix: f.fix.clone(),
            })
            .collect(),
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
    }
}

fn text(report: &Report) -> String {
    let expected = &report.expected;
    let mut text = format!(
        "checked `{}` (topic `{}`) against {} attempts, a {} handler timeout, a {} lease \
         and dead letters in `{}`\n",
        report.subscription,
        report.topic,
        expected.max_attempts,
        human(Duration::from_secs_f64(expected.handler_timeout_seconds)),
        human(Duration::from_secs_f64(expected.lease_seconds)),
        expected.dead_letter
    );
    for finding in &report.findings {
        text.push_str(&format!(
            "\n{:<7} {}: {}\n        fix: {}\n",
            finding.severity, finding.subject, finding.problem, finding.fix
        ));
    }
    text.push_str(&match (report.errors, report.warnings) {
        (0, 0) => "\nno problems found".to_owned(),
        (errors, warnings) => format!("\n{errors} error(s), {warnings} warning(s)"),
    });
    text
}

#[cfg(test)]
mod tests {
    use wharf::RetryPolicy;

    use super::*;

    #[test]
    fn the_report_counts_errors_and_warnings_and_shows_the_fix() {
        let spec = SubscriptionSpec::new("orders", "billing");
        let policy = RetryPolicy::default().max_attempts(5);
        let expected = Expectations::from_policy(spec, &policy, Duration::from_secs(60));
        let findings = [
            Finding::error("billing", "the limit is 3", "raise it to 5"),
            Finding::warning("billing", "the lease is short", "lengthen it"),
        ];

        let report = report(&expected, &findings);

        assert_eq!((report.errors, report.warnings), (1, 1));
        assert_eq!(report.expected.dead_letter, "billing-dlq");
        let text = text(&report);
        assert!(text.contains("error   billing: the limit is 3"), "{text}");
        assert!(text.contains("fix: raise it to 5"), "{text}");
        assert!(text.ends_with("1 error(s), 1 warning(s)"), "{text}");
    }
}
