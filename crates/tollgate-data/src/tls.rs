//! TLS for every listener (rustls), with optional client certificates (mTLS) and
//! certificate files reloaded when they change, without a restart.
//!
//! Each listener holds a [`ReloadingTls`]: the current `rustls::ServerConfig` behind an
//! `ArcSwap`, read once per new connection. A watcher polls the files' modification times
//! every second (polling, not inotify: it works the same for files replaced by rename, on
//! Kubernetes secret volumes and over NFS, and costs three `stat` calls a second). A
//! change that does not load (a half-written key, a mismatched pair) is logged and the old
//! configuration stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How often certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that sign client certificates; when set, clients must present
    /// one (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A connection, with or without TLS.
pub type MaybeTls =
    tokio_util::either::Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// The peer's address of a connection, plain or TLS.
pub fn peer_addr(stream: &MaybeTls) -> Option<std::net::SocketAddr> {
    match stream {
        tokio_util::either::Either::Left(tcp) => tcp.peer_addr().ok(),
        tokio_util::either::Either::Right(tls) => tls.get_ref().0.peer_addr().ok(),
    }
}

/// A listener's TLS configuration, reloaded when its files change.
pub struct ReloadingTls {
    settings: TlsSettings,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<ServerConfig>,
    stamps: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a server configuration from the files, offering `alpn` protocols.
fn build(settings: &TlsSettings, alpn: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| format!("cannot read certificates from {}", settings.cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", settings.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .with_context(|| format!("cannot read a private key from {}", settings.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| {
                format!("cannot read client CA certificates from {}", ca.display())
            })? {
                let cert =
                    cert.with_context(|| format!("invalid certificate in {}", ca.display()))?;
                roots.add(cert).with_context(|| {
                    format!("unusable client CA certificate in {}", ca.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .with_context(|| format!("no usable client CA in {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {}",
            settings.key.display(),
            settings.cert.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingTls {
    /// Loads the files now (failing startup if they do not load), offering `alpn`.
    pub fn load(settings: &TlsSettings, alpn: &[&[u8]]) -> anyhow::Result<Arc<Self>> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = build(settings, &alpn)?;
        let this = Self {
            stamps: std::sync::Mutex::new(Self::stamps_of(settings)),
            settings: settings.clone(),
            alpn,
            current: ArcSwap::from_pointee(config),
        };
        Ok(Arc::new(this))
    }

    fn stamps_of(settings: &TlsSettings) -> Vec<Option<SystemTime>> {
        [
            Some(&settings.cert),
            Some(&settings.key),
            settings.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| stamp(p))
        .collect()
    }

    /// Reloads if a file changed; true when a new configuration is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = Self::stamps_of(&self.settings);
        {
            let Ok(mut seen) = self.stamps.lock() else {
                return false;
            };
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match build(&self.settings, &self.alpn) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS files changed but do not load; keeping the previous certificate"
                );
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_EVERY`] until `stop` turns true.
    pub fn spawn_watcher(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let this = self.clone();
        tokio::spawn(async move {
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let mut stopping = std::pin::pin!(stopping);
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let this = this.clone();
                        // File reads off the runtime's workers.
                        let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                    }
                    () = &mut stopping => return,
                }
            }
        });
    }

    /// Runs the handshake on `stream` with the current configuration.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<MaybeTls> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(tokio_util::either::Either::Right(tls)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}
/// Each listener's TLS configuration (the data listeners require client certificates when
/// a client CA is configured; the admin listener authenticates with keys and tokens).
pub struct ListenerTls {
    /// The HTTP front end's.
    pub http: Arc<ReloadingTls>,
    /// The gRPC front end's.
    pub grpc: Arc<ReloadingTls>,
    /// The RESP front end's (no ALPN: Redis clients offer none).
    pub resp: Arc<ReloadingTls>,
    /// The admin listener's.
    pub admin: Arc<ReloadingTls>,
}

impl ListenerTls {
    /// Loads each listener's configuration from `settings`.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Self> {
        let admin = TlsSettings {
            client_ca: None,
            ..settings.clone()
        };
        Ok(Self {
            http: ReloadingTls::load(settings, &[b"http/1.1"])?,
            grpc: ReloadingTls::load(settings, &[b"h2"])?,
            resp: ReloadingTls::load(settings, &[])?,
            admin: ReloadingTls::load(&admin, &[b"http/1.1"])?,
        })
    }
}
