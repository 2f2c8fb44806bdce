//! CloudEvents 1.0 in structured JSON mode: one JSON object per message, the event's
//! attributes beside its `data`. Written by hand with serde: the envelope is seven fields,
//! and the SDK crate would bring an HTTP stack for them.
//!
//! One JSON Schema per type is in `docs/events/`; the test suite validates every event it
//! receives against its schema.

use serde::Serialize;

/// The spec version every event carries.
pub const SPEC_VERSION: &str = "1.0";

/// The four kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An audit log entry.
    Audit,
    /// A committed change of a domain, policy or API key.
    Change,
    /// A denied request.
    Denial,
    /// A policy's usage over an interval, with its heavy hitters.
    Usage,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 4] = [Self::Audit, Self::Change, Self::Denial, Self::Usage];

    /// The CloudEvents `type` attribute.
    pub fn ce_type(self) -> &'static str {
        match self {
            Self::Audit => "dev.tollgate.audit.v1",
            Self::Change => "dev.tollgate.change.v1",
            Self::Denial => "dev.tollgate.denial.v1",
            Self::Usage => "dev.tollgate.usage.v1",
        }
    }

    /// Its subject token (`tollgate.<token>.<domain>`) and name on the command line.
    pub fn token(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Change => "change",
            Self::Denial => "denial",
            Self::Usage => "usage",
        }
    }

    /// The type named `name` (its token), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.token() == name)
    }
}

/// One event's envelope around already-serialised `data`.
#[derive(Debug, Serialize)]
pub struct CloudEvent<'a, D: Serialize> {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// Unique with `source`; also the message's `Nats-Msg-Id`.
    pub id: &'a str,
    /// Who emitted it: `/tollgate/control` (the outbox) or `/tollgate/node/<name>`.
    pub source: &'a str,
    /// `dev.tollgate.<kind>.v1`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What it is about: the domain, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// When it happened, RFC 3339.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// The event's data.
    pub data: D,
}

/// RFC 3339 (UTC, milliseconds) of `ms` since the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The JSON bytes of an event.
pub fn encode<D: Serialize>(
    kind: EventType,
    id: &str,
    source: &str,
    domain: Option<&str>,
    at_ms: i64,
    data: D,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&CloudEvent {
        specversion: SPEC_VERSION,
        id,
        source,
        kind: kind.ce_type(),
        subject: domain,
        time: rfc3339_ms(at_ms),
        datacontenttype: "application/json",
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_the_required_attributes_around_the_data() {
        let raw = serde_json::value::RawValue::from_string(r#"{"action":"x"}"#.into()).unwrap();
        let bytes = encode(
            EventType::Change,
            "42",
            "/tollgate/control",
            Some("api"),
            0,
            &raw,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "42");
        assert_eq!(v["type"], "dev.tollgate.change.v1");
        assert_eq!(v["subject"], "api");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["action"], "x");
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.token()), Some(t));
        }
    }
}
