//! Browser sessions of the dashboard. Signing in exchanges an API key or a JWT for a
//! random session id, sent back as an `HttpOnly`, `SameSite=Strict` cookie (also `Secure`
//! when the admin listener has TLS); every later request through the cookie is
//! authenticated again with the credential kept here, so a revoked key or an expired token
//! ends its sessions at once. Changes need the session's CSRF token in `X-CSRF-Token`.
//!
//! Sessions live in this node's memory: a restart signs everyone out, and behind several
//! nodes a browser needs to keep reaching the same one (sticky sessions).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_control::ControlError;
use tollgate_control::keys::random_hex;

/// The cookie's name.
pub const COOKIE: &str = "tg_session";

/// The header that carries the CSRF token on every change.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Most sessions kept at once; past it, the one closest to expiry goes.
pub const MAX_SESSIONS: usize = 10_000;

/// A session in the table: what requests see, and when it ends on the monotonic clock.
struct Session {
    view: SessionRef,
    expires: Instant,
}

/// A live session as the request handling sees it.
#[derive(Debug, Clone)]
pub struct SessionRef {
    /// The session's key in the table (SHA-256 of the cookie's id).
    pub key: [u8; 32],
    /// The credential it authenticates with (memory only; never logged or sent back).
    pub credential: String,
    /// Its CSRF token.
    pub csrf: String,
    /// When it ends.
    pub expires_at: SystemTime,
}

impl SessionRef {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// The sessions of this node.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Starts a session for `credential`: the cookie's id and the session.
    pub fn start(&self, credential: &str) -> Result<(String, SessionRef), ControlError> {
        let id = random_hex(32)?;
        let view = SessionRef {
            key: key_of(&id),
            credential: credential.to_owned(),
            csrf: random_hex(32)?,
            expires_at: SystemTime::now() + SESSION_TTL,
        };
        let session = Session {
            view: view.clone(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= MAX_SESSIONS {
            let now = Instant::now();
            table.retain(|_, s| s.expires > now);
            if table.len() >= MAX_SESSIONS
                && let Some(oldest) = table.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        table.insert(view.key, session);
        Ok((id, view))
    }

    /// The live session of cookie id `id`; an expired one is forgotten.
    pub fn find(&self, id: &str) -> Option<SessionRef> {
        let key = key_of(id);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let session = table.get(&key)?;
        if session.expires <= Instant::now() {
            table.remove(&key);
            return None;
        }
        Some(session.view.clone())
    }

    /// Ends the session `key`.
    pub fn end(&self, key: &[u8; 32]) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// How many sessions are live or not yet forgotten.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value that hands `id` to the browser (`secure`: over TLS only).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends() {
        let sessions = Sessions::default();
        let (id, started) = sessions.start("tg_abc_secret").expect("random");
        assert_eq!(id.len(), 64);
        let found = sessions.find(&id).expect("live");
        assert_eq!(found.credential, "tg_abc_secret");
        assert!(found.csrf_matches(&started.csrf));
        assert!(!found.csrf_matches("x"));
        assert!(!found.csrf_matches(""));
        assert!(sessions.find(&format!("{id}0")).is_none());
        sessions.end(&found.key);
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let sessions = Sessions::default();
        for _ in 0..MAX_SESSIONS + 5 {
            sessions.start("k").expect("random");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn cookies_are_read_by_name_and_set_with_every_attribute() {
        assert_eq!(cookie("a=1; tg_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("tg_sessionx=1", COOKIE), None);
        let set = set_cookie("id", true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=28800",
            "Path=/",
        ] {
            assert!(set.contains(part), "{set} lacks {part}");
        }
        assert!(!set_cookie("id", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
