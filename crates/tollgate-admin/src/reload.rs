//! Policy hot reload. The policy path (file or directory, possibly a symlink that is
//! swapped, as Kubernetes ConfigMaps and envoyproxy/ratelimit's runtime directories do) is
//! polled; when what it points at changes, the policies are rebuilt and swapped in whole.
//! A file that does not validate is rejected with its errors logged, and the policies in
//! force stay. Counters of unchanged limits survive, since counter keys do not depend on
//! the policy version.
//!
//! Polling rather than inotify: it sees symlink swaps of any path component, works on
//! every filesystem, and costs a few `stat` calls per interval.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tollgate_data::AppState;

use crate::sync::PolicyControl;

/// How often the policy path is checked; a change applies within this much time.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// What identifies the policy files' current version: path, size, modification time and
/// inode of each, plus a hash of the contents of files modified in the last
/// [`RECENT`] (two writes within one tick of the filesystem clock can leave size and time
/// alike; older files are not read again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, u64, u128, u64, u64)>);

/// How recent a modification must be for the file's contents to be hashed.
const RECENT: Duration = Duration::from_secs(2);

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// The current [`Fingerprint`] of the policy files under `path`.
pub fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let root = std::fs::canonicalize(path)?;
    let mut files = vec![root.clone()];
    if root.is_dir() {
        files = std::fs::read_dir(&root)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| crate::policies::is_policy_file(p))
            .collect();
        files.sort();
    }
    let mut out = Vec::with_capacity(files.len() + 1);
    out.push((root, 0, 0, 0, 0));
    for f in files {
        let meta = std::fs::metadata(&f)?;
        let modified = meta.modified()?;
        let mtime = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let recent = modified.elapsed().map_or(true, |age| age < RECENT);
        let contents = if recent {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&std::fs::read(&f)?, &mut h);
            std::hash::Hasher::finish(&h)
        } else {
            0
        };
        out.push((f, meta.len(), mtime, inode(&meta), contents));
    }
    Ok(Fingerprint(out))
}

/// Watches `path` for the life of the process, putting valid changes in force next to the
/// database's domains (`control`). `loaded` is the fingerprint taken just before the
/// policies in force were read, so a change made while the service started is not missed.
pub fn spawn(
    state: Arc<AppState>,
    control: Arc<PolicyControl>,
    path: PathBuf,
    loaded: Option<Fingerprint>,
) {
    tokio::spawn(async move {
        let mut last = loaded;
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let p = path.clone();
            let seen = match tokio::task::spawn_blocking(move || fingerprint(&p)).await {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => {
                    // Mid-swap or deleted: keep serving and look again next time.
                    tracing::debug!(path = %path.display(), error = %e, "policy path unreadable");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy watcher failed");
                    continue;
                }
            };
            if last.as_ref() == Some(&seen) {
                continue;
            }
            last = Some(seen);
            let p = path.clone();
            let read = tokio::task::spawn_blocking(move || crate::policies::read_files(&p)).await;
            let result = match read {
                Ok(Ok(files)) => control
                    .update(&state, |s| s.files = files)
                    .map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(domains) => {
                    state.metrics.reloaded(true);
                    tracing::info!(path = %path.display(), ?domains, "policies reloaded");
                }
                Err(e) => {
                    state.metrics.reloaded(false);
                    tracing::error!(
                        path = %path.display(),
                        error = e,
                        "new policies rejected; the previous ones stay in force"
                    );
                }
            }
        }
    });
}
