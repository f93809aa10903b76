//! What a backend can do and the limits it enforces, checked before any network call.
//!
//! Each adapter describes itself with one [`Capabilities`] value built from named
//! constants. Core validates every message, delay and lease against it, so an oversized
//! payload or an unsupported feature fails the same way, with the same typed error, on
//! every backend.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::message::Message;

/// What a backend offers and the limits it enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Short backend name used in errors and logs (`memory`, `sqs`, ...).
    pub backend: &'static str,
    /// Largest message, counted as [`Message::size`].
    pub max_message_bytes: usize,
    /// Most messages in one publish request.
    pub max_batch_messages: usize,
    /// Most bytes in one publish request.
    pub max_batch_bytes: usize,
    /// Most attributes a message may carry, if the backend limits them.
    pub max_attributes: Option<usize>,
    /// Longest delayed publish; `None` if delayed publish is unsupported.
    pub max_publish_delay: Option<Duration>,
    /// Longest delay a nack may ask for.
    pub max_nack_delay: Duration,
    /// Shortest lease the backend accepts (Pub/Sub: 10 s).
    pub min_lease: Duration,
    /// Longest single lease; `None` if leases cannot be extended.
    pub max_lease: Option<Duration>,
    /// The backend delays messages itself rather than through wharf's retry machinery.
    pub native_delay: bool,
    /// The backend dead-letters by itself after a delivery limit.
    pub native_dead_letter: bool,
    /// Messages with one ordering key are delivered in order.
    pub ordering: bool,
    /// Several subscriptions on one topic each receive every message.
    pub fan_out: bool,
    /// Publishing twice with one deduplication id delivers once.
    pub deduplication: bool,
    /// A delivery left unsettled past its lease is redelivered while its consumer
    /// is still connected. Without it, only a disconnect or a nack returns it.
    pub lease_expiry: bool,
    /// [`Backend::stats`](crate::Backend::stats) reports how many messages a
    /// subscription holds.
    pub backlog_stats: bool,
}

impl Capabilities {
    /// The name a subscription on `topic` takes: `wanted` where the backend fans out,
    /// otherwise the topic's own, since without fan-out a subscription is its topic's
    /// queue.
    pub fn subscription_name<'a>(&self, topic: &'a str, wanted: &'a str) -> &'a str {
        if self.fan_out { wanted } else { topic }
    }

    /// Checks `message` against the limits before it is sent.
    ///
    /// # Errors
    ///
    /// [`PayloadTooLarge`](crate::ErrorKind::PayloadTooLarge),
    /// [`LimitExceeded`](crate::ErrorKind::LimitExceeded) for too many attributes,
    /// [`Unsupported`](crate::ErrorKind::Unsupported) for a delay, ordering key or
    /// deduplication id the backend cannot honour, and
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) for a delay above its limit
    /// or an empty attribute key.
    pub fn check_message(&self, message: &Message) -> Result<()> {
        let size = message.size();
        if size > self.max_message_bytes {
            return Err(Error::payload_too_large(
                self.backend,
                size,
                self.max_message_bytes,
            ));
        }

        self.check_attributes(message)?;

        if let Some(delay) = message.delay() {
            self.check_publish_delay(delay)?;
        }
        if message.ordering_key().is_some() && !self.ordering {
            return Err(Error::unsupported(self.backend, "ordering keys"));
        }
        if message.deduplication_id().is_some() && !self.deduplication {
            return Err(Error::unsupported(self.backend, "deduplication ids"));
        }
        Ok(())
    }

    fn check_attributes(&self, message: &Message) -> Result<()> {
        let count = message.attributes().len();
        if let Some(limit) = self.max_attributes
            && count > limit
        {
            return Err(Error::limit_exceeded(
                self.backend,
                "message attributes",
                count,
                limit,
            ));
        }

        if message.attributes().keys().any(String::is_empty) {
            return Err(Error::invalid("attribute keys must not be empty"));
        }
        Ok(())
    }

    fn check_publish_delay(&self, delay: Duration) -> Result<()> {
        let Some(limit) = self.max_publish_delay else {
            return Err(Error::unsupported(self.backend, "delayed publish"));
        };

        if delay > limit {
            return Err(Error::invalid(format!(
                "publish delay of {} exceeds the {} backend's maximum of {}",
                human(delay),
                self.backend,
                human(limit)
            )));
        }
        Ok(())
    }

    /// Checks a nack delay.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) if `delay` is above
    /// [`max_nack_delay`](Self::max_nack_delay).
    pub fn check_nack_delay(&self, delay: Duration) -> Result<()> {
        if delay > self.max_nack_delay {
            return Err(Error::invalid(format!(
                "nack delay of {} exceeds the {} backend's maximum of {}",
                human(delay),
                self.backend,
                human(self.max_nack_delay)
            )));
        }
        Ok(())
    }

    /// Checks a lease extension.
    ///
    /// # Errors
    ///
    /// [`Unsupported`](crate::ErrorKind::Unsupported) if leases cannot be extended,
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) if `lease` is zero or above
    /// [`max_lease`](Self::max_lease).
    pub fn check_lease(&self, lease: Duration) -> Result<()> {
        let Some(limit) = self.max_lease else {
            return Err(Error::unsupported(self.backend, "lease extension"));
        };

        if lease.is_zero() || lease < self.min_lease || lease > limit {
            return Err(Error::invalid(format!(
                "lease of {} is outside the {} backend's range of {} to {}",
                human(lease),
                self.backend,
                human(self.min_lease.max(Duration::from_millis(1))),
                human(limit)
            )));
        }
        Ok(())
    }

    /// Whether leases can be extended.
    pub fn lease_extension(&self) -> bool {
        self.max_lease.is_some()
    }
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn small() -> Capabilities {
        Capabilities {
            backend: "test",
            max_message_bytes: 16,
            max_batch_messages: 2,
            max_batch_bytes: 32,
            max_attributes: Some(1),
            max_publish_delay: None,
            max_nack_delay: Duration::from_secs(60),
            min_lease: Duration::from_secs(10),
            max_lease: Some(Duration::from_secs(600)),
            native_delay: false,
            native_dead_letter: false,
            ordering: false,
            fan_out: true,
            deduplication: false,
            lease_expiry: true,
            backlog_stats: true,
        }
    }

    #[test]
    fn without_fan_out_a_subscription_takes_its_topics_name() {
        let fan_out = Capabilities {
            fan_out: true,
            ..small()
        };
        let queue = Capabilities {
            fan_out: false,
            ..small()
        };

        assert_eq!(fan_out.subscription_name("orders", "billing"), "billing");
        assert_eq!(queue.subscription_name("orders", "billing"), "orders");
    }

    #[test]
    fn oversized_message_names_size_and_limit() {
        let error = small()
            .check_message(&Message::new(vec![0; 17]))
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::PayloadTooLarge);
        assert!(error.to_string().contains("17 bytes"), "{error}");
        assert!(error.to_string().contains("16 bytes"), "{error}");
    }

    #[test]
    fn too_many_attributes_is_a_limit_error() {
        let message = Message::new("x")
            .with_attribute("a", "1")
            .with_attribute("b", "2");

        let error = small().check_message(&message).unwrap_err();

        assert_eq!(error.kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn features_the_backend_lacks_are_unsupported_not_ignored() {
        let delayed = Message::new("x").with_delay(Duration::from_secs(1));
        let keyed = Message::new("x").with_ordering_key("k");

        assert_eq!(
            small().check_message(&delayed).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            small().check_message(&keyed).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn nack_delay_and_lease_are_range_checked() {
        let caps = small();

        assert!(caps.check_nack_delay(Duration::from_secs(61)).is_err());
        assert!(caps.check_lease(Duration::ZERO).is_err());
        assert!(caps.check_lease(Duration::from_secs(9)).is_err());
        assert!(caps.check_lease(Duration::from_secs(601)).is_err());
        assert!(caps.check_lease(Duration::from_secs(30)).is_ok());
    }
}
