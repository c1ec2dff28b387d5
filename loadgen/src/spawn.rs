//! `--spawn`: starts a chatd binary for the run (fresh data dir under the
//! temp dir, port 0 for all three listeners), learns its addresses from the
//! "X listening on ADDR" lines and its admin token from
//! `<data-dir>/admin.token`, and stops it with SIGTERM afterwards.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server gets to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Why the server could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// Creating the data dir or log, or exec, failed.
    Io(std::io::Error),
    /// The server exited or printed something unexpected before listening.
    Startup(String),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Io(e) => write!(f, "starting the server: {e}"),
            SpawnError::Startup(s) => write!(f, "starting the server: {s}"),
        }
    }
}

impl std::error::Error for SpawnError {}

impl From<std::io::Error> for SpawnError {
    fn from(e: std::io::Error) -> Self {
        SpawnError::Io(e)
    }
}

/// A server started by loadgen.
pub struct Spawned {
    child: Option<Child>,
    /// chatd listener.
    pub chatd: SocketAddr,
    /// statusd listener.
    pub statusd: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
    /// WebSocket listener.
    pub ws: SocketAddr,
    /// Admin bearer token.
    pub admin_token: String,
    /// Process id.
    pub pid: u32,
    /// With `tls`: the certificate (PEM) the server was started with.
    pub cert_pem: Option<String>,
    dir: PathBuf,
}

/// Starts `binary` with `--shards shards` (when given) and `extra`
/// arguments; with `tls`, with a self-signed certificate for 127.0.0.1
/// made here (rcgen).
pub fn start(
    binary: &Path,
    shards: Option<usize>,
    extra: &[String],
    tls: bool,
) -> Result<Spawned, SpawnError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("loadgen-{}-{nanos}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join("chatd.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(binary);
    cmd.args(["--chatd-listen", "127.0.0.1:0"])
        .args(["--statusd-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--ws-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data);
    if let Some(n) = shards {
        cmd.args(["--shards", &n.to_string()]);
    }
    let cert_pem = if tls {
        let key = rcgen::KeyPair::generate().map_err(|e| SpawnError::Startup(e.to_string()))?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| SpawnError::Startup(e.to_string()))?;
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        cmd.arg("--tls-cert").arg(&c).arg("--tls-key").arg(&k);
        Some(cert.pem())
    } else {
        None
    };
    cmd.args(extra)
        .env_remove("CHATD_JWT_SECRET")
        .env_remove("CHATD_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let fail = |child: &mut Child, msg: String| {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        SpawnError::Startup(format!("{msg}\n--- server log ---\n{log}"))
    };
    let Some(stdout) = child.stdout.take() else {
        return Err(fail(&mut child, "no stdout".into()));
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::with_capacity(4);
    for name in ["chatd", "statusd", "admin", "ws"] {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            _ => return Err(fail(&mut child, "server exited before listening".into())),
        };
        let prefix = format!("{name} listening on ");
        match line.strip_prefix(&prefix).map(str::parse::<SocketAddr>) {
            Some(Ok(a)) => addrs.push(a),
            _ => return Err(fail(&mut child, format!("unexpected line {line:?}"))),
        }
    }
    // Keep draining stdout so that the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let token = match std::fs::read_to_string(data.join("admin.token")) {
        Ok(t) => t.trim().to_string(),
        Err(e) => return Err(fail(&mut child, format!("admin.token: {e}"))),
    };
    Ok(Spawned {
        child: Some(child),
        chatd: addrs[0],
        statusd: addrs[1],
        admin: addrs[2],
        ws: addrs[3],
        admin_token: token,
        pid,
        cert_pem,
        dir,
    })
}

impl Spawned {
    /// Sends SIGTERM, waits for the exit (killing after [`STOP_WAIT`]) and
    /// removes the data dir. Returns the exit code when there was one.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we own; no memory involved.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        let code = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!("loadgen: server did not stop within {STOP_WAIT:?}; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        code
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chatd.log")).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}
