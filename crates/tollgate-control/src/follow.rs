//! Learning of changes other nodes make. With PostgreSQL every write transaction sends
//! `NOTIFY tollgate_policies '<revision>'`; each node listens, and re-reads the store's
//! revision whenever its listening connection was lost (notifications sent meanwhile are
//! gone) and every [`POLL_EVERY`] as a backstop. With SQLite (one node) writes are
//! in-process, and [`ControlPlane::revisions`] already sees them.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::db::Backend;
use crate::service::{CHANNEL, ControlPlane};

/// How often the store's revision is read even without notifications.
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// Follows the store's revision for as long as the task runs, reporting each newer one to
/// `control` (see [`ControlPlane::revisions`]).
pub async fn follow(control: Arc<ControlPlane>) {
    follow_polling_every(control, POLL_EVERY).await
}

/// [`follow`] with another backstop interval (a test sets it beyond its own length, so that
/// only a notification can bring a change).
pub async fn follow_polling_every(control: Arc<ControlPlane>, every: Duration) {
    match control.database().backend() {
        Backend::Postgres => follow_postgres(control, every).await,
        Backend::Sqlite => poll(control, every).await,
    }
}

async fn poll(control: Arc<ControlPlane>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        resync(&control).await;
    }
}

async fn resync(control: &ControlPlane) {
    match control.current_revision().await {
        Ok(revision) => control.heard(revision),
        Err(e) => tracing::warn!(error = %e, "cannot read the policy store's revision"),
    }
}

async fn follow_postgres(control: Arc<ControlPlane>, every: Duration) {
    let url = control.database().url().to_owned();
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for policy changes; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot LISTEN for policy changes; retrying in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tracing::debug!(channel = CHANNEL, "listening for policy changes");
        // Anything sent before LISTEN took effect is caught by reading the revision now.
        resync(&control).await;
        loop {
            let next = tokio::time::timeout(every, listener.try_recv()).await;
            match next {
                Ok(Ok(Some(notification))) => match notification.payload().parse::<i64>() {
                    Ok(revision) => control.heard(revision),
                    Err(_) => resync(&control).await,
                },
                Ok(Ok(None)) => {
                    // The connection dropped; the listener reconnects on the next call.
                    // Notifications sent in between are lost: read the revision instead.
                    tracing::info!("policy change listener reconnecting; re-reading the store");
                    resync(&control).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "policy change listener failed; reconnecting");
                    break;
                }
                Err(_) => resync(&control).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
