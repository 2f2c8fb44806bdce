//! Live decisions for whoever watches (the GraphQL subscription). Publishing costs one
//! atomic load while nobody watches; with watchers, one allocation and a broadcast send,
//! never a wait: a watcher that falls behind loses the oldest events, not the data plane's
//! time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::broadcast;
use tollgate_core::{CheckRequest, Decision};

/// Events a slow watcher may lag behind before it starts losing them.
const BUFFER: usize = 1024;

/// One decision, as watchers see it.
#[derive(Debug, Clone)]
pub struct DecisionEvent {
    /// The domain asked about.
    pub domain: String,
    /// The overall decision.
    pub allowed: bool,
    /// When (RFC 3339).
    pub at: String,
    /// One per descriptor, in request order.
    pub descriptors: Vec<DescriptorEvent>,
}

/// One descriptor of a [`DecisionEvent`].
#[derive(Debug, Clone)]
pub struct DescriptorEvent {
    /// The entries as `key=value`.
    pub entries: Vec<String>,
    /// Whether this descriptor's limit admitted the request.
    pub allowed: bool,
    /// The policy that matched, if any.
    pub policy: Option<String>,
    /// What is left of the limit.
    pub remaining: u64,
    /// A shadow-mode policy that would have denied this descriptor (it was admitted).
    pub shadow_denied: bool,
}

/// The broadcast point.
#[derive(Debug)]
pub struct DecisionTap {
    sender: broadcast::Sender<Arc<DecisionEvent>>,
    watchers: AtomicUsize,
}

impl Default for DecisionTap {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BUFFER).0,
            watchers: AtomicUsize::new(0),
        }
    }
}

/// A subscription; the watcher count drops with it.
pub struct Watch {
    /// The events.
    pub events: broadcast::Receiver<Arc<DecisionEvent>>,
    tap: Arc<DecisionTap>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.tap.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DecisionTap {
    /// Starts watching.
    pub fn watch(self: &Arc<Self>) -> Watch {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            events: self.sender.subscribe(),
            tap: self.clone(),
        }
    }

    /// Publishes a decision if anyone watches.
    pub fn publish(&self, request: &CheckRequest<'_>, decision: &Decision) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let descriptors = request
            .descriptors
            .iter()
            .zip(&decision.statuses)
            .map(|(d, s)| DescriptorEvent {
                entries: d
                    .entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, e.value))
                    .collect(),
                allowed: s.allowed,
                policy: s.rule.as_ref().map(|r| r.name().to_owned()),
                remaining: s.remaining,
                shadow_denied: s.shadow_denied,
            })
            .collect();
        let event = DecisionEvent {
            domain: request.domain.to_owned(),
            allowed: decision.allowed,
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            descriptors,
        };
        // No receiver left between the check and the send: nothing to do.
        let _ = self.sender.send(Arc::new(event));
    }
}
