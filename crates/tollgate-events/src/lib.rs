//! Tollgate's events on NATS JetStream, as CloudEvents 1.0 in structured JSON mode.
//!
//! - [`config`]: the broker's URL, TLS and credentials, checked before anything connects.
//! - [`cloudevent`]: the envelope and the event types; [`subject`]: `tollgate.<type>.<domain>`.
//! - [`broker`]: the connection, the streams (created when missing) and acknowledged publishes.
//! - [`relay`]: the control plane's outbox, published row by row in order.
//! - [`publisher`]: the data plane's events (denials, usage), best effort, never waited for.
//! - [`tail`]: `tollgate events tail`.
//!
//! Why an outbox, what is guaranteed and what it costs: `docs/design/message-queues.md`.

pub mod broker;
pub mod cloudevent;
pub mod config;
pub mod publisher;
pub mod relay;
pub mod subject;
pub mod tail;

pub use broker::{Broker, CONTROL_STREAM, USAGE_STREAM};
pub use cloudevent::EventType;
pub use config::EventsConfig;

/// What can go wrong with events.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A flag's value is unusable; the message names the flag.
    #[error("{flag}: {message}")]
    Config {
        /// The flag (`--events`, `--events-credentials`, ...).
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The broker did not answer or refused.
    #[error("event broker: {0}")]
    Broker(String),
    /// The broker did not acknowledge in time.
    #[error("event broker: no acknowledgement within {0:?}")]
    Timeout(std::time::Duration),
}
