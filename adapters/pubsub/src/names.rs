//! Topic and subscription ids: checked against Pub/Sub's rules before any call, and
//! turned into the full resource names the API takes.

use wharf_core::{Error, Result};

/// Shortest id. Source: resource names in the Pub/Sub documentation, "between 3 and 255
/// characters".
const MIN_ID_CHARS: usize = 3;

/// Longest id. Source: as [`MIN_ID_CHARS`].
const MAX_ID_CHARS: usize = 255;

/// Characters allowed after the first letter. Source: as [`MIN_ID_CHARS`].
const ID_PUNCTUATION: &[char] = &['-', '_', '.', '~', '+', '%'];

/// Checks a topic or subscription id, naming the id and the rule it breaks.
pub(crate) fn check_id(kind: &str, id: &str) -> Result<()> {
    let length = id.chars().count();
    if !(MIN_ID_CHARS..=MAX_ID_CHARS).contains(&length) {
        return Err(Error::invalid(format!(
            "Pub/Sub {kind} id `{id}` has {length} characters; it needs \
             {MIN_ID_CHARS} to {MAX_ID_CHARS}"
        )));
    }

    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(Error::invalid(format!(
            "Pub/Sub {kind} id `{id}` must start with a letter"
        )));
    }
    if id.to_ascii_lowercase().starts_with("goog") {
        return Err(Error::invalid(format!(
            "Pub/Sub {kind} id `{id}` must not start with `goog`"
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !ID_PUNCTUATION.contains(c))
    {
        return Err(Error::invalid(format!(
            "Pub/Sub {kind} id `{id}` contains `{bad}`; only letters, digits and - _ . ~ + % \
             are allowed"
        )));
    }
    Ok(())
}

/// `projects/PROJECT/topics/TOPIC`.
pub(crate) fn topic_path(project: &str, topic: &str) -> String {
    format!("projects/{project}/topics/{topic}")
}

/// `projects/PROJECT/subscriptions/SUBSCRIPTION`.
pub(crate) fn subscription_path(project: &str, subscription: &str) -> String {
    format!("projects/{project}/subscriptions/{subscription}")
}

/// The last segment of a full resource name: the id.
pub(crate) fn short_id(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_pubsub_rules() {
        assert!(check_id("topic", "orders").is_ok());
        assert!(check_id("topic", "wharf-ack-x1y2z3-t1").is_ok());
        assert!(check_id("topic", "t1").is_err());
        assert!(check_id("topic", "1orders").is_err());
        assert!(check_id("topic", "google-orders").is_err());
        assert!(check_id("topic", "orders/eu").is_err());
    }

    #[test]
    fn a_refused_id_is_named_in_the_error() {
        let error = check_id("subscription", "t1").unwrap_err();

        assert!(error.to_string().contains("`t1`"), "{error}");
        assert!(error.to_string().contains("3 to 255"), "{error}");
    }

    #[test]
    fn short_id_is_the_last_segment() {
        assert_eq!(short_id("projects/p/topics/orders-dlq"), "orders-dlq");
    }
}
