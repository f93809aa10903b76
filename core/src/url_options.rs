//! The backend URL's query parameters that belong to wharf itself.
//!
//! A backend URL such as `amqp://127.0.0.1:5672/%2f?subscription=billing&prefetch=64`
//! mixes two kinds of options: wharf's own (which subscription, how many attempts, how
//! long a lease), read by the `wharf` crate's settings, and the backend's (here
//! `prefetch`), read by the adapter. An adapter parsing its URL skips the names listed
//! here and refuses any other name it does not know, so a misspelt option is an error
//! rather than silently ignored.

/// Query parameters every backend URL may carry, read by the `wharf` crate's settings.
pub const WHARF_URL_OPTIONS: [&str; 11] = [
    "topic",
    "subscription",
    "dead_letter",
    "create_if_missing",
    "concurrency",
    "lease",
    "max_attempts",
    "initial_backoff",
    "max_backoff",
    "multiplier",
    "jitter",
];

/// Whether `name` is one of [`WHARF_URL_OPTIONS`], which an adapter leaves alone.
pub fn is_wharf_option(name: &str) -> bool {
    WHARF_URL_OPTIONS.contains(&name)
}

/// The backend's own options among a URL's query pairs, in order: wharf's options are
/// skipped, and an option given twice is refused (which of the two was meant cannot be
/// told).
///
/// ```
/// use wharf_core::url_options::backend_options;
///
/// let pairs = [("region", "eu-west-1"), ("subscription", "billing")];
/// let options = backend_options("SQS", pairs)?;
/// assert_eq!(options, vec![("region".to_owned(), "eu-west-1".to_owned())]);
///
/// assert!(backend_options("SQS", [("region", "a"), ("region", "b")]).is_err());
/// # Ok::<(), wharf_core::Error>(())
/// ```
///
/// # Errors
///
/// [`Config`](crate::ErrorKind::Config) naming the repeated option.
pub fn backend_options<K, V>(
    backend: &str,
    pairs: impl IntoIterator<Item = (K, V)>,
) -> crate::Result<Vec<(String, String)>>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut options: Vec<(String, String)> = Vec::new();
    for (name, value) in pairs {
        let name = name.as_ref();
        if is_wharf_option(name) {
            continue;
        }
        if options.iter().any(|(seen, _)| seen == name) {
            return Err(crate::Error::new(
                crate::ErrorKind::Config,
                format!("{backend} URL option `{name}` is given twice; keep one"),
            ));
        }
        options.push((name.to_owned(), value.as_ref().to_owned()));
    }
    Ok(options)
}

/// The error for a URL option a backend does not know: it names the option, the ones
/// the backend accepts, and wharf's own.
pub fn unknown_option(backend: &str, name: &str, accepted: &[&str]) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Config,
        format!(
            "unknown {backend} URL option `{name}`; the accepted ones are {}, and wharf's own \
             ({})",
            accepted.join(", "),
            WHARF_URL_OPTIONS.join(", "),
        ),
    )
}
