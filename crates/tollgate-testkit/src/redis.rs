//! Private Redis servers for tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

const HOW_TO_GET_REDIS: &str = "tests need the `redis-server` and `redis-cli` binaries \
     (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), \
     or a Valkey build with the same names on the PATH";

/// One private `redis-server` on a free loopback port; killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// Starts a server on `port` (to restart one where clients expect it).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tollgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let port_text = port.to_string();
        let mut args = vec![
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ];
        let dir_text = dir.display().to_string();
        args.extend(["--dir", &dir_text]);
        args.extend_from_slice(extra);
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}; {HOW_TO_GET_REDIS}"));
        let server = Self { child, port, dir };
        server.wait_until_answering();
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command and returns its raw RESP reply.
    pub fn command(&self, args: &[&str]) -> String {
        command(self.port, args)
            .unwrap_or_else(|e| panic!("redis on port {} did not answer {args:?}: {e}", self.port))
    }

    /// Kills the server now (a crash, not a shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_until_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = command(self.port, &["PING"])
                && reply.starts_with("+PONG")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three private masters joined into a Redis Cluster (no replicas); stopped on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters and splits the 16 384 slots between them.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]).args(&addresses).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        let out = create
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}; {HOW_TO_GET_REDIS}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster
            .nodes
            .iter()
            .all(|n| n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "the Cluster did not reach state ok within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The masters.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// Sends one command in RESP and reads one reply (good enough for short replies).
fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf)?;
    let mut reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    // A bulk reply may arrive in several reads.
    if let Some(len) = reply
        .strip_prefix('$')
        .and_then(|r| r.split("\r\n").next())
        .and_then(|l| l.parse::<usize>().ok())
    {
        while reply.len() < len + 5 {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    Ok(reply)
}
