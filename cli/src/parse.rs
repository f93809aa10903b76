//! Parsers for option values, used by clap so a malformed value is a usage error that
//! names the option and shows an accepted form.

use std::num::NonZeroU32;
use std::time::Duration;

/// `KEY=VALUE`, as in `--attribute tenant=acme`. The value may contain `=`.
pub(crate) fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE; write e.g. tenant=acme")),
    }
}

/// The longest duration an option takes: a day, as long as one receive may wait.
const LONGEST: Duration = wharf::subscriber::MAX_RECEIVE_WAIT;

/// A duration such as `250ms`, `5s` or `2m`, up to a day.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 250ms, 5s or 2m"))?;
    if duration > LONGEST {
        return Err(format!(
            "`{text}` is longer than the {} an option accepts",
            humantime::format_duration(LONGEST)
        ));
    }
    Ok(duration)
}

/// A rate of messages a second: `50/s`, `50` or `3000/m`.
pub(crate) fn rate(text: &str) -> Result<NonZeroU32, String> {
    let bad = || format!("`{text}` is not a rate; write e.g. 50/s (or 3000/m)");
    let (count, per_second) = match text.split_once('/') {
        None => (text, true),
        Some((count, "s")) => (count, true),
        Some((count, "m")) => (count, false),
        Some(_) => return Err(bad()),
    };
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per_second = if per_second { count } else { count / 60 };
    NonZeroU32::new(per_second)
        .ok_or_else(|| format!("`{text}` is below one message a second; the lowest rate is 1/s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            key_value("filter=a=b").unwrap(),
            ("filter".to_owned(), "a=b".to_owned())
        );
        assert_eq!(key_value("empty=").unwrap().1, "");
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
    }

    #[test]
    fn rates_read_per_second_and_per_minute() {
        assert_eq!(rate("50/s").unwrap().get(), 50);
        assert_eq!(rate("50").unwrap().get(), 50);
        assert_eq!(rate("120/m").unwrap().get(), 2);
        assert!(rate("0/s").is_err());
        assert!(
            rate("30/m").is_err(),
            "half a message a second is too slow to express"
        );
        assert!(rate("fast").is_err());
        assert!(rate("5/h").is_err());
    }

    #[test]
    fn durations_take_humantime_units() {
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(duration("5").unwrap_err().contains("5s"));
        assert!(
            duration("500000000000y")
                .unwrap_err()
                .contains("longer than the 1day")
        );
    }
}
