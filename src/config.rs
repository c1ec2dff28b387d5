//! The command line (protocol section 7). Every server flag also reads an
//! environment variable, `CHATD_<FLAG>`; numeric limits and timeouts
//! default to [`crate::limits`].
//!
//! Values that cannot work are refused when the command line is read, with
//! clap's one-line error naming the flag: a count or timeout of 0 where 0
//! means nothing useful (`--shards 0`, `--max-connections 0`,
//! `--call-timeout-ms 0`, `--listen-backlog 0`, ...). Listen addresses may
//! name a host (`localhost:7400`), resolved once at start (its first
//! address). A value the server adjusts is logged at start
//! ([`Config::adjustments`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::limits;
use crate::ws::handshake::OriginPolicy;

/// chatd: real-time messaging, in-call status and presence server.
#[derive(Parser, Debug, Clone)]
#[command(name = "chatd", version, about, long_about = None)]
pub struct Cli {
    /// What to run; without a subcommand, the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands besides running the server.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Compare this host's kernel and process settings with tuning.md's
    /// recommendations for N connections; exits non-zero if any is short.
    CheckHost {
        /// Connections the host should be able to hold.
        #[arg(long, default_value_t = 100_000)]
        connections: u64,
    },
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which socket I/O backend the shards run.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring when the host allows it, else epoll.
    Auto,
    /// io_uring (tokio-uring); fails to start where it is blocked.
    #[value(alias = "io_uring")]
    Uring,
    /// epoll (tokio).
    Epoll,
}

/// Server configuration.
#[derive(Parser, Debug, Clone)]
pub struct Config {
    /// Address of the chatd listener (rooms, messages, calls): IP:PORT or
    /// HOST:PORT. Port 0 binds a free port.
    #[arg(long, env = "CHATD_CHATD_LISTEN", default_value = "127.0.0.1:7400",
          value_parser = listen_addr)]
    pub chatd_listen: SocketAddr,

    /// Address of the statusd listener (presence). Port 0 binds a free port.
    #[arg(long, env = "CHATD_STATUSD_LISTEN", default_value = "127.0.0.1:7401",
          value_parser = listen_addr)]
    pub statusd_listen: SocketAddr,

    /// Address of the WebSocket listener: both services, by path (`/chatd`,
    /// `/statusd`); `wss` with --tls-cert. IP:PORT or HOST:PORT. Port 0
    /// binds a free port.
    #[arg(long, env = "CHATD_WS_LISTEN", default_value = "127.0.0.1:7402",
          value_parser = listen_addr)]
    pub ws_listen: SocketAddr,

    /// Browser origins that may open a WebSocket: `*`, or a comma-separated
    /// list of `scheme://host[:port]` (a handshake without Origin, from a
    /// client that is not a browser, is always allowed).
    #[arg(long, env = "CHATD_WS_ALLOWED_ORIGINS", default_value = "*")]
    pub ws_allowed_origins: OriginPolicy,

    /// TLS certificate chain (PEM, leaf first). With --tls-key, every
    /// listener accepts only TLS 1.2/1.3 (WebSocket becomes wss, the admin
    /// API https); SIGHUP re-reads both files.
    #[arg(long, env = "CHATD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "CHATD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Address of the admin HTTP API and /metrics. Port 0 binds a free port.
    #[arg(long, env = "CHATD_ADMIN_LISTEN", default_value = "127.0.0.1:7480",
          value_parser = listen_addr)]
    pub admin_listen: SocketAddr,

    /// Directory of the relation database and generated secrets.
    #[arg(long, env = "CHATD_DATA_DIR", default_value = "./chatd-data")]
    pub data_dir: PathBuf,

    /// HS256 secret that OP_AUTH tokens are signed with. Absent: read or
    /// generate `<data-dir>/jwt.secret`.
    #[arg(long, env = "CHATD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Bearer token of the admin API. Absent: read or generate
    /// `<data-dir>/admin.token`.
    #[arg(long, env = "CHATD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Shard threads, one per core (1 to 1024). Default: the cores
    /// available to the process.
    #[arg(long, env = "CHATD_SHARDS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=limits::SHARDS_MAX as u64))]
    pub shards: Option<usize>,

    /// A call participant with no OP_IN_CALL heartbeat for this long leaves the call.
    #[arg(long, env = "CHATD_CALL_TIMEOUT_MS", default_value_t = limits::DEFAULT_CALL_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub call_timeout_ms: u64,

    /// A connection that sent nothing for this long is closed.
    #[arg(long, env = "CHATD_IDLE_TIMEOUT_MS", default_value_t = limits::DEFAULT_IDLE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// A connection that has not completed OP_AUTH + OP_HELLO within this is closed.
    #[arg(long, env = "CHATD_LOGIN_TIMEOUT_MS", default_value_t = limits::DEFAULT_LOGIN_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub login_timeout_ms: u64,

    /// Largest OP_RTMSG msglen accepted (at most 16777215).
    #[arg(long, env = "CHATD_MAX_RTMSG_LEN", default_value_t = limits::DEFAULT_MAX_RTMSG_LEN,
          value_parser = clap::value_parser!(u32).range(1..=limits::MSGLEN_FIELD_MAX as i64))]
    pub max_rtmsg_len: u32,

    /// Bytes queued to one connection before it is closed as a slow
    /// consumer; raised (and logged) to two maximum-size messages if lower.
    #[arg(long, env = "CHATD_MAX_OUTBUF_BYTES", default_value_t = limits::DEFAULT_MAX_OUTBUF_BYTES)]
    pub max_outbuf_bytes: usize,

    /// Bytes of messages that may wait in one shard's queue before the
    /// connections sending to it stop reading until it is down to half
    /// (at least 65536).
    #[arg(long, env = "CHATD_MAX_SHARD_QUEUE_BYTES", default_value_t = limits::DEFAULT_MAX_SHARD_QUEUE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(limits::MIN_SHARD_QUEUE_BYTES as u64..))]
    pub max_shard_queue_bytes: usize,

    /// Presence updates about other users wait up to this long and go out
    /// together, one write per receiving connection (0: each at once).
    /// Trades presence latency for far fewer writes in a login storm.
    #[arg(long, env = "CHATD_PRESENCE_BATCH_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=limits::PRESENCE_BATCH_MS_MAX))]
    pub presence_batch_ms: u64,

    /// Accept queue length of each listener socket (capped by net.core.somaxconn).
    #[arg(long, env = "CHATD_LISTEN_BACKLOG", default_value_t = limits::DEFAULT_LISTEN_BACKLOG,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub listen_backlog: i32,

    /// I/O backend: uring (also spelled io_uring), epoll, or auto (uring
    /// where the host allows it).
    #[arg(long, env = "CHATD_IO_BACKEND", value_enum, default_value_t = IoBackend::Auto)]
    pub io_backend: IoBackend,

    /// On SIGTERM, how long connections get to take their last bytes.
    #[arg(long, env = "CHATD_DRAIN_TIMEOUT_MS", default_value_t = limits::DEFAULT_DRAIN_TIMEOUT_MS)]
    pub drain_timeout_ms: u64,

    /// Most open client connections (both services). Default: the
    /// open-file limit less a reserve, so accept never runs out of descriptors.
    #[arg(long, env = "CHATD_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Most connections of one user, both services together.
    #[arg(long, env = "CHATD_MAX_CONNECTIONS_PER_USER", default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_USER,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_user: u32,

    /// Most rooms one chatd connection may have joined.
    #[arg(long, env = "CHATD_MAX_ROOMS_PER_CONN", default_value_t = limits::DEFAULT_MAX_ROOMS_PER_CONN,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_rooms_per_conn: usize,

    /// OP_RTMSG per second per connection (bursts of twice that pass; 0: unlimited).
    #[arg(long, env = "CHATD_RTMSG_RATE", default_value_t = limits::DEFAULT_RTMSG_RATE)]
    pub rtmsg_rate: u32,

    /// OP_SETPRES per second per connection (bursts of twice that pass; 0: unlimited).
    #[arg(long, env = "CHATD_SETPRES_RATE", default_value_t = limits::DEFAULT_SETPRES_RATE)]
    pub setpres_rate: u32,

    /// Do not pin shard threads to cores.
    #[arg(long, env = "CHATD_NO_PIN")]
    pub no_pin: bool,

    /// Log format.
    #[arg(long, env = "CHATD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Cluster mode: the NATS servers (comma-separated `nats://host:port`)
    /// of the cluster this process is a node of (docs/cluster.md). Absent:
    /// a single node with its embedded store.
    #[arg(long, env = "CHATD_CLUSTER")]
    pub cluster: Option<String>,

    /// Cluster mode: this node's name, unique in the cluster. Default: a
    /// random id.
    #[arg(long, env = "CHATD_NODE_ID")]
    pub node_id: Option<String>,

    /// Cluster mode: a node silent this long is dropped by the others
    /// (its clients are withdrawn from calls and presence).
    #[arg(long, env = "CHATD_NODE_TIMEOUT_MS", default_value_t = limits::DEFAULT_NODE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub node_timeout_ms: u64,

    /// First chatd client id handed out (for tests of the wrap-around rule).
    #[arg(long, env = "CHATD_FIRST_CLIENT_ID", default_value_t = 1, hide = true)]
    pub first_client_id: u32,
}

impl Config {
    /// The output queue cap actually applied: `--max-outbuf-bytes`, but at
    /// least two maximum-size OP_RTMSG frames, so that a reader that keeps
    /// up is never cut off because messages are allowed to be large.
    pub fn outbuf_cap(&self) -> usize {
        let frame = self.max_rtmsg_len as usize + chatd_proto::chatd::RTMSG_HEADER_LEN;
        self.max_outbuf_bytes.max(2 * frame)
    }

    /// The connection limit: the flag, else RLIMIT_NOFILE less a reserve.
    pub fn connection_limit(&self) -> u64 {
        self.max_connections
            .unwrap_or_else(|| match crate::hostcheck::nofile_limit() {
                Some((soft, _)) if soft != libc::RLIM_INFINITY => {
                    soft.saturating_sub(limits::FD_RESERVE).max(1)
                }
                _ => u64::MAX,
            })
    }

    /// Shard count: the flag, else the cores this process may run on (at
    /// most [`limits::SHARDS_MAX`]).
    pub fn shard_count(&self) -> usize {
        self.shards
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .min(limits::SHARDS_MAX)
    }

    /// What the server applies in place of a value given (or defaulted),
    /// as lines for the start-up log.
    pub fn adjustments(&self) -> Vec<String> {
        let mut out = Vec::new();
        let cap = self.outbuf_cap();
        if cap != self.max_outbuf_bytes {
            out.push(format!(
                "--max-outbuf-bytes {} is below two maximum-size messages \
                 (--max-rtmsg-len {}): using {cap}",
                self.max_outbuf_bytes, self.max_rtmsg_len
            ));
        }
        if self.shards.is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if cores > limits::SHARDS_MAX {
                out.push(format!(
                    "{cores} cores available: running the most shards there may be, {}",
                    limits::SHARDS_MAX
                ));
            }
        }
        out
    }
}

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved now to its first
/// address (`localhost:7400`).
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("not an IP:PORT or HOST:PORT that resolves ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chatd").chain(args.iter().copied()))
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_the_flag() {
        for (flag, value) in [
            ("--shards", "0"),
            ("--shards", "1025"),
            ("--max-connections", "0"),
            ("--call-timeout-ms", "0"),
            ("--idle-timeout-ms", "0"),
            ("--login-timeout-ms", "0"),
            ("--listen-backlog", "0"),
            ("--listen-backlog=-5", ""),
            ("--max-connections-per-user", "0"),
            ("--max-rooms-per-conn", "0"),
            ("--max-rtmsg-len", "0"),
            ("--node-timeout-ms", "99"),
            ("--chatd-listen", "localhost"),
            ("--admin-listen", "127.0.0.1"),
        ] {
            let args: Vec<&str> = [flag, value]
                .into_iter()
                .filter(|a| !a.is_empty())
                .collect();
            let err = match parse(&args) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{flag} {value} was accepted"),
            };
            let first = err.lines().next().unwrap_or_default();
            let name = flag.split('=').next().unwrap_or(flag);
            assert!(first.contains(name), "{flag} {value}: {first}");
        }
    }

    #[test]
    fn the_smallest_useful_values_are_accepted() {
        let cli = parse(&[
            "--shards",
            "1",
            "--max-connections",
            "1",
            "--call-timeout-ms",
            "1",
            "--listen-backlog",
            "1",
            "--max-rooms-per-conn",
            "1",
            "--drain-timeout-ms",
            "0",
            "--rtmsg-rate",
            "0",
        ])
        .unwrap();
        assert_eq!(cli.config.shard_count(), 1);
        assert_eq!(cli.config.connection_limit(), 1);
    }

    #[test]
    fn listen_addresses_may_name_a_host() {
        let cli = parse(&[
            "--chatd-listen",
            "localhost:7400",
            "--statusd-listen",
            "[::1]:0",
            "--ws-listen",
            "localhost:0",
        ])
        .unwrap();
        assert!(cli.config.chatd_listen.ip().is_loopback());
        assert!(cli.config.ws_listen.ip().is_loopback());
        assert_eq!(cli.config.chatd_listen.port(), 7400);
        assert_eq!(cli.config.statusd_listen, "[::1]:0".parse().unwrap());
    }

    #[test]
    fn a_raised_output_cap_is_reported() {
        let cli = parse(&["--max-outbuf-bytes", "1", "--max-rtmsg-len", "100"]).unwrap();
        let cap = 2 * (100 + chatd_proto::chatd::RTMSG_HEADER_LEN);
        assert_eq!(cli.config.outbuf_cap(), cap);
        let lines = cli.config.adjustments();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("--max-outbuf-bytes 1 ")
                && lines[0].ends_with(&format!("using {cap}"))
        );
        assert!(parse(&[]).unwrap().config.adjustments().is_empty());
    }
}
