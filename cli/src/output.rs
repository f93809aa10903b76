//! Where and how results are written: human-readable text and tables on standard
//! output, or one JSON document with `--json`; notes and progress on standard error.
//!
//! Results go to standard output so they can be piped; notes, summaries and progress
//! bars go to standard error, and `--quiet` silences them. Progress bars are drawn only
//! when standard error is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value};
use wharf::Figure;

use crate::exit::{Exit, Failure};

/// What a figure shows in a table when the broker cannot report it.
pub(crate) const UNKNOWN: &str = "–";

/// Whether the JSON document was written: a command writes one at most, so an error
/// after it goes to standard error only.
static WROTE_DOCUMENT: AtomicBool = AtomicBool::new(false);

/// Tables are kept this narrow so they read in a terminal and in a log.
const TABLE_WIDTH: u16 = 120;

/// How the command writes what it found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
    quiet: bool,
    progress: bool,
}

impl Output {
    /// Output as the global `--json` and `--quiet` ask.
    pub(crate) fn new(json: bool, quiet: bool) -> Self {
        Self {
            json,
            quiet,
            progress: !json && !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Whether results are one JSON document.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Writes the command's one JSON document to standard output.
    pub(crate) fn json<T: Serialize>(&self, document: &T) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(document).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("writing the JSON result failed: {e}"),
                "run the command again without --json",
            )
        })?;
        WROTE_DOCUMENT.store(true, Ordering::Relaxed);
        self.result(&text)
    }

    /// Whether [`json`](Self::json) wrote the document already.
    pub(crate) fn wrote_document(&self) -> bool {
        WROTE_DOCUMENT.load(Ordering::Relaxed)
    }

    /// Writes one line of the result to standard output.
    pub(crate) fn result(&self, text: &str) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}").map_err(|e| Failure::io("writing to standard output", &e))
    }

    /// Writes bytes to standard output as they are, for `--raw`.
    pub(crate) fn raw(&self, bytes: &[u8]) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(|e| Failure::io("writing to standard output", &e))
    }

    /// A note or summary for people, on standard error, unless `--quiet`.
    pub(crate) fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// A progress bar on standard error for `len` steps (a spinner if unknown), drawn
    /// only on a terminal and without `--json` or `--quiet`.
    pub(crate) fn progress(&self, len: Option<u64>) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let target = ProgressDrawTarget::stderr();
        let (bar, template) = match len {
            Some(len) => (
                ProgressBar::with_draw_target(Some(len), target),
                "{spinner} [{bar:30}] {pos}/{len} {msg} ({eta} left)",
            ),
            None => (
                ProgressBar::with_draw_target(None, target),
                "{spinner} {pos} {msg} ({elapsed})",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

/// A table in the command's style, with `header`.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(TABLE_WIDTH)
        .set_header(header.iter().copied());
    table
}

/// A count for a table cell.
pub(crate) fn cell(figure: &Figure<u64>) -> String {
    match figure {
        Figure::Known(value) => value.to_string(),
        Figure::Unknown(_) => UNKNOWN.to_owned(),
    }
}

/// An age for a table cell: `none` when there is no message to be old.
pub(crate) fn age_cell(figure: &Figure<Option<Duration>>) -> String {
    match figure {
        Figure::Known(Some(age)) => human(*age),
        Figure::Known(None) => "none".to_owned(),
        Figure::Unknown(_) => UNKNOWN.to_owned(),
    }
}

/// A duration for people: to the second from one second up, to the millisecond below.
pub(crate) fn human(duration: Duration) -> String {
    let shown = if duration >= Duration::from_secs(1) {
        Duration::from_secs(duration.as_secs())
    } else {
        Duration::from_millis(duration.as_millis() as u64)
    };
    humantime::format_duration(shown).to_string()
}

/// Collects the reasons of unknown figures into the `unknown` map of a JSON document.
#[derive(Default)]
pub(crate) struct Unknowns(Map<String, Value>);

impl Unknowns {
    /// The figure's value for JSON: its number, or `null` with the reason recorded.
    pub(crate) fn value<T: Serialize>(&mut self, name: &str, figure: &Figure<T>) -> Value {
        match figure {
            Figure::Known(value) => serde_json::to_value(value).unwrap_or(Value::Null),
            Figure::Unknown(reason) => {
                self.0
                    .insert(name.to_owned(), Value::String(reason.clone()));
                Value::Null
            }
        }
    }

    /// The reasons, by figure name.
    pub(crate) fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_figures_are_null_with_their_reason() {
        let mut unknowns = Unknowns::default();

        let known = unknowns.value("ready", &Figure::Known(3_u64));
        let unknown = unknowns.value("in_flight", &Figure::<u64>::unknown("not counted"));

        assert_eq!(known, Value::from(3));
        assert_eq!(unknown, Value::Null);
        let map = unknowns.into_map();
        assert_eq!(map["in_flight"], "not counted");
        assert!(!map.contains_key("ready"));
    }

    #[test]
    fn cells_show_a_dash_for_unknown_and_none_for_no_message() {
        assert_eq!(cell(&Figure::unknown("x")), UNKNOWN);
        assert_eq!(age_cell(&Figure::Known(None)), "none");
        assert_eq!(
            age_cell(&Figure::Known(Some(Duration::from_secs(75)))),
            "1m 15s"
        );
    }
}
