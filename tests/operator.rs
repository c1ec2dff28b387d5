//! What an operator meets: a process that fails loudly (a panicking shard
//! ends it with a non-zero status), one that refuses to share its client
//! ports with another server, command-line values that are refused or
//! reported, and a start-up that says what it did.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use chatd_proto::chatd::Request;
use common::{room_homed_on, Server, WAIT};

/// A panic on a shard ends the process with status 101 and a log line
/// naming the shard's thread, instead of leaving the rooms and users homed
/// there unanswered in a process that looks healthy. (The panic is a
/// debug-build fault: release builds have no such hook.)
#[cfg(debug_assertions)]
fn a_panicking_shard_takes_the_process_down(shards: usize) {
    let home = shards - 1;
    let room = room_homed_on(home, shards, 100);
    let mut server = Server::start_with_env(
        shards,
        &[],
        &[("CHATD_DEBUG_PANIC_ROOM", &room.to_string())],
    );
    server.add_member(room, 1);
    server.add_member(room + 1, 1);
    let mut a = server.chatd(1);
    a.join(room + 1);
    // The trigger (debug builds only): OP_JOIN of this room panics its
    // home shard.
    a.send(&Request::Join { chatid: room });
    let Some(status) = server.wait_exit(WAIT) else {
        panic!(
            "the process still runs after shard {home} panicked\n{}",
            server.log()
        );
    };
    assert_eq!(status.code(), Some(101), "exit status\n{}", server.log());
    let log = server.log();
    assert!(
        log.contains(&format!("shard-{home} panicked at "))
            && log.contains("CHATD_DEBUG_PANIC_ROOM"),
        "no log line naming the shard and the panic:\n{log}"
    );
    // The clients are cut off, so they reconnect to the restarted server.
    a.expect_closed();
}

#[cfg(debug_assertions)]
#[test]
fn a_panicking_shard_takes_the_process_down_on_one_shard() {
    a_panicking_shard_takes_the_process_down(1);
}

#[cfg(debug_assertions)]
#[test]
fn a_panicking_shard_takes_the_process_down_on_two_shards() {
    a_panicking_shard_takes_the_process_down(2);
}

/// A second server with its own data dir and admin port, but the first
/// one's chatd, statusd or WebSocket port, must not start: SO_REUSEPORT would let the
/// kernel split clients between two servers with different secrets and
/// databases. The first one keeps serving.
fn a_second_server_on_the_same_client_ports_fails_to_start(shards: usize) {
    let first = Server::start(shards, &[]);
    let any = common::ANY_PORT[0];
    for (what, listen) in [
        ("chatd", [first.chatd.tcp, any, any, any]),
        ("statusd", [any, first.statusd.tcp, any, any]),
        ("ws", [any, any, any, first.ws]),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let second = common::run_to_exit(common::command_on(
            &tmp.path().join("d"),
            shards,
            listen,
            common::transport(),
        ));
        assert!(
            !second.status.success(),
            "a second server on the {what} port started"
        );
        let port = listen.iter().map(|a| a.port()).max().unwrap_or(0);
        let want = format!(
            "port {port} is already served by another chatd process (pid {})",
            first.pid()
        );
        assert!(
            second.stderr.contains(&want),
            "second server on the {what} port: no clear message:\n{}",
            second.stderr
        );
        assert!(!second.stdout.contains("listening"), "{}", second.stdout);
    }
    // The first one still serves both services.
    let mut c = first.chatd(1);
    c.keepalive_roundtrip();
    let s = first.statusd(1, 3);
    assert_eq!(s.own, 3);
}

#[test]
fn a_second_server_on_the_same_client_ports_fails_to_start_on_one_shard() {
    a_second_server_on_the_same_client_ports_fails_to_start(1);
}

#[test]
fn a_second_server_on_the_same_client_ports_fails_to_start_on_two_shards() {
    a_second_server_on_the_same_client_ports_fails_to_start(2);
}

/// A chatd command line with only `args` (and the backend under test).
fn bare_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatd"));
    cmd.args(["--io-backend", &common::backend(), "--no-pin"])
        .args(args)
        .env_remove("CHATD_JWT_SECRET")
        .env_remove("CHATD_ADMIN_TOKEN");
    cmd
}

#[test]
fn values_that_cannot_work_are_refused_with_one_line_naming_the_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_arg = dir.to_str().expect("utf-8 path");
    for (flag, value) in [
        ("--shards", "0"),
        ("--max-connections", "0"),
        ("--call-timeout-ms", "0"),
        ("--listen-backlog", "0"),
        ("--max-rooms-per-conn", "0"),
    ] {
        let out = common::run_to_exit(bare_command(&["--data-dir", dir_arg, flag, value]));
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {}", out.stderr);
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value") && first.contains(flag),
            "{flag} {value}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert!(!dir.exists(), "{flag} {value} created the data dir");
    }
}

/// Something a new operator meets on the first start: what data dir is
/// used, that secrets were generated, a raised output cap said so, and a
/// log file without terminal colour codes.
#[test]
fn the_start_up_log_says_what_it_did_in_plain_text() {
    let mut server = Server::start(1, &["--max-outbuf-bytes", "1", "--max-rtmsg-len", "100"]);
    let log = server.log();
    let dir = std::fs::canonicalize(&server.data_dir).expect("data dir");
    for want in [
        format!("data dir {}", dir.display()),
        format!("generated {}", server.data_dir.join("jwt.secret").display()),
        format!(
            "generated {}",
            server.data_dir.join("admin.token").display()
        ),
        "--max-outbuf-bytes 1 is below two maximum-size messages (--max-rtmsg-len 100): using 250"
            .to_string(),
    ] {
        assert!(log.contains(&want), "no {want:?} in\n{log}");
    }
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log file:\n{log:?}"
    );
    // A restart reuses the secrets: nothing is generated.
    server.restart(&[]);
    let log = server.log();
    assert!(log.contains("data dir "), "{log}");
    assert!(!log.contains("generated "), "{log}");
}

#[test]
fn a_listen_address_may_name_a_host() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut child = bare_command(&[
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--shards",
        "1",
        "--chatd-listen",
        "localhost:0",
        "--statusd-listen",
        "localhost:0",
        "--admin-listen",
        "localhost:0",
        "--ws-listen",
        "localhost:0",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout).lines().next();
    let _ = child.kill();
    let _ = child.wait();
    let line = first.expect("a listening line").expect("read");
    let addr: SocketAddr = line
        .strip_prefix("chatd listening on ")
        .unwrap_or_else(|| panic!("unexpected {line:?}"))
        .parse()
        .expect("address");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
}

/// A start that fails (here: the admin port is taken) removes the data dir
/// it had just created, secrets and all, and leaves one that existed as it
/// was.
#[test]
fn a_failed_start_leaves_no_fresh_data_dir_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = taken.local_addr().expect("addr").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let fresh = tmp.path().join("new").join("data");
    let args = |dir: &std::path::Path| {
        let mut cmd = bare_command(&["--shards", "1", "--admin-listen", &admin]);
        cmd.args([
            "--chatd-listen",
            "127.0.0.1:0",
            "--statusd-listen",
            "127.0.0.1:0",
            "--ws-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir);
        cmd
    };
    let out = common::run_to_exit(args(&fresh));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("(admin)"), "{}", out.stderr);
    assert!(
        !tmp.path().join("new").exists(),
        "the fresh data dir stayed:\n{}",
        out.stderr
    );

    // An existing data dir keeps its secrets through a failed start.
    let existing = tmp.path().join("used");
    let server = Server::start_in(&existing, 1, &[]).expect("server starts");
    let secret = server.jwt_secret();
    drop(server);
    let out = common::run_to_exit(args(&existing));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let kept = std::fs::read_to_string(existing.join("jwt.secret")).expect("secret kept");
    assert_eq!(kept.trim(), secret);
}
