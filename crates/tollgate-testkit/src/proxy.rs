//! A TCP proxy between a client and a server that tests can make slow, unreachable, or a
//! black hole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// Connections of this process (0: none) are cut and refused: one client cut off while
    /// the others still pass.
    cut_off_pid: AtomicU32,
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
                            let Ok((client, peer)) = accepted else { continue };
                            if thread_faults.down.load(Ordering::SeqCst)
                                || thread_faults.is_cut_off(peer)
                            {
                                drop(client);
                                continue;
                            }
                            let faults = thread_faults.clone();
                            let cut = cut_rx.clone();
                            tokio::spawn(async move {
                                if let Ok(server) = TcpStream::connect(target).await {
                                    relay(client, peer, server, faults, cut).await;
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

    /// Cuts the connections of process `pid` and refuses its new ones, while every other
    /// client passes (one node partitioned from a store its peers still reach); `None`
    /// heals. Linux only: a connection's process is found through `/proc`.
    pub fn set_cut_off_pid(&self, pid: Option<u32>) {
        self.faults
            .cut_off_pid
            .store(pid.unwrap_or(0), Ordering::SeqCst);
        if pid.is_some() {
            self.cut.send_modify(|n| *n += 1);
        }
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

impl Faults {
    /// Whether the client at `peer` belongs to the cut-off process.
    fn is_cut_off(&self, peer: SocketAddr) -> bool {
        match self.cut_off_pid.load(Ordering::SeqCst) {
            0 => false,
            pid => socket_owner_is(pid, peer),
        }
    }
}

/// Whether process `pid` holds the loopback socket whose local address is `peer`: the
/// socket's inode from `/proc/net/tcp`, then a `socket:[inode]` among the process's files.
fn socket_owner_is(pid: u32, peer: SocketAddr) -> bool {
    let SocketAddr::V4(peer) = peer else {
        return false;
    };
    // /proc/net/tcp writes an address as the u32 in host order, in hex, then the port.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(peer.ip().octets()),
        peer.port()
    );
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // Every socket with that local address, not the first: an earlier connection from the
    // same port may linger in TIME_WAIT, and such an entry has inode 0 (no process holds
    // it), so taking the first line found would miss the live socket.
    let wanted: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match (fields.get(1), fields.get(9)) {
                (Some(addr), Some(inode)) if *addr == local && *inode != "0" => {
                    Some(format!("socket:[{inode}]"))
                }
                _ => None,
            }
        })
        .collect();
    if wanted.is_empty() {
        return false;
    }
    let Ok(files) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    files.flatten().any(|f| {
        std::fs::read_link(f.path())
            .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
    })
}

async fn relay(
    client: TcpStream,
    peer: SocketAddr,
    server: TcpStream,
    faults: Arc<Faults>,
    mut cut: watch::Receiver<u64>,
) {
    // Only cuts after this connection was made count.
    cut.borrow_and_update();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let to_server = pump(client_read, server_write, &faults);
    let to_client = pump(server_read, client_write, &faults);
    tokio::pin!(to_server, to_client);
    loop {
        tokio::select! {
            _ = &mut to_server => return,
            _ = &mut to_client => return,
            changed = cut.changed() => {
                if changed.is_err()
                    || faults.down.load(Ordering::SeqCst)
                    || faults.is_cut_off(peer)
                {
                    return;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// An echo server on loopback, answering every connection on its own thread.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Whether a round trip through `stream` still echoes.
    fn echoes(stream: &mut TcpStream) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 4];
        stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
    }

    #[test]
    fn a_cut_off_process_loses_its_connections_while_others_keep_theirs() {
        let proxy = FaultProxy::start(echo_server());
        let mut ours = TcpStream::connect(proxy.addr()).expect("connect");
        assert!(echoes(&mut ours));
        // Another process cut off: this one's connection still passes.
        let other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        proxy.set_cut_off_pid(Some(other.id()));
        assert!(echoes(&mut ours), "a connection of another process was cut");
        let mut fresh = TcpStream::connect(proxy.addr()).expect("connect");
        assert!(
            echoes(&mut fresh),
            "a new connection of another process was refused"
        );
        // This process cut off: its connections end, new ones are closed at once.
        proxy.set_cut_off_pid(Some(std::process::id()));
        // The proxy cuts on its own thread: a round trip may still pass before it has.
        let ceiling = std::time::Instant::now() + Duration::from_secs(10);
        while echoes(&mut ours) {
            assert!(
                std::time::Instant::now() < ceiling,
                "the cut-off process's connection still passes"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut refused = TcpStream::connect(proxy.addr()).expect("the proxy accepts, then closes");
        assert!(!echoes(&mut refused));
        proxy.set_cut_off_pid(None);
        let mut healed = TcpStream::connect(proxy.addr()).expect("connect");
        assert!(echoes(&mut healed), "healed, yet refused");
        let mut other = other;
        let _ = other.kill();
        let _ = other.wait();
    }
}
