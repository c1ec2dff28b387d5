//! Cluster harness (protocol section 10): a real `nats-server -js` with a
//! temp store directory on a free loopback port, and chatd nodes started
//! with `--cluster` (each its own process, port 0 everywhere, temp data
//! dirs), sharing one JWT secret and admin token.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Server, WAIT};

/// The node timeout the cluster tests run with (short, so node loss is
/// tested quickly; heartbeats every quarter of it).
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// A running nats-server with JetStream.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    starts: usize,
}

impl Nats {
    /// Starts one on a free loopback port (`-p -1`: nats-server picks it
    /// and logs it).
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nats = Nats {
            child: None,
            port: 0,
            dir,
            starts: 0,
        };
        nats.spawn("-1");
        nats
    }

    fn spawn(&mut self, port: &str) {
        self.starts += 1;
        let log = self.dir.path().join(format!("nats.{}.log", self.starts));
        let err = std::fs::File::create(&log).expect("nats log");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", port])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let listening = text.lines().find_map(|l| {
                l.split("Listening for client connections on ")
                    .nth(1)
                    .and_then(|a| a.trim().rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok())
            });
            if let (Some(p), true) = (listening, text.contains("Server is ready")) {
                self.port = p;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL: an outage, not a drain).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        self.spawn(&port);
    }

    /// Where its store is (for failure messages).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// NATS and the chatd nodes of one cluster.
pub struct Cluster {
    pub nats: Nats,
    pub nodes: Vec<Server>,
    secret: String,
    token: String,
    shards: usize,
}

impl Cluster {
    /// NATS and `n` nodes (`n1`, `n2`, ...) of `shards` shards each.
    pub fn start(n: usize, shards: usize) -> Cluster {
        let mut c = Cluster {
            nats: Nats::start(),
            nodes: Vec::new(),
            secret: "cluster-test-jwt-secret".into(),
            token: "cluster-test-admin-token".into(),
            shards,
        };
        for i in 1..=n {
            let node = c.node(&format!("n{i}"), &[]);
            c.nodes.push(node);
        }
        c
    }

    /// Starts a node named `id` (not added to `nodes`), with `extra`
    /// arguments.
    pub fn node(&self, id: &str, extra: &[&str]) -> Server {
        let secrets = ["--jwt-secret", &self.secret, "--admin-token", &self.token];
        self.node_with(id, &[&secrets[..], extra].concat())
    }

    /// Starts a node named `id` given neither `--jwt-secret` nor
    /// `--admin-token`: it takes the cluster's (protocol section 10: one
    /// server seen from outside).
    pub fn node_without_secrets(&self, id: &str) -> Server {
        self.node_with(id, &[])
    }

    /// A node of this cluster named `id`, with `extra` arguments.
    fn node_with(&self, id: &str, extra: &[&str]) -> Server {
        let url = self.nats.url();
        let timeout = NODE_TIMEOUT_MS.to_string();
        let mut args = vec![
            "--cluster",
            &url,
            "--node-id",
            id,
            "--node-timeout-ms",
            &timeout,
        ];
        args.extend_from_slice(extra);
        Server::start(self.shards, &args)
    }

    /// Node `i` (0-based).
    pub fn at(&self, i: usize) -> &Server {
        &self.nodes[i]
    }
}

/// Message type of the probes [`await_route`] sends.
pub const PROBE_TYPE: u8 = 0xFE;

/// Waits until a message from `from` in `chat` reaches `to` (on another
/// node: the nodes learn each other's interest in a room asynchronously,
/// docs/cluster.md): `from` sends probes addressed to `to`'s client until
/// one arrives (bounded by [`WAIT`]), then every probe still in flight is
/// read off. Other traffic must not be flowing to `to` meanwhile.
pub fn await_route(from: &mut super::ChatdClient, to: &mut super::ChatdClient, chat: u64) {
    let deadline = Instant::now() + WAIT;
    let mut sent = 0u32;
    loop {
        sent += 1;
        from.rtmsg(chat, to.user, to.client_id, PROBE_TYPE, &sent.to_be_bytes());
        if let Some(ev) = to.recv_within(Duration::from_millis(100)) {
            match ev {
                super::Ev::RtMsg { msgtype, data, .. } if msgtype == PROBE_TYPE => {
                    // Probes arrive in order: read off the later ones.
                    let got = u32::from_be_bytes(data[..4].try_into().expect("probe"));
                    for _ in got..sent {
                        match to.recv() {
                            super::Ev::RtMsg { msgtype, .. } if msgtype == PROBE_TYPE => {}
                            other => panic!("expected a probe, got {other:?}"),
                        }
                    }
                    return;
                }
                other => panic!("expected a probe, got {other:?}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no route from user {} to user {} in room {chat} within {WAIT:?}",
            from.user,
            to.user
        );
    }
}
