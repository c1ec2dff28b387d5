//! Start-up and shut-down: open the relation store, read or make the
//! secrets, bind every listener, start the shards and the admin API, print
//! the listening lines, then wait for SIGINT/SIGTERM and drain.

use std::fs;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::admin::{self, Admin, AdminConfig};
use crate::auth::Authenticator;
use crate::cluster::link::ClusterLink;
use crate::config::{Config, IoBackend};
use crate::metrics::ShardMetrics;
use crate::net::io::Backend;
use crate::net::listener;
use crate::shard::client_ids::ClientIds;
use crate::shard::control::MeshControl;
use crate::shard::msg::ShardMsg;
use crate::shard::{mesh, route, run, ShardHandle, ShardListeners, Shared};
use crate::store::{Loaded, Store, StoreError};
use chatd_proto::Limits;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory or its database could not be used.
    #[error("data dir {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    /// A secret file could not be read or written.
    #[error("secret file {path}: {source}")]
    Secret { path: PathBuf, source: io::Error },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    /// io_uring was asked for but is not available.
    #[error("io_uring is not available on this host ({0}); run with --io-backend epoll or auto")]
    UringUnavailable(io::Error),
    /// Shards could not start.
    #[error(transparent)]
    Start(#[from] crate::shard::StartError),
    /// The TLS certificate or key cannot be used (one line naming the file).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `--tls-cert` without `--tls-key`, or the other way round.
    #[error("{given} {} needs {missing} as well", path.display())]
    TlsHalf {
        given: &'static str,
        path: PathBuf,
        missing: &'static str,
    },
    /// A thread ended by a panic (the binary's panic hook ends the process
    /// before this can be seen; a caller of [`run()`] without it sees this).
    #[error("{0} panicked")]
    Panicked(String),
    /// The node could not join its cluster.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::bridge::ClusterError),
    /// Anything else at start.
    #[error("{0}")]
    Other(String),
}

/// The secret given by `flag` (or its environment variable), else the one
/// in `<dir>/<file>`. A blank value counts as not given: an empty HMAC key
/// would let anyone sign tokens, and an empty admin token would lock the
/// admin API, so `CHATD_JWT_SECRET=` left by a template, say, falls back to
/// the data directory's file.
fn secret(
    value: &Option<String>,
    flag: &str,
    dir: &Path,
    file: &str,
) -> Result<String, ServerError> {
    match value.as_deref() {
        Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
        Some(_) => {
            tracing::warn!("{flag} is blank: ignored, using {file} in the data directory");
            secret_file(dir, file)
        }
        None => secret_file(dir, file),
    }
}

/// The data directory when this start is about to create it: the
/// topmost directory of its path that does not exist yet, removed again
/// (with everything in it: the new database, generated secrets) if the
/// start fails, so a failed first start leaves nothing behind. A
/// directory that existed is never touched.
struct FreshDataDir {
    created: Option<PathBuf>,
}

impl FreshDataDir {
    /// Notes what of `data_dir` does not exist yet.
    fn note(data_dir: &Path) -> Self {
        let mut created = None;
        let mut path = Some(data_dir);
        while let Some(p) = path.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            created = Some(p.to_path_buf());
            path = p.parent();
        }
        FreshDataDir { created }
    }

    /// The start succeeded: keep it.
    fn keep(&mut self) {
        self.created = None;
    }
}

impl Drop for FreshDataDir {
    fn drop(&mut self) {
        if let Some(dir) = self.created.take() {
            match fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(
                    "start failed: removed {}, which this start had created",
                    dir.display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("start failed, and removing {}: {e}", dir.display()),
            }
        }
    }
}

/// Reads a secret from `<dir>/<name>`, or makes a random one and writes
/// it there readable by the owner only.
fn secret_file(dir: &Path, name: &str) -> Result<String, ServerError> {
    let path = dir.join(name);
    let err = |source| ServerError::Secret {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| err(io::Error::other(e.to_string())))?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    write_secret_file(&path, &secret)?;
    tracing::info!(
        "generated {} (a new random secret, mode 0600)",
        path.display()
    );
    Ok(secret)
}

/// Writes `secret` to `path`, readable by the owner only.
fn write_secret_file(path: &Path, secret: &str) -> Result<(), ServerError> {
    let err = |source| ServerError::Secret {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(secret.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(err)
}

/// Decides the I/O backend: io_uring when asked for or, with `auto`, when
/// a ring can be created here.
fn choose_backend(wanted: IoBackend) -> Result<Backend, ServerError> {
    let probe = || tokio_uring::Runtime::new(&tokio_uring::builder()).map(drop);
    match wanted {
        IoBackend::Epoll => Ok(Backend::Epoll),
        IoBackend::Uring => probe()
            .map(|_| Backend::Uring)
            .map_err(ServerError::UringUnavailable),
        IoBackend::Auto => match probe() {
            Ok(()) => Ok(Backend::Uring),
            Err(e) => {
                tracing::warn!("io_uring is not available ({e}); running on the epoll backend");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// Runs the server until SIGINT/SIGTERM. Returns after the drain.
///
/// In order: open the relation store and read the secrets; load the
/// stored relations, split by shard; bind every listener (so port 0 is
/// resolved before anything is printed); start the shards; hand each its
/// part of the relations; start the admin API; print the listening lines
/// and open the start gate; wait for a signal; drain.
pub fn run(config: Config) -> Result<(), ServerError> {
    let mut fresh_dir = FreshDataDir::note(&config.data_dir);
    for line in config.adjustments() {
        tracing::warn!("{line}");
    }
    let tls = load_tls(&config)?;
    // Cluster mode: connected and holding a slot before anything else, so
    // the client ids carry it (docs/cluster.md).
    let cluster = match &config.cluster {
        Some(_) => {
            // A secret not given by flag is agreed on by the cluster, this
            // node proposing its data directory's (docs/cluster.md).
            let propose = |value: &Option<String>, file| match value.as_deref() {
                Some(s) if !s.trim().is_empty() => Ok(None),
                _ => secret_file(&config.data_dir, file).map(Some),
            };
            fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::Secret {
                path: config.data_dir.clone(),
                source,
            })?;
            let proposed = crate::cluster::bridge::Secrets {
                jwt: propose(&config.jwt_secret, "jwt.secret")?,
                admin: propose(&config.admin_token, "admin.token")?,
            };
            let connected = crate::cluster::bridge::connect(&config, proposed)?;
            // The data directory's files hold the values that work on every
            // node (another node's proposal may have won).
            for (value, file) in [
                (&connected.secrets.jwt, "jwt.secret"),
                (&connected.secrets.admin, "admin.token"),
            ] {
                if let Some(v) = value {
                    write_secret_file(&config.data_dir.join(file), v)?;
                }
            }
            Some(connected)
        }
        None => None,
    };
    let store = match &cluster {
        // The relations live in JetStream; this node's copy is in memory,
        // filled from the stream before the listeners accept.
        Some(_) => Store::in_memory().map_err(|source| ServerError::Store {
            path: config.data_dir.clone(),
            source,
        })?,
        None => open_store(&config.data_dir)?,
    };
    let data_dir = fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    tracing::info!("data dir {}", data_dir.display());
    let agreed = cluster
        .as_ref()
        .map(|c| c.secrets.clone())
        .unwrap_or_default();
    let jwt_secret = match agreed.jwt {
        Some(s) => s,
        None => secret(
            &config.jwt_secret,
            "--jwt-secret",
            &config.data_dir,
            "jwt.secret",
        )?,
    };
    let admin_token = match agreed.admin {
        Some(s) => s,
        None => secret(
            &config.admin_token,
            "--admin-token",
            &config.data_dir,
            "admin.token",
        )?,
    };
    let backend = choose_backend(config.io_backend)?;
    let shards = config.shard_count();
    let loaded = load_relations(&store, &config.data_dir, shards)?;
    let listeners = Listeners::bind(&config, shards)?;
    let addrs = listeners.addrs()?;
    // Held until the process ends: no other chatd may join these ports.
    let _port_claims = listeners.claims;

    let (mesh, inboxes) = mesh::mesh(shards, config.max_shard_queue_bytes);
    let (link, link_rx) = match &cluster {
        Some(c) => {
            let (link, rx) = ClusterLink::new(c.slot);
            (Some(link), Some(rx))
        }
        None => (None, None),
    };
    let shared = shared_state(&config, mesh.clone(), &jwt_secret, tls.clone(), link);
    let handles = start_shards(
        &shared,
        inboxes,
        listeners.chatd,
        listeners.statusd,
        listeners.ws,
        backend,
    )?;

    // Relations into the shards before anyone can log in.
    let control = Arc::new(MeshControl::new(mesh.clone(), shared.metrics.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Other(format!("runtime: {e}")))?;
    rt.block_on(control.install(loaded));

    let admin_config = AdminConfig {
        token: admin_token,
        now: admin::system_now,
    };
    let admin_auth = Authenticator::new(jwt_secret.as_bytes());
    let (admin, mut node) = match (cluster, link_rx) {
        (Some(c), Some(rx)) => {
            // The relations in JetStream, applied to the shards before
            // the listeners accept.
            let store = Arc::new(store);
            let log = c.log();
            let cluster_control = c.control(control.clone());
            let running = c.attach(crate::cluster::bridge::Attach {
                shared: shared.clone(),
                control: control.clone(),
                store: store.clone(),
                rx,
            })?;
            let admin = Admin::clustered(admin_config, store, admin_auth, cluster_control, log);
            (admin, Some(running))
        }
        _ => (Admin::new(admin_config, store, admin_auth, control), None),
    };
    let admin = Arc::new(admin);
    let signals = {
        let _guard = rt.enter();
        StopSignals::install().map_err(|e| ServerError::Other(format!("signal handlers: {e}")))?
    };
    tracing::info!(
        shards,
        backend = backend.name(),
        tls = tls.is_some(),
        "starting"
    );
    addrs.print();
    if let Some(node) = &node {
        // After the relations are loaded, before the listeners accept.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "cluster node {} joined", node.node_id);
        let _ = out.flush();
    }
    fresh_dir.keep();
    shared.start_gate.open();
    let admin_tls = tls
        .clone()
        .map(|t| (t, std::time::Duration::from_millis(config.login_timeout_ms)));
    let admin_thread = AdminThread::start(listeners.admin, admin, admin_tls)?;

    rt.block_on(signals.wait(tls.as_deref()));
    tracing::info!("draining");
    if let Some(node) = node.as_mut() {
        // The other nodes drop this node's clients now.
        node.leave();
    }
    mesh.begin_drain();
    for id in 0..shards {
        let deadline_ms = config.drain_timeout_ms;
        mesh.send(id, ShardMsg::Shutdown { deadline_ms });
    }
    let mut panicked = None;
    for (id, h) in handles.into_iter().enumerate() {
        if h.thread.join().is_err() {
            tracing::error!(shard = id, "shard {id} panicked");
            panicked.get_or_insert(format!("shard {id}"));
        }
    }
    if !admin_thread.stop() {
        panicked.get_or_insert("the admin thread".into());
    }
    match panicked {
        Some(what) => Err(ServerError::Panicked(what)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// The certificate and key, when `--tls-cert` and `--tls-key` are given:
/// loaded and checked before anything listens (one of the two alone, or a
/// pair that cannot be used, is an error naming the file).
fn load_tls(config: &Config) -> Result<Option<Arc<crate::tls::Reloadable>>, ServerError> {
    match (&config.tls_cert, &config.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(Arc::new(crate::tls::Reloadable::load(cert, key)?))),
        (Some(cert), None) => Err(ServerError::TlsHalf {
            given: "--tls-cert",
            path: cert.clone(),
            missing: "--tls-key",
        }),
        (None, Some(key)) => Err(ServerError::TlsHalf {
            given: "--tls-key",
            path: key.clone(),
            missing: "--tls-cert",
        }),
    }
}

/// What the shards share, for `config` and the token secret.
fn shared_state(
    config: &Config,
    mesh: mesh::Mesh,
    jwt_secret: &str,
    tls: Option<Arc<crate::tls::Reloadable>>,
    cluster: Option<ClusterLink>,
) -> Arc<Shared> {
    let shards = mesh.shards();
    let client_ids = match &cluster {
        Some(link) => ClientIds::for_node(link.slot, config.first_client_id),
        None => ClientIds::new(config.first_client_id),
    };
    Arc::new(Shared {
        limits: Limits {
            max_rtmsg_len: config.max_rtmsg_len,
        },
        mesh,
        auth: Authenticator::new(jwt_secret.as_bytes()),
        client_ids,
        metrics: (0..shards)
            .map(|_| Arc::new(ShardMetrics::default()))
            .collect(),
        epoch: Instant::now(),
        user_conns: Default::default(),
        open_conns: Default::default(),
        list_pools: (0..shards).map(|_| Default::default()).collect(),
        start_gate: Default::default(),
        max_conns: config.connection_limit(),
        tls,
        config: config.clone(),
        cluster,
    })
}

/// Opens the relation store in `data_dir`.
fn open_store(data_dir: &Path) -> Result<Store, ServerError> {
    Store::open(data_dir).map_err(|source| ServerError::Store {
        path: data_dir.to_path_buf(),
        source,
    })
}

/// Reads the stored relations, split into each of `shards` shards' part
/// (memberships to the room's home, contacts to each user's home).
fn load_relations(store: &Store, data_dir: &Path, shards: usize) -> Result<Loaded, ServerError> {
    let loading = Instant::now();
    let loaded = store
        .load(
            shards,
            |chat| route::room_home(chat, shards),
            |user| route::user_home(user, shards),
        )
        .map_err(|source| ServerError::Store {
            path: data_dir.to_path_buf(),
            source,
        })?;
    tracing::info!(
        members = loaded.members,
        contacts = loaded.contact_rows / 2,
        ms = loading.elapsed().as_millis() as u64,
        "relations loaded"
    );
    Ok(loaded)
}

/// Every listener, bound before anything starts: one chatd, one statusd
/// and one WebSocket socket per shard (SO_REUSEPORT), and the admin socket.
struct Listeners {
    chatd: Vec<std::net::TcpListener>,
    statusd: Vec<std::net::TcpListener>,
    ws: Vec<std::net::TcpListener>,
    admin: std::net::TcpListener,
    /// This process's claims on the client ports (held until it exits).
    claims: Vec<listener::PortClaim>,
}

/// The addresses the listeners got (port 0 resolved).
struct Addrs {
    chatd: SocketAddr,
    statusd: SocketAddr,
    ws: SocketAddr,
    admin: SocketAddr,
}

impl Listeners {
    /// Binds them all.
    fn bind(config: &Config, shards: usize) -> Result<Listeners, ServerError> {
        let mut claims = Vec::new();
        let mut group = |what, addr| {
            let (group, claim) = listener::bind_group(addr, shards, config.listen_backlog)
                .map_err(|source| ServerError::Bind { what, addr, source })?;
            claims.push(claim);
            Ok::<_, ServerError>(group)
        };
        let chatd = group("chatd", config.chatd_listen)?;
        let statusd = group("statusd", config.statusd_listen)?;
        let ws = group("ws", config.ws_listen)?;
        let admin = std::net::TcpListener::bind(config.admin_listen).map_err(|source| {
            ServerError::Bind {
                what: "admin",
                addr: config.admin_listen,
                source,
            }
        })?;
        Ok(Listeners {
            chatd,
            statusd,
            ws,
            admin,
            claims,
        })
    }

    /// Their local addresses.
    fn addrs(&self) -> Result<Addrs, ServerError> {
        let addr_of = |l: &std::net::TcpListener| {
            l.local_addr()
                .map_err(|e| ServerError::Other(e.to_string()))
        };
        let first = |group: &[std::net::TcpListener]| match group.first() {
            Some(l) => addr_of(l),
            None => Err(ServerError::Other("no listener bound".into())),
        };
        Ok(Addrs {
            chatd: first(&self.chatd)?,
            statusd: first(&self.statusd)?,
            ws: first(&self.ws)?,
            admin: addr_of(&self.admin)?,
        })
    }
}

impl Addrs {
    /// The listening lines on stdout (tests and scripts read them; the
    /// WebSocket line comes last, so readers of the first three before it
    /// existed still find them in order).
    fn print(&self) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "chatd listening on {}", self.chatd);
        let _ = writeln!(out, "statusd listening on {}", self.statusd);
        let _ = writeln!(out, "admin listening on {}", self.admin);
        let _ = writeln!(out, "ws listening on {}", self.ws);
        let _ = out.flush();
    }
}

/// Starts one shard thread per listener pair, each pinned to a core
/// unless `--no-pin`, and waits until every runtime is up.
fn start_shards(
    shared: &Arc<Shared>,
    inboxes: Vec<mesh::InboxRx>,
    chatd: Vec<std::net::TcpListener>,
    statusd: Vec<std::net::TcpListener>,
    ws: Vec<std::net::TcpListener>,
    backend: Backend,
) -> Result<Vec<ShardHandle>, ServerError> {
    let shards = inboxes.len();
    let cores = if shared.config.no_pin {
        None
    } else {
        core_affinity::get_core_ids()
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::with_capacity(shards);
    let groups = chatd.into_iter().zip(statusd).zip(ws);
    for (id, (inbox, ((chatd, statusd), ws))) in inboxes.into_iter().zip(groups).enumerate() {
        let core = cores
            .as_ref()
            .and_then(|c| c.get(id % c.len().max(1)).copied());
        let listeners = ShardListeners { chatd, statusd, ws };
        handles.push(run::spawn_shard(
            id,
            shared.clone(),
            inbox,
            listeners,
            backend,
            core,
            ready_tx.clone(),
        )?);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(ServerError::Other("a shard thread died at start".into())),
        }
    }
    Ok(handles)
}

/// The admin API's thread and the way to stop it.
struct AdminThread {
    thread: std::thread::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl AdminThread {
    /// Serves the admin API on `listener` on a thread of its own (HTTPS
    /// with `tls`).
    fn start(
        listener: std::net::TcpListener,
        admin: Arc<Admin>,
        tls: Option<(Arc<crate::tls::Reloadable>, std::time::Duration)>,
    ) -> Result<Self, ServerError> {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                let stop = async move {
                    let _ = stop_rx.await;
                };
                if let Err(e) = admin::serve(listener, admin, tls, stop) {
                    tracing::error!("admin API stopped: {e}");
                }
            })
            .map_err(|e| ServerError::Other(format!("admin thread: {e}")))?;
        Ok(AdminThread { thread, stop })
    }

    /// Stops it and waits for it to end; false if it had panicked.
    fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().is_ok()
    }
}

/// SIGINT and SIGTERM, caught from the moment this is called (before the
/// listening lines are printed, so a supervisor that signals as soon as it
/// reads them still gets a drain, not the default kill); and SIGHUP, which
/// reloads the TLS certificate and key.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers; needs a runtime context.
    fn install() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM; on each SIGHUP meanwhile,
    /// re-reads the certificate and key (new connections get the new pair,
    /// open ones keep theirs; a bad pair is logged and the old one kept).
    async fn wait(mut self, tls: Option<&crate::tls::Reloadable>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => match tls {
                    None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                    Some(tls) => match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                        Err(e) => tracing::error!("SIGHUP: kept the old TLS certificate and key: {e}"),
                    },
                },
            }
        }
    }
}
