//! The RESP front end (`--resp-addr`): any Redis client asks Tollgate. `CL.THROTTLE`
//! answers as redis-cell does ([`cell`]), `THROTTLE` as throttlecrab-server does
//! ([`crab`]), `TG.CHECK` checks a domain's policies, and
//! enough of Redis's connection commands (`PING`, `HELLO`, `AUTH`, `CLIENT`, `COMMAND`,
//! `SELECT 0`, `QUIT`) for `redis-cli` and client libraries to talk to it.
//!
//! Each connection reads what the socket has, answers every complete command in order
//! into one output buffer, and writes that buffer once: a pipeline of N commands costs
//! one read and one write.

pub mod cell;
mod commands;
pub mod crab;
pub mod frame;

use std::net::TcpListener as StdListener;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use futures_util::future::LocalBoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::front_end::FrontEnd;
use crate::listener::{Connection, accept_until_stopped};
use crate::state::AppState;
use crate::tls::{MaybeTls, ReloadingTls};
use commands::{Next, Session, Together};
use frame::Out;

/// The RESP listener.
pub struct RespFrontEnd {
    /// TLS for the listener, if configured.
    pub tls: Option<Arc<ReloadingTls>>,
    /// The redis-cell release `CL.THROTTLE` answers as.
    pub cell_release: cell::CellRelease,
}

impl FrontEnd for RespFrontEnd {
    fn name(&self) -> &'static str {
        "resp"
    }

    fn serve(
        self: Arc<Self>,
        listener: StdListener,
        state: Arc<AppState>,
        stop: watch::Receiver<bool>,
    ) -> LocalBoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let cell_release = self.cell_release;
            accept_until_stopped(
                "resp",
                listener,
                stop,
                None,
                self.tls.clone(),
                move |stream| RespConnection::new(stream, state.clone(), cell_release),
            )
            .await;
            Ok(())
        })
    }
}

/// One client connection.
pub struct RespConnection {
    served: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>,
    stopping: Arc<AtomicBool>,
}

impl RespConnection {
    fn new(io: MaybeTls, state: Arc<AppState>, cell_release: cell::CellRelease) -> Self {
        let stopping = Arc::new(AtomicBool::new(false));
        Self {
            served: Box::pin(serve(io, state, stopping.clone(), cell_release)),
            stopping,
        }
    }
}

impl Future for RespConnection {
    type Output = std::io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.served.as_mut().poll(cx)
    }
}

impl Connection for RespConnection {
    type Error = std::io::Error;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        // Seen by the read it waits in, which the accept loop polls right after this call:
        // the commands already read are answered, then the connection closes.
        self.stopping.store(true, Ordering::Relaxed);
    }
}

const READ_CHUNK: usize = 16 * 1024;
/// Most pipelined decisions sent to the store together.
const MAX_TOGETHER: usize = 256;

async fn serve(
    mut io: MaybeTls,
    state: Arc<AppState>,
    stopping: Arc<AtomicBool>,
    cell_release: cell::CellRelease,
) -> std::io::Result<()> {
    let mut read = BytesMut::with_capacity(READ_CHUNK);
    let mut written = BytesMut::with_capacity(READ_CHUNK);
    let mut session = Session::new(state.data_token.is_none(), cell_release);
    // A shared store answers a pipeline's decisions in one round trip when they go
    // together; in memory each is as cheap alone.
    let together = state.limiter.store().is_shared();
    loop {
        // Every command complete in the buffer, then the answers, in order.
        let mut used = 0;
        let mut close = false;
        let mut commands: smallvec::SmallVec<[(usize, frame::Command); 16]> =
            smallvec::SmallVec::new();
        let mut framing = None;
        loop {
            match frame::next_command(&read[used..]) {
                Ok(Some((command, len))) => {
                    commands.push((used, command));
                    used += len;
                }
                Ok(None) => break,
                Err(e) => {
                    framing = Some(e);
                    break;
                }
            }
        }
        let args_of = |(base, command): &(usize, frame::Command)| {
            let args: smallvec::SmallVec<[&[u8]; 8]> = command
                .args
                .iter()
                .map(|r| &read[base + r.start..base + r.end])
                .collect();
            args
        };
        let mut i = 0;
        while i < commands.len() {
            let mut out = Out {
                buf: &mut written,
                version: session.version,
            };
            if commands[i].1.oversized {
                out.error(&format!(
                    "ERR a command takes at most {} arguments of at most {} bytes each",
                    frame::MAX_ARGS,
                    frame::MAX_ARG_BYTES
                ));
                i += 1;
                continue;
            }
            let args = args_of(&commands[i]);
            let Some(&name) = args.first() else {
                i += 1;
                continue;
            };
            if together
                && session.authenticated()
                && let Some(kind) = Together::of(name)
            {
                let run: Vec<_> = commands[i..]
                    .iter()
                    .take(MAX_TOGETHER)
                    .take_while(|c| !c.1.oversized)
                    .map(args_of)
                    .take_while(|a| a.first().is_some_and(|&n| Together::of(n) == Some(kind)))
                    .collect();
                if run.len() > 1 {
                    i += run.len();
                    commands::answer_together(&state, kind, &run, session.cell_release(), &mut out)
                        .await;
                    continue;
                }
            }
            i += 1;
            if session.answer(&state, &args, &mut out).await == Next::Close {
                close = true;
                break;
            }
        }
        if !close && let Some(e) = framing {
            // Redis answers a framing error and closes: nothing after it can be trusted
            // to start where a command starts.
            let mut out = Out {
                buf: &mut written,
                version: session.version,
            };
            out.error(&format!("ERR {e}"));
            close = true;
        }
        read.advance(used);
        if !written.is_empty() {
            io.write_all(&written).await?;
            written.clear();
        }
        if close {
            let _ = io.shutdown().await;
            return Ok(());
        }
        let n = std::future::poll_fn(|cx| {
            if stopping.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(0));
            }
            if read.capacity() - read.len() < 1024 {
                read.reserve(READ_CHUNK);
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut read)
        })
        .await?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// A number drawn from one of three ranges, so property tests reach every magnitude
/// (toy, everyday, year-scale) rather than mostly the widest range's.
#[cfg(test)]
fn spread(ranges: [(i64, i64); 3]) -> impl proptest::strategy::Strategy<Value = i64> {
    use proptest::prelude::*;
    prop_oneof![
        ranges[0].0..ranges[0].1,
        ranges[1].0..ranges[1].1,
        ranges[2].0..ranges[2].1
    ]
}
