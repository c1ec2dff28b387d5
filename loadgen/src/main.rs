//! loadgen: the load generator of chatd. See `loadgen --help` and
//! bench/README.md.
//!
//! Exit codes: 0 all runs verified; 2 a run found lost, duplicated,
//! reordered, misaddressed or corrupt deliveries, unexpected OP_ERRORs or
//! closed connections (or the spawned server exited badly); 1 loadgen could
//! not run (bad parameters, server unreachable, provisioning failed).

mod cli;
mod client;
mod measure;
mod pacer;
mod provision;
mod report;
mod scenarios;
mod spawn;
mod transport;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, PubSubTarget, RunOpts, ServerOpts};
use report::Report;
use scenarios::{Env, ScenarioError, Target};

/// Why loadgen could not run.
#[derive(Debug)]
enum MainError {
    /// --spawn failed.
    Spawn(spawn::SpawnError),
    /// A scenario could not run.
    Scenario(ScenarioError),
    /// Missing or inconsistent options.
    Usage(String),
}

impl std::fmt::Display for MainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MainError::Spawn(e) => write!(f, "{e}"),
            MainError::Scenario(e) => write!(f, "{e}"),
            MainError::Usage(s) => f.write_str(s),
        }
    }
}

impl From<ScenarioError> for MainError {
    fn from(e: ScenarioError) -> Self {
        MainError::Scenario(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Thousands of client connections: the soft open-file limit is often
    // 1024, the hard one the real ceiling.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    measure::now_ns();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: VERIFICATION FAILED (see the reports above)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command; `Ok(false)` when verification failed.
fn run(cli: Cli) -> Result<bool, MainError> {
    use scenarios::{bigroom, calls, connections, direct, fanout, presence};
    match &cli.command {
        Command::Fanout(a) if a.p.target != PubSubTarget::Chatd => {
            peer(&a.server, &a.run, |env| fanout::run(env, &a.p))
        }
        Command::Fanout(a) => single(&a.server, &a.run, |env| fanout::run(env, &a.p)),
        Command::Direct(a) => single(&a.server, &a.run, |env| direct::run(env, &a.p)),
        Command::Calls(a) => single(&a.server, &a.run, |env| calls::run(env, &a.p)),
        Command::Presence(a) => single(&a.server, &a.run, |env| presence::run(env, &a.p)),
        Command::Connections(a) => single(&a.server, &a.run, |env| connections::run(env, &a.p)),
        Command::Bigroom(a) => single(&a.server, &a.run, |env| bigroom::run(env, &a.p)),
        Command::Suite(a) => with_target(&a.server, |target| suite::run(target, &a.run, a.smoke)),
    }
}

/// Runs one scenario against the target and reports it.
fn single(
    server: &ServerOpts,
    run: &RunOpts,
    f: impl FnOnce(&Env<'_>) -> Result<Report, ScenarioError>,
) -> Result<bool, MainError> {
    with_target(server, |target| one(target, run, f))
}

/// Runs one scenario against a Redis, NATS or floor server that is already
/// up (no admin API, no --spawn); `--server-pid` adds its CPU to the report.
fn peer(
    server: &ServerOpts,
    run: &RunOpts,
    f: impl FnOnce(&Env<'_>) -> Result<Report, ScenarioError>,
) -> Result<bool, MainError> {
    if server.spawn.is_some() {
        return Err(MainError::Usage(
            "--spawn starts chatd only: start redis-server / nats-server / bench/floor yourself \
             (bench/compare.sh does) and pass --server-pid"
                .into(),
        ));
    }
    let target = given_target(server, String::new())?;
    one(&target, run, f)
}

/// The server the address options name (one this run did not spawn).
fn given_target(server: &ServerOpts, admin_token: String) -> Result<Target, MainError> {
    let (chatd, statusd) = endpoints(server, server.chatd, server.statusd, server.ws, None)?;
    Ok(Target {
        chatd,
        chatd_also: server.chatd_also.clone(),
        statusd,
        admin: server.admin,
        admin_token,
        pid: server.server_pid,
    })
}

/// Runs one scenario against `target`, prints and writes its report.
fn one(
    target: &Target,
    run: &RunOpts,
    f: impl FnOnce(&Env<'_>) -> Result<Report, ScenarioError>,
) -> Result<bool, MainError> {
    let env = Env {
        target,
        run,
        id_base: run.id_base.unwrap_or_else(scenarios::default_id_base),
    };
    let mut report = f(&env)?;
    if let Some(params) = report.params.as_object_mut() {
        params.insert("transport".into(), target.chatd.name().into());
    }
    Ok(emit(&report, run))
}

/// Prints a report and writes its files; returns whether it verified.
fn emit(report: &Report, run: &RunOpts) -> bool {
    println!("{}", report.text());
    if let Err(e) = report.write(&run.report_dir) {
        eprintln!(
            "loadgen: writing reports to {}: {e}",
            run.report_dir.display()
        );
    }
    report.ok()
}

/// Calls `f` with the server to test: a spawned one (stopped afterwards)
/// or the one the address options name. `f` returns whether its runs
/// verified; a spawned server that does not exit cleanly fails the run too.
fn with_target(
    server: &ServerOpts,
    f: impl FnOnce(&Target) -> Result<bool, MainError>,
) -> Result<bool, MainError> {
    let Some(path) = &server.spawn else {
        let token = server.admin_token.clone().ok_or_else(|| {
            MainError::Usage("--admin-token (or LOADGEN_ADMIN_TOKEN) or --spawn is required".into())
        })?;
        return f(&given_target(server, token)?);
    };
    let tls = server.transport.tls();
    let mut s = spawn::start(path, server.server_shards, &server.server_arg, tls)
        .map_err(MainError::Spawn)?;
    eprintln!(
        "loadgen: spawned {} (pid {}): chatd {} statusd {} ws {} admin {}{}",
        path.display(),
        s.pid,
        s.chatd,
        s.statusd,
        s.ws,
        s.admin,
        if tls { " (TLS)" } else { "" }
    );
    let (chatd, statusd) = endpoints(server, s.chatd, s.statusd, s.ws, s.cert_pem.as_deref())?;
    let target = Target {
        chatd,
        chatd_also: Vec::new(),
        statusd,
        admin: s.admin,
        admin_token: s.admin_token.clone(),
        pid: Some(s.pid),
    };
    let out = f(&target);
    let log = s.log();
    let code = s.stop();
    if code != Some(0) {
        eprintln!(
            "loadgen: !!!!!!!! the spawned server exited with {code:?} after SIGTERM !!!!!!!!\n{}",
            tail(&log, 3000)
        );
        return out.map(|_| false);
    }
    out
}

/// How the clients reach chatd and statusd over `--transport`: TLS trusts
/// `cert_pem` (a spawned server's) or `--tls-ca`.
fn endpoints(
    server: &ServerOpts,
    chatd: std::net::SocketAddr,
    statusd: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    cert_pem: Option<&str>,
) -> Result<(transport::Endpoint, transport::Endpoint), MainError> {
    let t = server.transport;
    let tls = if t.tls() {
        let pem = match (cert_pem, &server.tls_ca) {
            (Some(pem), _) => pem.as_bytes().to_vec(),
            (None, Some(path)) => std::fs::read(path)
                .map_err(|e| MainError::Usage(format!("--tls-ca {}: {e}", path.display())))?,
            (None, None) => {
                return Err(MainError::Usage(
                    "--transport tls/wss needs --tls-ca (or --spawn)".into(),
                ))
            }
        };
        let roots = chatd_client::connect::roots_from_pem(&pem)
            .map_err(|e| MainError::Usage(format!("--tls-ca: {e}")))?;
        Some(chatd_client::connect::tls_config(roots))
    } else {
        None
    };
    let ep = |tcp, path| transport::Endpoint {
        addr: if t.ws() { ws } else { tcp },
        ws_path: t.ws().then_some(path),
        tls: tls.clone(),
    };
    Ok((ep(chatd, "/chatd"), ep(statusd, "/statusd")))
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

mod suite;
