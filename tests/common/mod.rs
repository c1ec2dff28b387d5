//! Test harness: starts the real `chatd` binary (port 0, temp data dir),
//! talks to it over real loopback sockets, and speaks its admin API
//! (through `chatd-client`'s admin client).
//!
//! The blocking chatd and statusd clients here are for tests that need
//! each byte in their hands (bad input, exact order of answers); they
//! frame with `chatd-proto` and log in with `chatd_client::login`. Tests
//! of ordinary client behaviour use `chatd-client` itself (tests/client.rs).
//!
//! Every wait is bounded: a read that gets nothing within [`WAIT`] fails
//! the test instead of hanging it.
//!
//! The clients speak the transport `CHATD_TEST_TRANSPORT` names (tcp,
//! ws, tls, wss; [`wire`]), so the whole suite runs over each.

#![allow(dead_code)]

pub mod cluster;
pub mod presence_model;
pub mod wire;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatd_client::admin::blocking::AdminClient;
use chatd_client::login::{self, ChatdLogin, StatusdLogin};
use chatd_proto::chatd::{self as cw, Request};
use chatd_proto::statusd as sw;
use chatd_proto::Limits;

pub use self::wire::{test_tls, transport, Endpoint, Svc, TestTransport, Wire};

/// Longest wait for anything the server should send.
pub const WAIT: Duration = Duration::from_secs(10);

/// Tests `f(shards)` for each `f` named, once on one shard and once on
/// three: `one_shard::f` and `three_shards::f`. (Allowed unused, as
/// everything here: not every test uses it.)
#[allow(unused_macros)]
macro_rules! on_one_and_three_shards {
    ($($f:ident),* $(,)?) => {
        mod one_shard {
            $(#[test] fn $f() { super::$f(1) })*
        }
        mod three_shards {
            $(#[test] fn $f() { super::$f(3) })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_one_and_three_shards;

/// The I/O backend the tests run the server on: `CHATD_TEST_IO_BACKEND`
/// (CI runs the suite once per backend), default auto.
pub fn backend() -> String {
    std::env::var("CHATD_TEST_IO_BACKEND").unwrap_or_else(|_| "auto".into())
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// chatd, over the suite's transport.
    pub chatd: Endpoint,
    /// statusd, over the suite's transport.
    pub statusd: Endpoint,
    /// The WebSocket listener.
    pub ws: SocketAddr,
    pub admin: SocketAddr,
    /// The transport its clients (and admin client) speak.
    pub transport: TestTransport,
    pub admin_token: String,
    pub data_dir: PathBuf,
    shards: usize,
    _tmp: Option<tempfile::TempDir>,
    stderr_log: PathBuf,
    /// The admin API with the admin token (kept-alive connections).
    api: AdminClient,
    /// The admin API without a token.
    api_anonymous: AdminClient,
}

/// Listen addresses: chatd, statusd, admin, WebSocket.
pub type Listen = [SocketAddr; 4];

/// Every listener on a free loopback port.
pub const ANY_PORT: Listen =
    [SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0); 4];

/// The command line of a test server: every listener on a free loopback
/// port, `shards` unpinned shards, the backend under test, `data_dir`,
/// and the test certificate when the transport under test is TLS.
pub fn chatd_command(data_dir: &Path, shards: usize) -> Command {
    command_on(data_dir, shards, ANY_PORT, transport())
}

/// [`chatd_command`] for a server over `over` (no certificate for tcp/ws).
pub fn chatd_command_over(data_dir: &Path, shards: usize, over: TestTransport) -> Command {
    command_on(data_dir, shards, ANY_PORT, over)
}

/// [`chatd_command`] with the listeners on `listen` (chatd, statusd,
/// admin, WebSocket), over `over`.
pub fn command_on(data_dir: &Path, shards: usize, listen: Listen, over: TestTransport) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatd"));
    cmd.args(["--chatd-listen", &listen[0].to_string()])
        .args(["--statusd-listen", &listen[1].to_string()])
        .args(["--admin-listen", &listen[2].to_string()])
        .args(["--ws-listen", &listen[3].to_string()])
        .args(["--shards", &shards.to_string(), "--no-pin"])
        .args(["--io-backend", &backend()])
        .arg("--data-dir")
        .arg(data_dir);
    if over.tls() {
        let tls = test_tls();
        cmd.arg("--tls-cert").arg(&tls.cert);
        cmd.arg("--tls-key").arg(&tls.key);
    }
    cmd
}

/// An admin API client of `addr` (HTTPS trusting the test certificate
/// when the suite runs over TLS), with `token` when given.
pub fn admin_client(addr: SocketAddr, token: Option<&str>) -> AdminClient {
    admin_client_over(transport(), addr, token)
}

/// [`admin_client`] of a server running over `over`.
pub fn admin_client_over(
    over: TestTransport,
    addr: SocketAddr,
    token: Option<&str>,
) -> AdminClient {
    let api = match token {
        Some(t) => chatd_client::admin::AdminClient::new(addr, t),
        None => chatd_client::admin::AdminClient::anonymous(addr),
    };
    let api = if over.tls() {
        api.with_tls(test_tls().client.clone())
    } else {
        api
    };
    AdminClient::wrap(api).expect("admin client")
}

/// What a chatd run that ended by itself left: its status, stdout and
/// stderr.
pub struct Exited {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (a chatd command line) until it exits by itself, which it
/// must within [`WAIT`] (else it is killed and the test fails).
pub fn run_to_exit(mut cmd: Command) -> Exited {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatd");
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let stdout = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!("chatd still running after {WAIT:?}, expected it to exit:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

impl Server {
    /// Starts a server with `--shards shards` and extra arguments, in a
    /// fresh temp data dir.
    pub fn start(shards: usize, args: &[&str]) -> Server {
        Server::start_over(transport(), shards, args)
    }

    /// [`Server::start`] for clients over `over`, whatever transport the
    /// suite runs over (the tests of one transport's own rules).
    pub fn start_over(over: TestTransport, shards: usize, args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s =
            Server::start_on(&dir, shards, ANY_PORT, args, &[], over).expect("server starts");
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` (kept by the caller).
    pub fn start_in(data_dir: &Path, shards: usize, args: &[&str]) -> Result<Server, String> {
        Server::start_on(data_dir, shards, ANY_PORT, args, &[], transport())
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(shards: usize, args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s = Server::start_on(&dir, shards, ANY_PORT, args, env, transport())
            .expect("server starts");
        s._tmp = Some(tmp);
        s
    }

    /// Stops the server (SIGTERM, which drains it) and starts it again on
    /// the same data dir and the same ports, with `args`.
    pub fn restart(&mut self, args: &[&str]) {
        assert_eq!(self.terminate(), Some(0), "server exit status");
        let listen = [self.chatd.tcp, self.statusd.tcp, self.admin, self.ws];
        let mut new = Server::start_on(
            &self.data_dir,
            self.shards,
            listen,
            args,
            &[],
            self.transport,
        )
        .expect("server restarts");
        new._tmp = self._tmp.take();
        *self = new;
    }

    /// Starts a server on `data_dir` with its listeners on `listen`.
    fn start_on(
        data_dir: &Path,
        shards: usize,
        listen: Listen,
        args: &[&str],
        env: &[(&str, &str)],
        over: TestTransport,
    ) -> Result<Server, String> {
        // One log per start (a restart's must not be the one its
        // predecessor's drop removes).
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr_log = data_dir.with_extension(format!("stderr.{}.{n}", std::process::id()));
        let _ = std::fs::create_dir_all(data_dir.parent().unwrap_or(Path::new("/tmp")));
        let err_file = std::fs::File::create(&stderr_log).map_err(|e| e.to_string())?;
        let mut cmd = command_on(data_dir, shards, listen, over);
        cmd.args(args)
            .envs(env.iter().copied())
            .env_remove("CHATD_JWT_SECRET")
            .env_remove("CHATD_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file));
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        // Cluster nodes share the admin token given on their command line.
        let flag = |name: &str| {
            args.iter()
                .position(|a| *a == name)
                .and_then(|i| args.get(i + 1))
                .map(|s| s.to_string())
        };
        let token = flag("--admin-token");
        let clustered = flag("--cluster").is_some();
        match Server::started(&mut child, data_dir, &stderr_log, token, clustered) {
            Ok(([chatd, statusd, admin, ws], admin_token)) => Ok(Server {
                child: Some(child),
                chatd: Endpoint {
                    service: Svc::Chatd,
                    tcp: chatd,
                    ws,
                    transport: over,
                },
                statusd: Endpoint {
                    service: Svc::Statusd,
                    tcp: statusd,
                    ws,
                    transport: over,
                },
                ws,
                admin,
                api: admin_client_over(over, admin, Some(&admin_token)),
                api_anonymous: admin_client_over(over, admin, None),
                transport: over,
                admin_token,
                data_dir: data_dir.to_path_buf(),
                shards,
                _tmp: None,
                stderr_log,
            }),
            Err(e) => {
                // A server that did not come up must not outlive the test.
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Reads the listening lines (chatd, statusd, admin, ws) and the
    /// admin token of a server just spawned.
    fn started(
        child: &mut Child,
        data_dir: &Path,
        stderr_log: &Path,
        admin_token: Option<String>,
        clustered: bool,
    ) -> Result<(Listen, String), String> {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = |name: &str| -> Result<SocketAddr, String> {
            let line = lines
                .next()
                .ok_or_else(|| {
                    format!(
                        "server exited: {}",
                        std::fs::read_to_string(stderr_log).unwrap_or_default()
                    )
                })?
                .map_err(|e| e.to_string())?;
            let prefix = format!("{name} listening on ");
            line.strip_prefix(&prefix)
                .ok_or_else(|| format!("unexpected line {line:?}"))?
                .parse()
                .map_err(|e| format!("{e}"))
        };
        let chatd = addr("chatd")?;
        let statusd = addr("statusd")?;
        let admin = addr("admin")?;
        let ws = addr("ws")?;
        if clustered {
            // Protocol 10: printed once the relations are loaded, before
            // the listeners accept.
            let line = lines
                .next()
                .ok_or("server exited before joining its cluster")?
                .map_err(|e| e.to_string())?;
            if !(line.starts_with("cluster node ") && line.ends_with(" joined")) {
                return Err(format!("expected the cluster line, got {line:?}"));
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let admin_token = match admin_token {
            Some(t) => t,
            None => {
                std::fs::read_to_string(data_dir.join("admin.token")).map_err(|e| e.to_string())?
            }
        };
        Ok(([chatd, statusd, admin, ws], admin_token.trim().to_string()))
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Kills the process with SIGKILL (no drain) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within {WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `within` for the process to end by itself; its exit
    /// status, or `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// One admin HTTP request, with the admin token when `auth`;
    /// returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>, auth: bool) -> (u16, String) {
        let api = if auth { &self.api } else { &self.api_anonymous };
        let resp = api
            .request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (resp.status, resp.body)
    }

    /// Authorized admin request that must answer `want`.
    pub fn admin_ok(&self, method: &str, path: &str, body: Option<&str>, want: u16) -> String {
        let (status, body_out) = self.http(method, path, body, true);
        assert_eq!(status, want, "{method} {path}: {body_out}");
        body_out
    }

    /// Makes `user` a member of `chat`.
    pub fn add_member(&self, chat: u64, user: u64) {
        self.api.add_member(chat, user).expect("add member");
    }

    /// Removes `user` from `chat`.
    pub fn remove_member(&self, chat: u64, user: u64) {
        self.api.remove_member(chat, user).expect("remove member");
    }

    /// Makes `a` and `b` contacts.
    pub fn add_contact(&self, a: u64, b: u64) {
        self.api.add_contact(a, b).expect("add contact");
    }

    /// Removes the contact between `a` and `b`.
    pub fn remove_contact(&self, a: u64, b: u64) {
        self.api.remove_contact(a, b).expect("remove contact");
    }

    /// A token for `user` from the admin API (valid for an hour).
    pub fn token(&self, user: u64) -> String {
        self.api
            .token(user, Duration::from_secs(3600))
            .expect("token")
    }

    /// The secret tokens are signed with.
    pub fn jwt_secret(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("jwt.secret"))
            .expect("jwt.secret")
            .trim()
            .to_string()
    }

    /// GET a JSON document from the admin API.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let body = self.admin_ok("GET", path, None, 200);
        serde_json::from_str(&body).expect("json")
    }

    /// A logged-in chatd client of `user`.
    pub fn chatd(&self, user: u64) -> ChatdClient {
        let mut c = ChatdClient::connect(self.chatd);
        c.login(&self.token(user));
        c.user = user;
        c
    }

    /// A logged-in statusd client of `user` with OP_HELLO presence `raw`,
    /// its login dump read (entries in `dump`, own presence in `own`).
    pub fn statusd(&self, user: u64, raw: u8) -> StatusdClient {
        let mut c = StatusdClient::connect(self.statusd);
        c.user = user;
        let mut out = Vec::new();
        login::encode_statusd(self.token(user).as_bytes(), raw, &mut out);
        c.send_raw(&out);
        c.read_dump();
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

/// One admin HTTP request on a connection of its own, with `token` as
/// the bearer token when given; returns (status, body). Panics when the
/// server cannot be reached.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let api = admin_client(addr, token);
    let resp = api
        .request(method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (resp.status, resp.body)
}

/// A chatd event, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Keepalive,
    Error {
        code: u8,
        opcode: u8,
        id: u64,
    },
    Hello(u32),
    Join(u64),
    Leave(u64),
    RtMsg {
        chat: u64,
        user: u64,
        client: u32,
        msgtype: u8,
        data: Vec<u8>,
    },
    InCall(u64, bool),
}

/// How reading toward one whole command ended.
enum Outcome<T> {
    Got(T),
    /// End of stream or reset.
    Closed,
    TimedOut,
}

/// Reads bytes into `buf` until one whole command decodes, the peer
/// closes, or `d` passes.
fn read_command<T>(
    s: &mut Wire,
    buf: &mut Vec<u8>,
    d: Duration,
    mut decode: impl FnMut(&[u8]) -> Option<(T, usize)>,
) -> Outcome<T> {
    let deadline = Instant::now() + d;
    loop {
        if let Some((v, used)) = decode(buf) {
            buf.drain(..used);
            return Outcome::Got(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::TimedOut;
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return Outcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return Outcome::TimedOut
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Outcome::Closed,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The next command, or `None` when the peer closed; fails if none
/// arrives within [`WAIT`].
fn read_until<T>(
    s: &mut Wire,
    buf: &mut Vec<u8>,
    decode: impl FnMut(&[u8]) -> Option<(T, usize)>,
) -> Option<T> {
    match read_command(s, buf, WAIT, decode) {
        Outcome::Got(v) => Some(v),
        Outcome::Closed => None,
        Outcome::TimedOut => panic!("timed out waiting for a command"),
    }
}

/// The next command if one arrives within `d`; `None` on timeout. Fails
/// if the peer closed.
fn read_within<T>(
    s: &mut Wire,
    buf: &mut Vec<u8>,
    d: Duration,
    decode: impl FnMut(&[u8]) -> Option<(T, usize)>,
) -> Option<T> {
    match read_command(s, buf, d, decode) {
        Outcome::Got(v) => Some(v),
        Outcome::Closed => panic!("connection closed while waiting for a command"),
        Outcome::TimedOut => None,
    }
}

/// True if the peer closes `s` within `d` (end of stream or reset),
/// false if it stays open and silent that long. Fails if a whole command
/// or any new byte arrives instead: the caller expects nothing but the
/// close.
fn closed_within(s: &mut Wire, buf: &[u8], d: Duration) -> bool {
    assert!(buf.is_empty(), "unread bytes before an expected close");
    s.set_read_timeout(Some(d.max(Duration::from_millis(1))))
        .expect("timeout");
    let mut chunk = [0u8; 64];
    match s.read(&mut chunk) {
        Ok(0) => true,
        Ok(n) => panic!("expected a close, got {:?}", &chunk[..n]),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("read: {e}"),
    }
}

/// One whole chatd command at the start of `b`, and its length.
fn chatd_event(b: &[u8]) -> Option<(Ev, usize)> {
    let (ev, used) = cw::decode_event(b, &Limits::ANY).expect("server sent a malformed command")?;
    let ev = match ev {
        cw::Event::Keepalive => Ev::Keepalive,
        cw::Event::Error { code, opcode, id } => Ev::Error { code, opcode, id },
        cw::Event::Hello { client_id } => Ev::Hello(client_id),
        cw::Event::Join { chatid } => Ev::Join(chatid),
        cw::Event::Leave { chatid } => Ev::Leave(chatid),
        cw::Event::RtMsg {
            chatid,
            sender_userid,
            sender_clientid,
            msgtype,
            data,
        } => Ev::RtMsg {
            chat: chatid,
            user: sender_userid,
            client: sender_clientid,
            msgtype,
            data: data.to_vec(),
        },
        cw::Event::InCall { chatid, in_call } => Ev::InCall(chatid, in_call),
    };
    Some((ev, used))
}

/// A chatd client over a real socket.
pub struct ChatdClient {
    pub stream: Wire,
    buf: Vec<u8>,
    pub client_id: u32,
    pub user: u64,
}

impl ChatdClient {
    /// Connects without logging in.
    pub fn connect(ep: Endpoint) -> ChatdClient {
        ChatdClient {
            stream: ep.open(),
            buf: Vec::new(),
            client_id: 0,
            user: 0,
        }
    }

    /// OP_AUTH + OP_HELLO; expects OP_HELLO client_id back.
    pub fn login(&mut self, token: &str) {
        let mut out = Vec::new();
        login::encode_chatd(token.as_bytes(), &mut out);
        self.send_raw(&out);
        let answer = read_until(&mut self.stream, &mut self.buf, |b| {
            let (ev, used) =
                cw::decode_event(b, &Limits::ANY).expect("server sent a malformed command")?;
            Some((login::chatd(&ev), used))
        });
        match answer {
            Some(ChatdLogin::Done { client_id }) => self.client_id = client_id,
            other => panic!("expected OP_HELLO, got {other:?}"),
        }
    }

    /// Sends one command.
    pub fn send(&mut self, req: &Request<'_>) {
        let mut out = Vec::new();
        cw::encode_request(req, &mut out);
        self.send_raw(&out);
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next command, or `None` when the server closed the connection.
    pub fn try_recv(&mut self) -> Option<Ev> {
        read_until(&mut self.stream, &mut self.buf, chatd_event)
    }

    /// The next command if one arrives within `d`; `None` on timeout.
    /// Fails if the connection closed.
    pub fn recv_within(&mut self, d: Duration) -> Option<Ev> {
        read_within(&mut self.stream, &mut self.buf, d, chatd_event)
    }

    /// The next command; fails if the connection closed.
    pub fn recv(&mut self) -> Ev {
        self.try_recv()
            .expect("connection closed while waiting for a command")
    }

    /// Expects `ev` next.
    pub fn expect(&mut self, ev: Ev) {
        assert_eq!(self.recv(), ev);
    }

    /// Expects the server to close the connection next (nothing more sent).
    pub fn expect_closed(&mut self) {
        if let Some(ev) = self.try_recv() {
            panic!("expected close, got {ev:?}");
        }
    }

    /// True if the server closes the connection within `d`; false if it
    /// stays open and silent (anything it sends fails the test).
    pub fn closed_within(&mut self, d: Duration) -> bool {
        closed_within(&mut self.stream, &self.buf, d)
    }

    /// Expects OP_ERROR `code` for `opcode`/`id`, then the close.
    pub fn expect_error_and_close(&mut self, code: u8, opcode: u8, id: u64) {
        self.expect(Ev::Error { code, opcode, id });
        self.expect_closed();
    }

    /// OP_JOIN, expecting OP_JOIN and OP_IN_CALL back; returns the flag.
    pub fn join(&mut self, chat: u64) -> bool {
        self.send(&Request::Join { chatid: chat });
        self.expect(Ev::Join(chat));
        match self.recv() {
            Ev::InCall(c, flag) if c == chat => flag,
            other => panic!("expected OP_IN_CALL {chat}, got {other:?}"),
        }
    }

    /// Sends OP_RTMSG.
    pub fn rtmsg(&mut self, chat: u64, to_user: u64, to_client: u32, msgtype: u8, data: &[u8]) {
        self.send(&Request::RtMsg {
            chatid: chat,
            receiver_userid: to_user,
            receiver_clientid: to_client,
            msgtype,
            data,
        });
    }

    /// A fence: OP_KEEPALIVE is answered after everything sent before it
    /// was handled on this connection's shard.
    pub fn keepalive_roundtrip(&mut self) {
        self.send(&Request::Keepalive);
        self.expect(Ev::Keepalive);
    }
}

/// A statusd event.
pub type SEv = sw::Event;

/// A statusd client over a real socket.
pub struct StatusdClient {
    pub stream: Wire,
    buf: Vec<u8>,
    pub user: u64,
    /// The login dump: (userid, presence) in arrival order.
    pub dump: Vec<(u64, u8)>,
    /// Own presence from the dump's last command.
    pub own: u8,
}

impl StatusdClient {
    /// Connects without logging in.
    pub fn connect(ep: Endpoint) -> StatusdClient {
        StatusdClient {
            stream: ep.open(),
            buf: Vec::new(),
            user: 0,
            dump: Vec::new(),
            own: 0,
        }
    }

    /// Sends one command.
    pub fn send(&mut self, req: &sw::Request<'_>) {
        let mut out = Vec::new();
        sw::encode_request(req, &mut out);
        self.stream.write_all(&out).expect("write");
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next command, or `None` when the server closed.
    pub fn try_recv(&mut self) -> Option<SEv> {
        read_until(&mut self.stream, &mut self.buf, |b| {
            sw::decode_event(b).expect("malformed command")
        })
    }

    /// The next command; fails if the connection closed.
    pub fn recv(&mut self) -> SEv {
        self.try_recv()
            .expect("connection closed while waiting for a command")
    }

    /// True if the server closes the connection within `d`; false if it
    /// stays open and silent (anything it sends fails the test).
    pub fn closed_within(&mut self, d: Duration) -> bool {
        closed_within(&mut self.stream, &self.buf, d)
    }

    /// Reads the login dump until its final `OP_PRES 0 own`.
    pub fn read_dump(&mut self) {
        loop {
            let ev = self.recv();
            match login::statusd(&ev) {
                StatusdLogin::Done { own } => {
                    self.own = own;
                    return;
                }
                StatusdLogin::Entry { user, presence } => self.dump.push((user, presence)),
                _ => panic!("expected OP_PRES in the login dump, got {ev:?}"),
            }
        }
    }

    /// Expects `OP_PRES userid presence` next.
    pub fn expect_pres(&mut self, userid: u64, presence: u8) {
        assert_eq!(self.recv(), SEv::Pres { userid, presence });
    }

    /// Expects the server to close the connection next.
    pub fn expect_closed(&mut self) {
        if let Some(ev) = self.try_recv() {
            panic!("expected close, got {ev:?}");
        }
    }
}

/// A JWT signed with `secret` using `alg`, over arbitrary claims (for the
/// rejection tests: wrong algorithm, missing or odd claims).
pub fn sign_jwt(secret: &str, alg: jsonwebtoken::Algorithm, claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &key).expect("encode jwt")
}

/// An unsigned `alg: none` JWT over `claims`.
pub fn none_jwt(claims: &serde_json::Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", base64url(claims.to_string().as_bytes()))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Base64url without padding.
pub fn base64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

// ---- Helpers for the chatd room and call tests ---------------------------

/// A room id at or above `from` whose home shard is `home` (of `shards`).
pub fn room_homed_on(home: usize, shards: usize, from: u64) -> u64 {
    (from..)
        .find(|&c| chatd::shard::route::room_home(c, shards) == home)
        .expect("some room id is homed on every shard")
}

/// One room homed on each shard, ids at or above `from`: running a scenario
/// in each covers both "room home == connection's shard" and "!=".
pub fn rooms_on_every_shard(shards: usize, from: u64) -> Vec<u64> {
    (0..shards)
        .map(|home| room_homed_on(home, shards, from))
        .collect()
}

/// Polls `f` every 10 ms until it gives `Ok`; fails after [`WAIT`] with
/// `what` and the last `Err`. Only for state that no event announces
/// (admin counters after a disconnect).
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it holds (see [`poll`]).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    poll(what, || if f() { Ok(()) } else { Err("false".into()) })
}

/// Polls admin `GET path` until `ok` holds (see [`poll`]): for live
/// counters the shards update on their own schedule, with no event a
/// client could await. Returns the document that satisfied it.
pub fn eventually(
    server: &Server,
    path: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll(&format!("GET {path}"), || {
        let v = server.get_json(path);
        if ok(&v) {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
}

impl Server {
    /// The value of an unlabelled metric from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.http("GET", "/metrics", None, false);
        assert_eq!(status, 200, "/metrics: {body}");
        body.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse().expect("metric value"))
            })
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// `n` logged-in chatd clients of `user`. Each has its own source
    /// port, so with several shards the kernel spreads them over shards.
    pub fn chatd_n(&self, user: u64, n: usize) -> Vec<ChatdClient> {
        (0..n).map(|_| self.chatd(user)).collect()
    }

    /// `GET /v1/rooms/{chat}` (must be 200).
    pub fn room(&self, chat: u64) -> serde_json::Value {
        self.get_json(&format!("/v1/rooms/{chat}"))
    }
}

impl ChatdClient {
    /// Wraps a connection whose transport the test set up itself.
    pub fn from_wire(stream: Wire) -> ChatdClient {
        ChatdClient {
            stream,
            buf: Vec::new(),
            client_id: 0,
            user: 0,
        }
    }

    /// Wraps a socket already connected to `ep.addr()` (made with special
    /// socket options), after the transport's handshakes.
    pub fn from_stream(ep: Endpoint, stream: TcpStream) -> ChatdClient {
        ChatdClient {
            stream: ep.over(stream),
            buf: Vec::new(),
            client_id: 0,
            user: 0,
        }
    }

    /// OP_LEAVE, expecting OP_LEAVE back.
    pub fn leave(&mut self, chat: u64) {
        self.send(&Request::Leave { chatid: chat });
        self.expect(Ev::Leave(chat));
    }

    /// Sends OP_IN_CALL `status` (1 = heartbeat, 0 = left the call).
    pub fn in_call(&mut self, chat: u64, status: bool) {
        self.send(&Request::InCall {
            chatid: chat,
            in_call: status,
        });
    }

    /// Expects OP_RTMSG from `from` next, with exactly this type and data.
    pub fn expect_rtmsg_from(&mut self, chat: u64, from: (u64, u32), msgtype: u8, data: &[u8]) {
        match self.recv() {
            Ev::RtMsg {
                chat: c,
                user,
                client,
                msgtype: t,
                data: d,
            } => {
                assert_eq!(
                    (c, user, client, t),
                    (chat, from.0, from.1, msgtype),
                    "client {} got another OP_RTMSG header",
                    self.client_id
                );
                assert!(
                    d == data,
                    "client {}: msgdata differs ({} bytes, want {})",
                    self.client_id,
                    d.len(),
                    data.len()
                );
            }
            other => panic!(
                "client {} expected OP_RTMSG in {chat}, got {other:?}",
                self.client_id
            ),
        }
    }

    /// Expects OP_ERROR `code` for `opcode`/`id` next, then proves the
    /// connection is still open with a keepalive round trip.
    pub fn expect_error_open(&mut self, code: u8, opcode: u8, id: u64) {
        self.expect(Ev::Error { code, opcode, id });
        self.keepalive_roundtrip();
    }
}

/// Fence message type, an arbitrary value the tests use for nothing else.
pub const FENCE_TYPE: u8 = 0xFE;

/// A room-wide fence: `cs[sender]` sends OP_RTMSG 0/0 to `chat` with data
/// `tag`, and each of `cs[receivers]` must see it next. Messages that one
/// connection sends to one room arrive in order, so a receiver that sees
/// the fence next got nothing else from the sender (nor from the room's
/// home shard) before it.
pub fn fence(cs: &mut [ChatdClient], chat: u64, sender: usize, receivers: &[usize], tag: &str) {
    let from = (cs[sender].user, cs[sender].client_id);
    cs[sender].rtmsg(chat, 0, 0, FENCE_TYPE, tag.as_bytes());
    for &r in receivers {
        assert_ne!(r, sender, "the sender never receives its own fence");
        cs[r].expect_rtmsg_from(chat, from, FENCE_TYPE, tag.as_bytes());
    }
}

/// Every index of `cs` except `sender`.
pub fn all_but(n: usize, sender: usize) -> Vec<usize> {
    (0..n).filter(|&i| i != sender).collect()
}

// ---- statusd helpers for the presence tests ----

impl StatusdClient {
    /// Sends `OP_SETPRES raw`.
    pub fn setpres(&mut self, raw: u8) {
        self.send(&sw::Request::SetPres { presence: raw });
    }

    /// Sends `OP_SETPRES raw` and expects the answer `OP_PRES 0 result`
    /// next.
    pub fn setpres_expect(&mut self, raw: u8, result: u8) {
        self.setpres(raw);
        self.expect_pres(0, result);
    }

    /// The next command if one arrives within `d`; `None` on timeout.
    /// Fails if the connection closed.
    pub fn recv_within(&mut self, d: Duration) -> Option<SEv> {
        read_within(&mut self.stream, &mut self.buf, d, |b| {
            sw::decode_event(b).expect("malformed command")
        })
    }

    /// Every whole command that has already arrived, without waiting.
    /// Fails if the connection closed.
    pub fn drain(&mut self) -> Vec<SEv> {
        self.stream.set_nonblocking(true).expect("nonblocking");
        let mut chunk = [0u8; 16384];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("statusd connection of user {} closed", self.user),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        self.stream.set_nonblocking(false).expect("blocking");
        let mut out = Vec::new();
        while let Some((ev, used)) = sw::decode_event(&self.buf).expect("malformed command") {
            self.buf.drain(..used);
            out.push(ev);
        }
        out
    }
}

impl Server {
    /// `presence` and `statusd_clients` of `user` from the admin API.
    pub fn user_presence(&self, user: u64) -> (u64, u64) {
        let v = self.get_json(&format!("/v1/users/{user}"));
        (
            v["presence"].as_u64().expect("presence"),
            v["statusd_clients"].as_u64().expect("statusd_clients"),
        )
    }
}
