//! Fault proxies for scripts: one [`FaultProxy`] per target port, steered over stdin.
//!
//! `fault_proxies PORT...` starts a proxy on loopback in front of each `127.0.0.1:PORT`
//! and prints `PORT PROXY_PORT` per target, then `ready`. Then it reads one command per
//! line: `cut-off PID` (that process's connections through every proxy are cut and
//! refused), `heal`, `down` (every connection), `up`. It answers each with `ok` and exits
//! at the end of its input. `scripts/bench-accuracy` puts these in front of a Redis
//! Cluster (announcing the proxies' ports) to cut one Tollgate node off from it.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use tollgate_testkit::FaultProxy;

fn main() -> ExitCode {
    let mut targets = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.parse::<u16>() {
            Ok(port) => targets.push(port),
            Err(_) => {
                eprintln!("fault_proxies: '{arg}' is not a port; usage: fault_proxies PORT...");
                return ExitCode::from(2);
            }
        }
    }
    let proxies: Vec<FaultProxy> = targets
        .iter()
        .map(|&port| FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port))))
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (port, proxy) in targets.iter().zip(&proxies) {
        let _ = writeln!(out, "{port} {}", proxy.addr().port());
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words[..] {
            ["cut-off", pid] => match pid.parse::<u32>() {
                Ok(pid) => {
                    proxies.iter().for_each(|p| p.set_cut_off_pid(Some(pid)));
                    "ok".to_owned()
                }
                Err(_) => format!("error: '{pid}' is not a process id"),
            },
            ["heal"] => {
                proxies.iter().for_each(|p| p.set_cut_off_pid(None));
                "ok".to_owned()
            }
            ["down"] => {
                proxies.iter().for_each(|p| p.set_down(true));
                "ok".to_owned()
            }
            ["up"] => {
                proxies.iter().for_each(|p| p.set_down(false));
                "ok".to_owned()
            }
            [] => continue,
            _ => format!("error: unknown command '{line}' (cut-off PID, heal, down, up)"),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}
