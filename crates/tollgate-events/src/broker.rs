//! The connection to NATS and the two JetStream streams Tollgate publishes to:
//!
//! | stream | subjects | kept | duplicate window |
//! | --- | --- | --- | --- |
//! | `TOLLGATE_CONTROL` | `tollgate.audit.>`, `tollgate.change.>` | 90 days | 1 hour |
//! | `TOLLGATE_USAGE` | `tollgate.usage.>`, `tollgate.denial.>` | 7 days | 2 minutes |
//!
//! Both are created when missing (an existing stream is used as it is configured, so an
//! operator may change its retention). They set no byte limit: JetStream reserves a
//! stream's `max_bytes` out of the server's store up front, and a server left to size its
//! store itself offers 75% of the free disk, so a fixed cap makes creation fail
//! ("insufficient storage resources") on any disk with less room than the cap. The broker's
//! own `max_file_store`, or a cap set on the stream by its operator, bounds them instead. The control stream's long duplicate window is
//! what absorbs a relay's republished rows after a broker outage: a row whose
//! acknowledgement was lost is published again with the same id once the broker is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use tollgate_data::usage::EventsHealth;

use crate::{EventsConfig, EventsError};

/// The stream of audit and change events.
pub const CONTROL_STREAM: &str = "TOLLGATE_CONTROL";
/// The stream of usage and denial events.
pub const USAGE_STREAM: &str = "TOLLGATE_USAGE";

/// The streams' configurations.
pub fn stream_configs() -> [stream::Config; 2] {
    [
        stream::Config {
            name: CONTROL_STREAM.into(),
            description: Some(
                "Tollgate: audit entries and committed changes, from the outbox".into(),
            ),
            subjects: vec!["tollgate.audit.>".into(), "tollgate.change.>".into()],
            max_age: Duration::from_secs(90 * 86_400),
            duplicate_window: Duration::from_secs(3600),
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: USAGE_STREAM.into(),
            description: Some(
                "Tollgate: usage per policy and interval, and sampled denials".into(),
            ),
            subjects: vec!["tollgate.usage.>".into(), "tollgate.denial.>".into()],
            max_age: Duration::from_secs(7 * 86_400),
            duplicate_window: Duration::from_secs(120),
            storage: stream::StorageType::File,
            ..Default::default()
        },
    ]
}

/// A connection to the broker with its JetStream context.
#[derive(Debug)]
pub struct Broker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: EventsConfig,
    streams_ready: AtomicBool,
    health: Arc<EventsHealth>,
}

impl Broker {
    /// Connects in the background: an unreachable broker is not an error (the client keeps
    /// trying; publishes fail until it answers). Bad credentials or TLS files are.
    pub async fn connect(
        config: EventsConfig,
        health: Arc<EventsHealth>,
    ) -> Result<Self, EventsError> {
        config.check_files()?;
        // async-nats builds its TLS client from rustls's process-wide provider; Tollgate
        // compiles only ring in, which rustls does not pick by itself when another crate
        // enables a second one. Installing it when none is set is a no-op otherwise.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut options = match &config.credentials {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| EventsError::Config {
                    flag: "--events-credentials",
                    message: format!("{}: {e}", path.display()),
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(ca) = &config.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.client_cert {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        if config.url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        // async-nats ignores credentials in the URL: they are taken out and given to it.
        let (servers, userinfo) = split_userinfo(&config.url);
        match userinfo {
            Some((user, Some(password))) => options = options.user_and_password(user, password),
            Some((token, None)) => options = options.token(token),
            None => {}
        }
        let on_event = health.clone();
        let url = config.redacted_url();
        let options = options
            .name(format!("tollgate {}", config.node))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(2_000))
            })
            .event_callback(move |event| {
                let health = on_event.clone();
                let url = url.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            health.connected.store(true, Ordering::Relaxed);
                            tracing::info!(broker = %url, "event broker connected");
                        }
                        async_nats::Event::Disconnected => {
                            health.connected.store(false, Ordering::Relaxed);
                            tracing::warn!(broker = %url, "event broker disconnected; events wait in the outbox and queue");
                        }
                        other => tracing::debug!(broker = %url, event = %other, "event broker"),
                    }
                }
            });
        let client = options
            .connect(servers.as_str())
            .await
            .map_err(|e| EventsError::Broker(e.to_string()))?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.ack_timeout);
        Ok(Self {
            client,
            jetstream,
            config,
            streams_ready: AtomicBool::new(false),
            health,
        })
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &EventsConfig {
        &self.config
    }

    /// The core NATS client (`tail`'s subscriptions).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (consumers: `tail`, the usage export).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The broker's health as the data plane reports it.
    pub fn health(&self) -> &Arc<EventsHealth> {
        &self.health
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates the streams that are missing (once per process, retried until it works).
    pub async fn ensure_streams(&self) -> Result<(), EventsError> {
        if self.streams_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        for config in stream_configs() {
            let name = config.name.clone();
            tokio::time::timeout(
                self.config.ack_timeout,
                self.jetstream.get_or_create_stream(config),
            )
            .await
            .map_err(|_| EventsError::Timeout(self.config.ack_timeout))?
            .map_err(|e| EventsError::Broker(format!("stream {name}: {e}")))?;
        }
        self.streams_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one message with `Nats-Msg-Id: id`; the future resolves with JetStream's
    /// acknowledgement.
    pub async fn send(
        &self,
        subject: String,
        id: &str,
        payload: Vec<u8>,
    ) -> Result<PublishAckFuture, EventsError> {
        self.ensure_streams().await?;
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        tokio::time::timeout(
            self.config.ack_timeout,
            self.jetstream.send_publish(subject, message),
        )
        .await
        .map_err(|_| EventsError::Timeout(self.config.ack_timeout))?
        .map_err(|e| EventsError::Broker(e.to_string()))
    }

    /// Publishes one message and waits for its acknowledgement (stored, or recognised as a
    /// duplicate of one stored).
    pub async fn publish(
        &self,
        subject: String,
        id: &str,
        payload: Vec<u8>,
    ) -> Result<(), EventsError> {
        let ack = self.send(subject, id, payload).await?;
        tokio::time::timeout(self.config.ack_timeout, ack)
            .await
            .map_err(|_| EventsError::Timeout(self.config.ack_timeout))?
            .map_err(|e| EventsError::Broker(e.to_string()))?;
        Ok(())
    }
}

/// The URL's servers without credentials, and the credentials (`user:password`, or a lone
/// token) of the first server that has them, percent-decoded.
fn split_userinfo(url: &str) -> (String, Option<(String, Option<String>)>) {
    let mut found = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            let Some((scheme, rest)) = server.split_once("://") else {
                return server.to_owned();
            };
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    if found.is_none() {
                        found = Some(match userinfo.split_once(':') {
                            Some((u, p)) => (decode(u), Some(decode(p))),
                            None => (decode(userinfo), None),
                        });
                    }
                    format!("{scheme}://{host}")
                }
                None => server.to_owned(),
            }
        })
        .collect();
    (servers.join(","), found)
}

/// `%XX` sequences decoded (a password may hold `@` or `:` that way).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
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
    fn credentials_are_taken_out_of_the_url() {
        assert_eq!(
            split_userinfo("nats://h:4222"),
            ("nats://h:4222".into(), None)
        );
        assert_eq!(
            split_userinfo("tls://al%40x:p%3Aw@h:1,tls://h2:2"),
            (
                "tls://h:1,tls://h2:2".into(),
                Some(("al@x".into(), Some("p:w".into())))
            )
        );
        assert_eq!(
            split_userinfo("nats://tok@h:1").1,
            Some(("tok".into(), None))
        );
    }
}
