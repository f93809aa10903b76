//! Keeping credentials out of everything the command prints.
//!
//! wharf's own errors already redact URLs, but a broker client's error text can quote
//! what it was given. Every failure the command prints passes through [`Secrets::scrub`],
//! which replaces the backend URLs it was given and the passwords and secret options in
//! them.

/// Shorter secrets are not replaced on their own: they would blank out ordinary words.
const SHORTEST_SECRET: usize = 3;

/// What to replace, and with what.
#[derive(Default)]
pub(crate) struct Secrets {
    replacements: Vec<(String, String)>,
}

impl Secrets {
    /// Adds the secrets of backend URL `url`.
    pub(crate) fn add_url(&mut self, url: &str) {
        self.replacements.push((url.to_owned(), wharf::redact(url)));
        for secret in secrets_in(url) {
            if secret.len() >= SHORTEST_SECRET {
                self.replacements.push((secret, "****".to_owned()));
            }
        }
        // Whole URLs first: a password replaced inside a URL would stop it matching.
        self.replacements
            .sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
    }

    /// `text` with every known secret replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (secret, shown) in &self.replacements {
            if secret != shown {
                text = text.replace(secret.as_str(), shown);
            }
        }
        text
    }
}

/// The password of the URL's user info and the values of its secret options, as written
/// and percent-decoded. Read by hand: a Kafka broker list is no URL authority.
fn secrets_in(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut found = Vec::new();

    if let Some((userinfo, _)) = rest[..authority_end].rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(password.to_owned());
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && wharf::SECRET_OPTIONS.contains(&name)
            {
                found.push(value.to_owned());
            }
        }
    }

    let decoded: Vec<String> = found.iter().map(|s| percent_decoded(s)).collect();
    found.extend(decoded);
    found.sort();
    found.dedup();
    found
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_options_are_scrubbed() {
        let mut secrets = Secrets::default();
        secrets.add_url("kafka://app:s%3Ecret@a:9092,b:9092?sasl_password=hunter2&partitions=3");

        let shown = secrets.scrub("login as app with s>cret failed; hunter2 refused; s%3Ecret");

        assert!(!shown.contains("s>cret"), "{shown}");
        assert!(!shown.contains("s%3Ecret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_whole_url_is_shown_redacted() {
        let url = "amqp://app:hunter2@127.0.0.1:5672/%2f";
        let mut secrets = Secrets::default();
        secrets.add_url(url);

        let shown = secrets.scrub(&format!("cannot connect to {url}"));

        assert_eq!(
            shown,
            "cannot connect to amqp://app:****@127.0.0.1:5672/%2f"
        );
    }
}
