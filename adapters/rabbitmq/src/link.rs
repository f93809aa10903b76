//! [`Link`]: the one AMQP connection a backend shares, re-established with backoff.
//!
//! Publishers, subscribers and topology calls each open their own channels on it. When
//! the broker restarts or the network drops, the connection dies and every channel with
//! it; the next caller that needs a channel reconnects. Failed attempts set a pause that
//! doubles up to the configured maximum, and callers arriving during the pause fail at
//! once with a retryable [`Unavailable`](wharf_core::ErrorKind::Unavailable) error
//! instead of piling onto a broker that is down.

use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};
use wharf_core::Result;

use crate::config::RabbitMqConfig;
use crate::error::{map, unavailable};

/// The shared, self-healing connection.
pub(crate) struct Link {
    config: RabbitMqConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    connection: Option<Arc<Connection>>,
    failures: u32,
    retry_at: Option<Instant>,
    closed: bool,
}

impl Link {
    /// A link that connects on first use.
    pub(crate) fn new(config: RabbitMqConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
        }
    }

    /// The configuration the link was made with.
    pub(crate) fn config(&self) -> &RabbitMqConfig {
        &self.config
    }

    /// The live connection, reconnecting first if it died.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Err(wharf_core::Error::closed("the RabbitMQ connection"));
        }
        if let Some(connection) = &state.connection {
            if connection.status().connected() {
                return Ok(connection.clone());
            }
            warn!(url = %self.config.redacted_url(), "RabbitMQ connection lost; reconnecting");
            state.connection = None;
        }

        self.reconnect(&mut state).await
    }

    /// A new channel on the live connection.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let connection = self.connection().await?;

        connection
            .create_channel()
            .await
            .map_err(|e| map("opening a channel", e))
    }

    /// How long to wait before the next attempt is allowed, if one failed recently.
    pub(crate) async fn pause(&self) -> Duration {
        let state = self.state.lock().await;
        state
            .retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(self.config.reconnect_min)
    }

    /// Closes the connection; later calls fail with `Closed`.
    pub(crate) async fn close(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        state.closed = true;
        let Some(connection) = state.connection.take() else {
            return Ok(());
        };

        connection
            .close(200, "wharf closing".into())
            .await
            .map_err(|e| map("closing the connection", e))
    }

    async fn reconnect(&self, state: &mut State) -> Result<Arc<Connection>> {
        if let Some(at) = state.retry_at
            && Instant::now() < at
        {
            return Err(unavailable(format!(
                "RabbitMQ at {} is unreachable; reconnecting (attempt {} failed)",
                self.config.redacted_url(),
                state.failures
            )));
        }

        match self.connect_once().await {
            Ok(connection) => {
                if state.failures > 0 {
                    warn!(url = %self.config.redacted_url(), failures = state.failures,
                        "RabbitMQ connection re-established");
                }
                *state = State {
                    connection: Some(connection.clone()),
                    ..State::default()
                };
                Ok(connection)
            }
            Err(error) => {
                state.failures += 1;
                let pause = self.backoff(state.failures);
                state.retry_at = Some(Instant::now() + pause);
                warn!(url = %self.config.redacted_url(), failures = state.failures,
                    pause_ms = pause.as_millis() as u64, error.kind = %error.kind(), %error,
                    "cannot reach RabbitMQ; degraded until it answers");
                Err(error)
            }
        }
    }

    async fn connect_once(&self) -> Result<Arc<Connection>> {
        let uri = self.config.uri()?;
        let properties = ConnectionProperties::default()
            .with_connection_name(self.config.connection_name.clone().into());
        let attempt = Connection::connect_uri(uri, properties);

        let connection = tokio::time::timeout(self.config.connect_timeout, attempt)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "connecting to RabbitMQ at {} took longer than {:?}",
                    self.config.redacted_url(),
                    self.config.connect_timeout
                ))
            })?
            .map_err(|e| map("connecting", e))?;

        debug!(url = %self.config.redacted_url(), "connected to RabbitMQ");
        Ok(Arc::new(connection))
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.config
            .reconnect_min
            .saturating_mul(factor)
            .min(self.config.reconnect_max)
    }
}
