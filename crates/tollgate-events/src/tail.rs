//! `tollgate events tail`: events as they are published, filtered by type and domain;
//! one readable line each on a terminal, the CloudEvent's JSON as one line otherwise.
//! Live only (a core NATS subscription on the streams' subjects): what was published
//! before it started is in the streams, for a JetStream consumer to read.

use std::io::Write;

use futures_util::StreamExt;
use serde_json::Value;

use crate::broker::Broker;
use crate::cloudevent::EventType;
use crate::{EventsError, subject};

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct TailFilter {
    /// Only these types (all when empty).
    pub types: Vec<EventType>,
    /// Only this domain.
    pub domain: Option<String>,
    /// Stop after this many events.
    pub count: Option<u64>,
}

/// One readable line for an event.
pub fn render(event: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let time = s(&event["time"]);
    let kind = s(&event["type"]);
    let kind = kind
        .strip_prefix("dev.tollgate.")
        .and_then(|k| k.strip_suffix(".v1"))
        .unwrap_or(&kind)
        .to_owned();
    let domain = event["subject"].as_str().unwrap_or("-").to_owned();
    let d = &event["data"];
    let what = match kind.as_str() {
        "audit" => format!(
            "{} {} by {} via {}: {}",
            s(&d["action"]),
            s(&d["target"]),
            s(&d["actor"]),
            s(&d["via"]),
            s(&d["outcome"])
        ),
        "change" => format!(
            "{} {} by {}{}",
            s(&d["action"]),
            s(&d["target"]),
            s(&d["actor"]),
            d["revision"]
                .as_i64()
                .map_or_else(String::new, |r| format!(" (revision {r})"))
        ),
        "denial" => {
            let denied: Vec<String> = d["descriptors"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .filter(|x| x["allowed"] == Value::Bool(false))
                        .map(|x| {
                            format!(
                                "{} [{}]",
                                s(&x["policy"]),
                                x["entries"]
                                    .as_array()
                                    .map(|e| e.iter().map(&s).collect::<Vec<_>>().join(","))
                                    .unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "denied {} (request {})",
                denied.join("; "),
                s(&d["request_id"])
            )
        }
        "usage" => {
            let top: Vec<String> = d["heavy_hitters"]
                .as_array()
                .map(|h| {
                    h.iter()
                        .take(3)
                        .map(|x| format!("{}={}", s(&x["value"]), x["count"]))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{}: {} allowed, {} denied, {} shadow-denied; top {}",
                s(&d["policy"]),
                d["allowed"],
                d["denied"],
                d["shadow_denied"],
                top.join(" ")
            )
        }
        _ => d.to_string(),
    };
    format!("{time}  {kind:<6}  {domain}  {what}")
}

/// Prints events until `filter.count` of them were shown (or forever).
pub async fn tail(
    broker: &Broker,
    filter: &TailFilter,
    readable: bool,
    out: &mut impl Write,
) -> Result<(), EventsError> {
    let client = async_nats::Client::clone(broker_client(broker));
    let types: Vec<Option<EventType>> = if filter.types.is_empty() {
        vec![None]
    } else {
        filter.types.iter().copied().map(Some).collect()
    };
    let mut subscriptions = Vec::new();
    for kind in types {
        let subject = subject::filter(kind, filter.domain.as_deref());
        subscriptions.push(
            client
                .subscribe(subject)
                .await
                .map_err(|e| EventsError::Broker(e.to_string()))?,
        );
    }
    let mut messages = futures_util::stream::select_all(subscriptions);
    let mut shown = 0u64;
    while filter.count.is_none_or(|c| shown < c) {
        let Some(message) = messages.next().await else {
            break;
        };
        let line = if readable {
            match serde_json::from_slice::<Value>(&message.payload) {
                Ok(v) => render(&v),
                Err(_) => String::from_utf8_lossy(&message.payload).into_owned(),
            }
        } else {
            String::from_utf8_lossy(&message.payload).into_owned()
        };
        writeln!(out, "{line}").map_err(|e| EventsError::Broker(format!("cannot write: {e}")))?;
        out.flush().ok();
        shown += 1;
    }
    Ok(())
}

fn broker_client(broker: &Broker) -> &async_nats::Client {
    broker.client()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_event_reads_as_one_line() {
        let v: Value = serde_json::json!({
            "time": "2026-12-02T10:00:00.000Z", "type": "dev.tollgate.audit.v1", "subject": "api",
            "data": {"action": "policy.put", "target": "api/p", "actor": "key:ab", "via": "rest", "outcome": "ok"}
        });
        assert_eq!(
            render(&v),
            "2026-12-02T10:00:00.000Z  audit   api  policy.put api/p by key:ab via rest: ok"
        );
    }
}
