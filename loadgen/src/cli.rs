//! The command line: one subcommand per scenario, plus the options every
//! scenario shares (where the server is, how long to run, where reports go).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// loadgen: load generator and latency reporter for chatd.
///
/// Every run provisions its own users, rooms and contacts through the admin
/// API, drives open-loop load at a target rate (or finds saturation with
/// --max), verifies every delivery (lost, duplicated, reordered,
/// misaddressed messages and unexpected errors make it exit with code 2)
/// and writes `<scenario>.txt/.hgrm/.json` reports.
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", version, about, long_about)]
pub struct Cli {
    /// Which scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// R rooms x M members (one connection each); a share of the members
    /// broadcast OP_RTMSG (receiver 0/0) at a total rate.
    Fanout(FanoutArgs),
    /// Pairs of users with several devices each exchanging user-addressed
    /// and client-addressed OP_RTMSG.
    Direct(DirectArgs),
    /// Rooms whose members heartbeat OP_IN_CALL every 2-5 s; one member per
    /// room enters and leaves the call to flip the room's flag; measures the
    /// latency of the flip to OP_IN_CALL at the other members.
    Calls(CallsArgs),
    /// statusd users with contact lists and shared rooms changing presence
    /// at a rate; measures OP_SETPRES to OP_PRES latency at watchers. With
    /// --login-storm: all users log in at once; reports logins/s.
    Presence(PresenceArgs),
    /// Opens N authenticated chatd connections joined to rooms, holds them,
    /// reports connect rate, failures and the server's memory per connection.
    Connections(ConnectionsArgs),
    /// One room of N members (one PUT) with K online on statusd, plus bulk
    /// imports through /v1/batch: import times and server memory, login
    /// dumps, presence fan-out to K-1 watchers, membership changes under
    /// load.
    Bigroom(BigroomArgs),
    /// A short fanout, calls and presence run (with --smoke also direct, a
    /// login storm and a small connections run) back to back; prints every
    /// report.
    Suite(SuiteArgs),
}

/// Where the server is, or how to start one.
#[derive(Args, Debug, Clone)]
pub struct ServerOpts {
    /// Start this chatd binary for the run (temp data dir, port 0 for all
    /// three listeners) and stop it (SIGTERM) afterwards. Overrides
    /// --chatd/--statusd/--admin/--admin-token.
    #[arg(long, value_name = "PATH")]
    pub spawn: Option<PathBuf>,

    /// With --spawn: the server's --shards (default: the server's own default).
    #[arg(long, value_name = "N")]
    pub server_shards: Option<usize>,

    /// With --spawn: one extra argument for the server (repeatable), e.g.
    /// --server-arg=--no-pin.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,

    /// chatd listener of a running server.
    #[arg(long, env = "LOADGEN_CHATD", default_value = "127.0.0.1:7400")]
    pub chatd: SocketAddr,

    /// Cluster mode: the chatd listener of another node of the same
    /// cluster (repeatable). `fanout` spreads each room's connections over
    /// --chatd and these, round-robin, so rooms span nodes.
    #[arg(long, value_name = "ADDR")]
    pub chatd_also: Vec<SocketAddr>,

    /// statusd listener of a running server.
    #[arg(long, env = "LOADGEN_STATUSD", default_value = "127.0.0.1:7401")]
    pub statusd: SocketAddr,

    /// Admin API of a running server (provisioning of rooms, contacts, tokens).
    #[arg(long, env = "LOADGEN_ADMIN", default_value = "127.0.0.1:7480")]
    pub admin: SocketAddr,

    /// Bearer token of the admin API of a running server.
    #[arg(long, env = "LOADGEN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Pid of a running server, to report its RSS (VmRSS) and CPU time.
    /// Known without this flag under --spawn.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// How clients reach the server: tcp (the chatd/statusd listeners), ws
    /// (the WebSocket listener, paths /chatd and /statusd), tls (TLS on
    /// the chatd/statusd listeners) or wss (TLS on the WebSocket listener).
    /// tls and wss speak https to the admin API too. With --spawn, tls and
    /// wss start the server with a certificate loadgen makes. For
    /// `fanout --target nats`, ws reaches NATS's own WebSocket listener at
    /// --nats.
    #[arg(long, env = "LOADGEN_TRANSPORT", value_enum, default_value_t = TransportKind::Tcp)]
    pub transport: TransportKind,

    /// WebSocket listener of a running server (--transport ws/wss).
    #[arg(long, env = "LOADGEN_WS", default_value = "127.0.0.1:7402")]
    pub ws: SocketAddr,

    /// The certificate (PEM) a running server's TLS is trusted by
    /// (--transport tls/wss without --spawn).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// `--transport`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// WebSocket.
    Ws,
    /// TLS over TCP.
    Tls,
    /// WebSocket over TLS.
    Wss,
}

impl TransportKind {
    /// TLS underneath.
    pub fn tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }

    /// WebSocket framing.
    pub fn ws(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
    }
}

/// Options every scenario shares.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// Measured seconds of load (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of load before measuring starts; excluded from the latency
    /// histograms and throughput (deliveries are still verified).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,

    /// Loadgen threads; each runs a tokio current-thread runtime that owns a
    /// share of the connections (whole rooms stay on one thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// After the load stops, how long to wait for outstanding deliveries
    /// before counting them lost.
    #[arg(long, default_value_t = 3000)]
    pub drain_ms: u64,

    /// First user id and chat id of this run (default: derived from the
    /// clock, so repeated runs against one server do not collide).
    #[arg(long)]
    pub id_base: Option<u64>,

    /// Bind client sockets to N source addresses, 127.0.0.1 .. (connection i
    /// uses 127.0.0.1 + i % N, spilling into 127.x.y.z), so that one host can
    /// open more than 64k connections. 0: let the kernel choose.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub source_ips: u32,

    /// Most connection attempts in flight per loadgen thread during setup.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Directory that `<scenario>.txt/.hgrm/.json` go to.
    #[arg(long, default_value = "./bench-reports")]
    pub report_dir: PathBuf,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Seed of the jitter generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `fanout` options.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerOpts,
    /// Common run options.
    #[command(flatten)]
    pub run: RunOpts,
    /// Fanout parameters.
    #[command(flatten)]
    pub p: FanoutParams,
}

/// The fanout workload.
#[derive(Args, Debug, Clone)]
pub struct FanoutParams {
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,

    /// Members per room (one user and one connection each).
    #[arg(long, default_value_t = 10)]
    pub members: usize,

    /// Share of each room's members that send (at least one per room).
    #[arg(long, default_value_t = 0.1)]
    pub sender_share: f64,

    /// Total OP_RTMSG per second over all senders (ignored with --max), on
    /// staggered fixed schedules kept to the microsecond (the report's send
    /// lag says how well). Deliveries per second are about rate x (members - 1).
    #[arg(long, default_value_t = 10000.0)]
    pub rate: f64,

    /// msgdata bytes per message (at least 32: the verification stamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,

    /// Find the saturation point instead of holding a rate: every sender
    /// keeps at most --window messages not yet received by all the other
    /// members of its room, and sends again as soon as one completes.
    #[arg(long)]
    pub max: bool,

    /// With --max: messages in flight per sender. The throughput is bounded
    /// by window / latency, which favours servers with a short pipeline:
    /// sweep it (bench/compare.sh runs 16, 64, 256, 1024) and take each
    /// server at its best.
    #[arg(long, default_value_t = 4)]
    pub window: usize,

    /// The server: chatd (OP_RTMSG to the room), redis (RESP SUBSCRIBE /
    /// PUBLISH on channel room.N, at --redis), nats (SUB / PUB on subject
    /// room.N, at --nats) or floor (bench/floor.c at --chatd: chatd's wire,
    /// no admin API, so nothing is provisioned). Same workload, I/O loop and
    /// verification for all.
    #[arg(long, value_enum, default_value_t = PubSubTarget::Chatd)]
    pub target: PubSubTarget,

    /// Publishers per room in addition to the --members receivers (then
    /// --sender-share is ignored). Redis and NATS publishers are
    /// connections of their own that do not subscribe; chatd publishers
    /// are room members (chatd requires it) and so also receive the other
    /// publishers' messages. Default: chatd, the first --sender-share of the
    /// members send; redis/nats, --sender-share x members extra publishers.
    #[arg(long, value_name = "P")]
    pub publishers: Option<usize>,

    /// Redis server for --target redis.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6379")]
    pub redis: SocketAddr,

    /// NATS server for --target nats.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4222")]
    pub nats: SocketAddr,
}

/// The pub/sub server `fanout` drives.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubTarget {
    /// chatd: OP_RTMSG broadcast to the room.
    Chatd,
    /// Redis pub/sub (RESP2).
    Redis,
    /// NATS core pub/sub.
    Nats,
    /// The performance floor (bench/floor.c): chatd's fan-out wire
    /// protocol with no token, membership or admin API.
    Floor,
}

impl PubSubTarget {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            PubSubTarget::Chatd => "chatd",
            PubSubTarget::Redis => "redis",
            PubSubTarget::Nats => "nats",
            PubSubTarget::Floor => "floor",
        }
    }

    /// Whether it speaks chatd's wire protocol (rooms joined with OP_JOIN,
    /// every member receives, the sender never gets its own message).
    pub fn chatd_wire(self) -> bool {
        matches!(self, PubSubTarget::Chatd | PubSubTarget::Floor)
    }
}

/// `direct` options.
#[derive(Args, Debug, Clone)]
pub struct DirectArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerOpts,
    /// Common run options.
    #[command(flatten)]
    pub run: RunOpts,
    /// Direct parameters.
    #[command(flatten)]
    pub p: DirectParams,
}

/// The direct-message workload.
#[derive(Args, Debug, Clone)]
pub struct DirectParams {
    /// Pairs of users; each pair shares one room.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,

    /// Connections (devices) per user. Every device sends, alternately to
    /// the other user (user-addressed: all its devices receive) and to the
    /// other user's device of the same index (client-addressed).
    #[arg(long, default_value_t = 2)]
    pub devices: usize,

    /// Total OP_RTMSG per second over all devices.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,

    /// msgdata bytes per message (at least 32).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// `calls` options.
#[derive(Args, Debug, Clone)]
pub struct CallsArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerOpts,
    /// Common run options.
    #[command(flatten)]
    pub run: RunOpts,
    /// Calls parameters.
    #[command(flatten)]
    pub p: CallsParams,
}

/// The in-call workload.
#[derive(Args, Debug, Clone)]
pub struct CallsParams {
    /// Rooms.
    #[arg(long, default_value_t = 200)]
    pub rooms: usize,

    /// Members per room (at least 2): member 0 stays in the call, member 1
    /// enters and leaves it (each entry and exit flips the room's flag),
    /// the rest only watch.
    #[arg(long, default_value_t = 4)]
    pub members: usize,

    /// Milliseconds between flips of a room's flag (member 1's first
    /// heartbeat, then its status 0, and so on; each room has its own phase).
    #[arg(long, default_value_t = 1000)]
    pub flip_ms: u64,

    /// Shortest interval between a participant's heartbeats.
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_min_ms: u64,

    /// Longest interval between a participant's heartbeats (uniform jitter
    /// between min and max).
    #[arg(long, default_value_t = 5000)]
    pub heartbeat_max_ms: u64,

    /// Send each heartbeat this many times, back to back in one write.
    /// A stand-in for many participants' heartbeats where the host's file
    /// limit caps the connections: it measures how many OP_IN_CALL the
    /// server absorbs (pipelined), while the flips keep measuring latency.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub heartbeat_batch: u64,
}

/// `presence` options.
#[derive(Args, Debug, Clone)]
pub struct PresenceArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerOpts,
    /// Common run options.
    #[command(flatten)]
    pub run: RunOpts,
    /// Presence parameters.
    #[command(flatten)]
    pub p: PresenceParams,
}

/// The presence workload.
#[derive(Args, Debug, Clone)]
pub struct PresenceParams {
    /// Users (one statusd connection each).
    #[arg(long, default_value_t = 500)]
    pub users: usize,

    /// Contacts per user (a ring: user i with i +- 1 .. K/2).
    #[arg(long, default_value_t = 6)]
    pub contacts: usize,

    /// Members of each shared room (users far apart on the ring); 0 or 1: no rooms.
    #[arg(long, default_value_t = 5)]
    pub room_size: usize,

    /// Presence changes per second over all users.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,

    /// Share of the changes sent as automatic (0x80 flag) instead of user-set.
    #[arg(long, default_value_t = 0.3)]
    pub auto_share: f64,

    /// Instead of changing presence: all users log in at once (OP_HELLO
    /// presence 3) and the run reports logins/s and login latency (connect
    /// to the end of the login dump).
    #[arg(long)]
    pub login_storm: bool,
}

/// `bigroom` options.
#[derive(Args, Debug, Clone)]
pub struct BigroomArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerOpts,
    /// Common run options.
    #[command(flatten)]
    pub run: RunOpts,
    /// Bigroom parameters.
    #[command(flatten)]
    pub p: BigroomParams,
}

/// The bigroom workload (see `scenarios::bigroom`).
#[derive(Args, Debug, Clone)]
pub struct BigroomParams {
    /// Members of the big room, put in one `PUT /v1/rooms/{id}`.
    #[arg(long, default_value_t = 100_000)]
    pub members: usize,
    /// Members logged in to statusd (the first ones); 0 or 1: no online
    /// phases.
    #[arg(long, default_value_t = 1000)]
    pub online: usize,
    /// Presence changes of member 1, each awaited at every other online
    /// member.
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    /// Presence changes written back to back before waiting for them.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Members of a second room built through `POST /v1/batch`.
    #[arg(long, default_value_t = 0)]
    pub batch_members: usize,
    /// Operations per `POST /v1/batch`.
    #[arg(long, default_value_t = 100_000)]
    pub batch_size: usize,
    /// Contact pairs imported through `POST /v1/batch`.
    #[arg(long, default_value_t = 0)]
    pub contact_pairs: usize,
    /// Online members removed from the big room and added back during the
    /// presence changes.
    #[arg(long, default_value_t = 0)]
    pub membership_ops: usize,
}

/// `connections` options.
#[derive(Args, Debug, Clone)]
pub struct ConnectionsArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerOpts,
    /// Common run options.
    #[command(flatten)]
    pub run: RunOpts,
    /// Connections parameters.
    #[command(flatten)]
    pub p: ConnectionsParams,
}

/// The connection-count workload.
#[derive(Args, Debug, Clone)]
pub struct ConnectionsParams {
    /// Connections (one user each).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub conns: usize,

    /// Members per room; every connection joins its room.
    #[arg(long, default_value_t = 10)]
    pub members: usize,

    /// Seconds to hold the connections open once all are up.
    #[arg(long, default_value_t = 5.0)]
    pub hold_secs: f64,
}

/// `suite` options.
#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Server location.
    #[command(flatten)]
    pub server: ServerOpts,
    /// Common run options (--duration applies to each scenario).
    #[command(flatten)]
    pub run: RunOpts,
    /// CI mode: small sizes, short warm-up, adds a presence login storm and
    /// a 500-connection run; fails only on lost, duplicated, reordered or
    /// misaddressed messages and errors, never on latency.
    #[arg(long)]
    pub smoke: bool,
}
