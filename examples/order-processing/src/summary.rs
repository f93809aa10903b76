//! The result of a demo run, as text for people or JSON for machines, and the checks
//! that decide whether the run passed.

use std::fmt::Write as _;

use serde::Serialize;

/// What a demo run did and found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The backend's short name (`memory`, ...).
    pub backend: String,
    /// The backend URL, without any password.
    pub backend_url: String,
    /// Orders the load generator sent.
    pub orders: u64,
    /// Orders answered `202 Accepted`.
    pub accepted: u64,
    /// Orders the API did not accept (nothing was queued for them).
    pub refused: u64,
    /// Orders the fulfilment workers finished: acked or dead-lettered.
    pub processed: u64,
    /// Orders confirmed.
    pub confirmed: u64,
    /// Orders rejected for lack of stock.
    pub rejected_out_of_stock: u64,
    /// Deliveries the workers nacked for a later attempt.
    pub retried: u64,
    /// Payment authorisations that failed transiently.
    pub payment_failures: u64,
    /// Messages found in the dead-letter queue.
    pub dead_lettered: u64,
    /// Accepted orders for unknown products.
    pub poison: u64,
    /// Accepted orders whose payment failed on every attempt.
    pub payment_gave_up: u64,
    /// Expected dead letters (poison or payment gave up) not in the dead-letter queue.
    pub dead_letters_missing: u64,
    /// Dead letters that were not expected there.
    pub dead_letters_unexpected: u64,
    /// Accepted orders not settled (confirmed, rejected or dead-lettered): must be 0.
    pub lost: u64,
    /// Deliveries and replies seen a second time, handled idempotently.
    pub duplicates: u64,
    /// Stock never negative and initial stock = available + reserved, for every product.
    pub stock_consistent: bool,
    /// The deadline passed before every order settled.
    pub timed_out: bool,
    /// Seconds from the first order sent to the last one settled.
    pub elapsed_secs: f64,
    /// Settled orders per second.
    pub throughput: f64,
}

impl Summary {
    /// Whether every check holds: nothing lost or refused, the dead-letter queue holds
    /// exactly the expected orders, and the stock adds up.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// Each failed check, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.lost > 0 {
            problems.push(format!("{} accepted orders were never settled", self.lost));
        }
        if self.refused > 0 {
            problems.push(format!("{} orders were refused by the API", self.refused));
        }
        if self.dead_letters_missing > 0 || self.dead_letters_unexpected > 0 {
            problems.push(format!(
                "the dead-letter queue does not match: {} missing, {} unexpected",
                self.dead_letters_missing, self.dead_letters_unexpected
            ));
        }
        if !self.stock_consistent {
            problems.push("stock does not add up".to_owned());
        }
        problems
    }

    /// The summary for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "order-processing demo: {} orders on the {} backend ({})",
            self.orders, self.backend, self.backend_url
        );
        for (label, value, note) in self.rows() {
            let _ = writeln!(out, "  {label:<16}{value:>9}   {note}");
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "result: {verdict}");
        for problem in self.problems() {
            let _ = writeln!(out, "  - {problem}");
        }
        out
    }

    fn rows(&self) -> Vec<(&'static str, String, String)> {
        vec![
            row("accepted", self.accepted, "HTTP 202 from POST /orders"),
            row("refused", self.refused, "not accepted by the API"),
            row(
                "processed",
                self.processed,
                "acked or dead-lettered by the workers",
            ),
            row(
                "confirmed",
                self.confirmed,
                "stock reserved, payment authorised",
            ),
            row(
                "rejected",
                self.rejected_out_of_stock,
                "out of stock (a business outcome)",
            ),
            row("retried", self.retried, &self.retried_note()),
            row(
                "dead-lettered",
                self.dead_lettered,
                &self.dead_letter_note(),
            ),
            row("lost", self.lost, "accepted but never settled; must be 0"),
            row(
                "duplicates",
                self.duplicates,
                "redeliveries handled idempotently",
            ),
            ("stock", String::new(), self.stock_note().to_owned()),
            (
                "throughput",
                format!("{:.0}", self.throughput),
                "orders/s".to_owned(),
            ),
            (
                "elapsed",
                format!("{:.2}", self.elapsed_secs),
                self.elapsed_note(),
            ),
        ]
    }

    fn retried_note(&self) -> String {
        format!(
            "{} transient payment failures, retried with backoff",
            self.payment_failures
        )
    }

    fn dead_letter_note(&self) -> String {
        let matched = self.dead_letters_missing == 0 && self.dead_letters_unexpected == 0;
        let verdict = if matched {
            "exactly the expected orders"
        } else {
            "MISMATCH"
        };
        format!(
            "{verdict}: {} poison + {} payment gave up ({} missing, {} unexpected)",
            self.poison,
            self.payment_gave_up,
            self.dead_letters_missing,
            self.dead_letters_unexpected
        )
    }

    fn stock_note(&self) -> &'static str {
        if self.stock_consistent {
            "never negative; initial = available + reserved for every product"
        } else {
            "INCONSISTENT"
        }
    }

    fn elapsed_note(&self) -> String {
        if self.timed_out {
            "seconds (deadline passed before every order settled)".to_owned()
        } else {
            "seconds, first order sent to last order settled".to_owned()
        }
    }
}

fn row(label: &'static str, value: u64, note: &str) -> (&'static str, String, String) {
    (label, value.to_string(), note.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Summary {
        Summary {
            orders: 10,
            accepted: 10,
            stock_consistent: true,
            ..Summary::default()
        }
    }

    #[test]
    fn a_clean_run_passes() {
        assert!(clean().passed());
        assert!(clean().render().contains("result: PASS"));
    }

    #[test]
    fn a_lost_order_fails_the_run_and_says_so() {
        let summary = Summary { lost: 1, ..clean() };

        assert!(!summary.passed());
        assert!(
            summary
                .render()
                .contains("1 accepted orders were never settled")
        );
    }

    #[test]
    fn an_unexpected_dead_letter_fails_the_run() {
        let summary = Summary {
            dead_letters_unexpected: 2,
            ..clean()
        };

        assert!(!summary.passed());
    }
}
