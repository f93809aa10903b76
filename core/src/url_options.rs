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
