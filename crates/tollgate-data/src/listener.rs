//! The accept loop every listener shares: connections, TLS handshakes, graceful shutdown,
//! connection ages. Front ends bring what a connection is; this brings when it starts
//! and ends.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::{MaybeTls, ReloadingTls};

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection the accept loop serves: a future that ends with the connection, which can
/// be asked to finish its requests and close. After `graceful_shutdown` the accept loop
/// polls the connection again, so the request may be noticed on that poll.
pub trait Connection: Future<Output = Result<(), Self::Error>> {
    /// What a failed connection reports (logged at debug level).
    type Error;

    /// Asks the connection to finish the requests it has started, then close.
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Connection for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Error = hyper::Error;

    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> Connection for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Error = hyper::Error;

    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

/// Binds one listening socket with `SO_REUSEPORT`, so this process's workers can share
/// `addr`.
fn bind_shared(addr: SocketAddr) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Fails with `AddrInUse` when another socket listens on `addr`. `SO_REUSEPORT` would let
/// a second process join this one's sockets and the kernel would split connections between
/// them (an old process still running during a deploy, two configurations naming one
/// port); a probe without it is refused by any listener, whatever its options.
/// `SO_REUSEADDR` keeps connections in `TIME_WAIT` from a process that just stopped from
/// counting as "in use". Two processes that start within the same microseconds can still
/// both pass; nothing short of one socket per address closes that window.
fn refuse_if_served(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{addr} is already in use by another process (is another tollgate running?)"),
        )),
        other => other,
    }
}

/// Binds `workers` listening sockets on `addr`, one per worker (one port, chosen by the
/// first when 0), after making sure no other process listens there.
pub fn bind_workers(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<StdListener>> {
    refuse_if_served(addr)?;
    let first = bind_shared(addr)?;
    let chosen = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind_shared(chosen)?);
    }
    Ok(listeners)
}

/// How long connections may live (gRPC's "max connection age"): after `age` (± 10 %,
/// so that connections opened together do not all close together) a connection is asked
/// to finish, and closed `grace` later if it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge {
    /// Age at which the connection is asked to close.
    pub age: Duration,
    /// Time left to in-flight requests after that.
    pub grace: Duration,
}

/// Accepts connections until `stop` turns true, serving each with `connection`, then
/// lets the open ones finish their requests (at most [`DRAIN_TIMEOUT`]). With `max_age`,
/// connections are also recycled when they reach that age. With `tls`, each connection
/// first completes a TLS handshake (in its own task, so a slow client holds up no one).
pub async fn accept_until_stopped<C, F>(
    name: &'static str,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    max_age: Option<MaxAge>,
    tls: Option<Arc<ReloadingTls>>,
    connection: F,
) where
    F: Fn(MaybeTls) -> C + Clone + Send + 'static,
    C: Connection + Send + 'static,
    C::Error: std::fmt::Display + Send,
{
    // Every connection task holds a sender; when all are gone, draining is done.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut jitter = (u64::from(std::process::id()) << 16) | 1;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        // Answers are one small write: never hold them back for Nagle.
        let _ = stream.set_nodelay(true);
        metrics::counter!("tollgate_connections_total", "listener" => name).increment(1);
        let (open, mut stop) = (open_tx.clone(), stop.clone());
        let (tls, connection) = (tls.clone(), connection.clone());
        // A cheap xorshift spreads ages over ±10 %; no need for a random-number crate.
        jitter ^= jitter << 13;
        jitter ^= jitter >> 7;
        jitter ^= jitter << 17;
        let max_age = max_age.map(|m| {
            let tenth = m.age.as_millis() as u64 / 10;
            let offset = if tenth == 0 { 0 } else { jitter % (2 * tenth) };
            (
                m.age - Duration::from_millis(tenth) + Duration::from_millis(offset),
                m.grace,
            )
        });
        tokio::spawn(async move {
            let _open = open;
            let stream = match tls {
                None => tokio_util::either::Either::Left(stream),
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        metrics::counter!("tollgate_tls_handshake_failures_total", "listener" => name)
                            .increment(1);
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
            };
            let served = connection(stream);
            let mut served = std::pin::pin!(served);
            let age = async {
                match max_age {
                    Some((age, _)) => tokio::time::sleep(age).await,
                    None => std::future::pending().await,
                }
            };
            let stopping = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            let result = tokio::select! {
                result = served.as_mut() => result,
                () = stopping => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
                () = age => {
                    served.as_mut().graceful_shutdown();
                    let grace = max_age.map_or(Duration::ZERO, |(_, grace)| grace);
                    match tokio::time::timeout(grace, served).await {
                        Ok(result) => result,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, open_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_an_address_that_another_listener_is_refused() {
        let workers = bind_workers("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = workers[0].local_addr().unwrap();
        assert!(workers.iter().all(|l| l.local_addr().unwrap() == addr));
        // Another bind of the same address (as a second process would do) is refused,
        // though the sockets above allow port reuse among themselves.
        let err = bind_workers(addr, 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        // A plain listener elsewhere is refused the same way.
        let plain = StdListener::bind("127.0.0.1:0").unwrap();
        let err = bind_workers(plain.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(workers);
        // Once the address is free again it can be bound.
        let again = bind_workers(addr, 2);
        assert!(again.is_ok(), "{:?}", again.err());
    }
}
