//! Where the broker is and how to reach it. Checked before serving: a malformed URL or an
//! unreadable credentials file refuses to start with the flag named; an unreachable broker
//! does not (events wait, decisions are served).

use std::path::PathBuf;
use std::time::Duration;

use crate::EventsError;

/// How to reach the event broker.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `nats://HOST:PORT` or `tls://HOST:PORT` (user and password may be in the URL).
    pub url: String,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// CA certificates to trust for the broker's TLS (PEM).
    pub ca: Option<PathBuf>,
    /// A client certificate and key for mutual TLS (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// This node's name in data-plane events' `source`.
    pub node: String,
    /// How long a publish waits for JetStream's acknowledgement.
    pub ack_timeout: Duration,
}

impl EventsConfig {
    /// A configuration for `url` with defaults, checked.
    pub fn new(url: &str, node: &str) -> Result<Self, EventsError> {
        check_url(url)?;
        Ok(Self {
            url: url.to_owned(),
            credentials: None,
            ca: None,
            client_cert: None,
            node: node.to_owned(),
            ack_timeout: Duration::from_secs(5),
        })
    }

    /// Checks that the files it names can be read (before anything connects).
    pub fn check_files(&self) -> Result<(), EventsError> {
        let readable = |flag: &'static str, path: &PathBuf| {
            std::fs::metadata(path)
                .map(|_| ())
                .map_err(|e| EventsError::Config {
                    flag,
                    message: format!("cannot read {}: {e}", path.display()),
                })
        };
        if let Some(path) = &self.credentials {
            readable("--events-credentials", path)?;
            let text = std::fs::read_to_string(path).map_err(|e| EventsError::Config {
                flag: "--events-credentials",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            if !text.contains("-----BEGIN NATS USER JWT-----")
                || !text.contains("-----BEGIN USER NKEY SEED-----")
            {
                return Err(EventsError::Config {
                    flag: "--events-credentials",
                    message: format!(
                        "{} is not a NATS credentials file (a user JWT and an NKey seed, as `nsc generate creds` writes)",
                        path.display()
                    ),
                });
            }
        }
        if let Some(path) = &self.ca {
            readable("--events-ca", path)?;
        }
        if let Some((cert, key)) = &self.client_cert {
            readable("--events-client-cert", cert)?;
            readable("--events-client-key", key)?;
        }
        Ok(())
    }

    /// The URL without its password, for logs.
    pub fn redacted_url(&self) -> String {
        match self
            .url
            .split_once("://")
            .and_then(|(s, rest)| rest.split_once('@').map(|(u, h)| (s, u, h)))
        {
            Some((scheme, userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://***@{host}"),
            },
            None => self.url.clone(),
        }
    }
}

/// `nats://[user[:password]@]host:port` or `tls://…`, one or more comma-separated servers.
fn check_url(url: &str) -> Result<(), EventsError> {
    let bad = |message: String| EventsError::Config {
        flag: "--events",
        message,
    };
    if url.is_empty() {
        return Err(bad("is empty; give nats://HOST:PORT".into()));
    }
    for server in url.split(',') {
        let Some((scheme, rest)) = server.split_once("://") else {
            return Err(bad(format!(
                "'{server}' has no scheme; give nats://HOST:PORT or tls://HOST:PORT"
            )));
        };
        if scheme != "nats" && scheme != "tls" {
            return Err(bad(format!("scheme '{scheme}' is neither nats nor tls")));
        }
        let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host_port = host_port.trim_end_matches('/');
        let Some((host, port)) = host_port.rsplit_once(':') else {
            return Err(bad(format!(
                "'{host_port}' has no port; give HOST:PORT (NATS listens on 4222 by default)"
            )));
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad(format!("'{host_port}' has no host")));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(format!("port '{port}' is not a port number")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_pass_and_bad_ones_name_the_flag_and_the_fault() {
        for good in [
            "nats://127.0.0.1:4222",
            "tls://user:pw@broker:4443",
            "nats://a:1,nats://b:2",
        ] {
            assert!(EventsConfig::new(good, "n").is_ok(), "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("127.0.0.1:4222", "no scheme"),
            ("http://x:1", "neither nats nor tls"),
            ("nats://host", "no port"),
            ("nats://:4222", "no host"),
            ("nats://h:99999", "not a port"),
        ] {
            let e = EventsConfig::new(bad, "n").unwrap_err().to_string();
            assert!(
                e.starts_with("--events: ") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        let c = EventsConfig::new("nats://alice:secret@h:4222", "n").unwrap();
        assert_eq!(c.redacted_url(), "nats://alice:***@h:4222");
    }
}
