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
    tls: bool,
}

impl RedisServer {
    /// Starts a server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments. A port taken between choosing
    /// and binding it (other tests start servers too) is retried on another.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::spawn_on(free_port(), extra) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// Starts a server that accepts only TLS, with a certificate for `127.0.0.1` signed by
    /// a throwaway CA; returns it with the CA's PEM, which clients must trust.
    pub fn start_tls() -> (Self, Vec<u8>) {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("tollgate-redis-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = |name: &str| dir.join(name).display().to_string();
        let (ca_key, ca_crt, key, csr, crt, ext) = (
            path("ca.key"),
            path("ca.crt"),
            path("server.key"),
            path("server.csr"),
            path("server.crt"),
            path("san.ext"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            .unwrap_or_else(|e| panic!("cannot write {ext}: {e}"));
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &ca_key,
                "-out",
                &ca_crt,
                "-days",
                "2",
                "-subj",
                "/CN=tollgate test CA",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ],
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run openssl: {e}; TLS tests need it (apt-get install openssl)")
                });
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let server = Self::start_on(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &crt,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca_crt,
                "--tls-auth-clients",
                "no",
            ],
        );
        let ca = std::fs::read(&ca_crt).unwrap_or_else(|e| panic!("cannot read {ca_crt}: {e}"));
        (server, ca)
    }

    /// Starts a server on `port` (to restart one where clients expect it).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::spawn_on(port, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    fn spawn_on(port: u16, extra: &[&str]) -> Result<Self, String> {
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
        let tls = extra.contains(&"--tls-port");
        let mut server = Self {
            child,
            port,
            dir,
            tls,
        };
        server.wait_until_answering()?;
        Ok(server)
    }

    fn tls_only(&self) -> bool {
        self.tls
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
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

    /// Waits for this server (checked by its process id) to answer; an error when it
    /// exited instead (its port was taken), a panic when it neither answers nor exits
    /// within 10 s.
    fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited at startup ({status}); is the port taken?",
                    self.port
                ));
            }
            // The server answering must be this one, not another that holds the port.
            if let Ok(reply) = command(self.port, &["INFO", "server"])
                && reply.contains(&format!("process_id:{}\r\n", self.child.id()))
            {
                return Ok(());
            }
            // A TLS-only server does not speak plain RESP: accepting connections is the
            // sign of life there, and the client under test does the rest.
            if self.tls_only() && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s",
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
