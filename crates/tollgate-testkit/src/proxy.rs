//! A TCP proxy between a client and a server that tests can make slow, unreachable, or a
//! black hole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Default)]
struct Faults {
    /// Added before each chunk is forwarded, in milliseconds.
    latency_ms: AtomicU64,
    /// New connections are closed at once; existing ones are cut.
    down: AtomicBool,
    /// Connections are accepted and kept, but nothing is forwarded either way until it
    /// ends (then what was held is delivered, as TCP would after a partition heals).
    black_hole: AtomicBool,
}

/// Forwards `127.0.0.1:<port>` to a target; see [`FaultProxy::set_latency`],
/// [`FaultProxy::set_down`] and [`FaultProxy::set_black_hole`]. Runs on its own thread; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `target` on a free loopback port.
    pub fn start(target: SocketAddr) -> Self {
        let faults = Arc::new(Faults::default());
        let (cut, cut_rx) = watch::channel(0u64);
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread_faults = faults.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("proxy runtime: {e}"));
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .unwrap_or_else(|e| panic!("proxy bind: {e}"));
                let _ = addr_tx.send(listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
                let stopper = tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                });
                tokio::pin!(stopper);
                loop {
                    tokio::select! {
                        _ = &mut stopper => return,
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            if thread_faults.down.load(Ordering::SeqCst) {
                                drop(client);
                                continue;
                            }
                            let faults = thread_faults.clone();
                            let cut = cut_rx.clone();
                            tokio::spawn(async move {
                                if let Ok(server) = TcpStream::connect(target).await {
                                    relay(client, server, faults, cut).await;
                                }
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
        Self {
            addr,
            faults,
            cut,
            stop: Some(stop_tx),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every forwarded chunk by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.faults.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// `true`: accept connections and keep them open, but forward nothing in either
    /// direction, so requests go unanswered (a partition, a hung server); `false`: heal,
    /// delivering what was held, as TCP does once a partition ends.
    pub fn set_black_hole(&self, on: bool) {
        self.faults.black_hole.store(on, Ordering::SeqCst);
    }

    /// `true`: cut every connection and refuse new ones (the server "dies"); `false`: heal.
    pub fn set_down(&self, down: bool) {
        self.faults.down.store(down, Ordering::SeqCst);
        if down {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.set_down(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Faults>,
    mut cut: watch::Receiver<u64>,
) {
    // Only cuts after this connection was made count.
    cut.borrow_and_update();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, &faults) => {}
        _ = pump(server_read, client_write, &faults) => {}
        _ = cut.changed() => {}
    }
}

/// Copies one direction of a connection, each chunk after the configured latency, until
/// either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: &Faults,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        delay(faults).await;
        // Held, not dropped: a partitioned network delays bytes (TCP retransmits them once
        // it heals) but never loses them from the middle of a stream. Meanwhile the peer
        // waits for an answer that does not come.
        while faults.black_hole.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn delay(faults: &Faults) {
    let ms = faults.latency_ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
