//! The floor under any RESP server on this machine: one thread, one `epoll` loop, and for
//! every command one fixed `CL.THROTTLE`-shaped reply (`PONG` to `PING`), no decision. What it costs a
//! request is what the kernel costs one read and one write on loopback, plus Tollgate's
//! framing; `scripts/bench-resp` measures it beside the real servers, so a CPU-per-decision
//! figure can be read against what no server can go under.
//!
//! Usage: `cargo run --release -p tollgate-data --example resp_floor -- PORT`

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tollgate_data::resp::frame::next_command;

const LISTENER: Token = Token(usize::MAX);
/// What redis-cell answers an admitted call with a large burst.
const REPLY: &[u8] = b"*5\r\n:0\r\n:1000000001\r\n:1000000000\r\n:-1\r\n:0\r\n";

struct Client {
    stream: TcpStream,
    read: Vec<u8>,
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("usage: resp_floor PORT"))?;
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into())?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut clients: HashMap<Token, Client> = HashMap::new();
    let mut events = Events::with_capacity(256);
    let mut next = 0;
    let mut chunk = vec![0u8; 16 * 1024];
    let mut written = Vec::with_capacity(16 * 1024);
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    let token = Token(next);
                    next += 1;
                    poll.registry()
                        .register(&mut stream, token, Interest::READABLE)?;
                    let read = Vec::new();
                    clients.insert(token, Client { stream, read });
                }
                continue;
            }
            let Some(client) = clients.get_mut(&event.token()) else {
                continue;
            };
            let mut closed = false;
            loop {
                match client.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        client.read.extend_from_slice(&chunk[..n]);
                        let mut used = 0;
                        while let Ok(Some((command, len))) = next_command(&client.read[used..]) {
                            let name = command
                                .args
                                .first()
                                .map(|r| &client.read[used..][r.clone()]);
                            match name {
                                Some(name) if name.eq_ignore_ascii_case(b"PING") => {
                                    written.extend_from_slice(b"+PONG\r\n");
                                }
                                _ => written.extend_from_slice(REPLY),
                            }
                            used += len;
                        }
                        client.read.drain(..used);
                        // Replies are a few dozen bytes: the socket's buffer takes them
                        // whole, or the client is not reading and is dropped.
                        let sent = client.stream.write_all(&written);
                        written.clear();
                        if sent.is_err() {
                            closed = true;
                            break;
                        }
                        if n < chunk.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                clients.remove(&event.token());
            }
        }
    }
}
