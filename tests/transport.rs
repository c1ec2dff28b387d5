//! The rules of the WebSocket and TLS transports themselves (protocol
//! sections 8 and 9), over the real binary and real sockets: handshakes
//! refused with their HTTP status, framing errors closed with their
//! status, the close sequences, Ping, a TLS port spoken to in plaintext
//! and the other way round, failed and unfinished handshakes, SIGHUP
//! reload, start-up errors. Every bad-input test keeps a healthy client
//! of its own and checks it is unaffected.
//!
//! These tests pick their transport themselves (`Server::start_over`);
//! the rest of the suite runs over whatever `CHATD_TEST_TRANSPORT` says.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{wire::raw_socket, ChatdClient, Ev, Server, TestTransport, Wire, WAIT};

const OP_AUTH: u8 = 0x06;
const BAD_COMMAND: u8 = 1;
const AUTH_FAILED: u8 = 2;
const SHUTTING_DOWN: u8 = 10;

// ---- raw WebSocket ----

/// An upgrade request for `path` with `extra` header lines.
fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads an HTTP answer's head (and its body, by `Content-Length`).
fn http_answer(w: &mut Wire) -> (u16, String) {
    w.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match w.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!(
                "no HTTP answer ({other:?}) after {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let head = String::from_utf8(got).expect("utf-8 head");
    let status = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse().expect("length"));
    let mut body = vec![0u8; len];
    w.read_exact(&mut body).expect("body");
    (status, head + &String::from_utf8_lossy(&body))
}

/// A masked client frame (`mask: None`: unmasked, which a client must
/// not send). `len` overrides the length field (a huge declared length).
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>, len: Option<u64>) -> Vec<u8> {
    let mut f = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match len.unwrap_or(payload.len() as u64) {
        n @ 0..=125 => f.push(m | n as u8),
        n @ 126..=0xFFFF => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&n.to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A final masked binary frame.
fn binary(payload: &[u8]) -> Vec<u8> {
    frame(0x82, payload, Some([7, 1, 2, 3]), None)
}

/// Reads one server frame: `(first byte, payload)`, `None` at end of stream.
fn server_frame(w: &mut Wire) -> Option<(u8, Vec<u8>)> {
    w.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut h = [0u8; 2];
    if let Err(e) = w.read_exact(&mut h) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "read: {e}"
        );
        return None;
    }
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut l = [0u8; 2];
            w.read_exact(&mut l).expect("length");
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            w.read_exact(&mut l).expect("length");
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    w.read_exact(&mut payload).expect("payload");
    Some((h[0], payload))
}

/// Expects a Close frame with `code` next (data frames before it are
/// returned), then the end of the TCP connection.
fn expect_close(w: &mut Wire, code: u16) -> Vec<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        match server_frame(w) {
            Some((0x82, p)) => data.push(p),
            Some((0x88, p)) => {
                assert!(p.len() >= 2, "Close without a status");
                assert_eq!(u16::from_be_bytes([p[0], p[1]]), code, "Close status");
                break;
            }
            other => panic!("expected Close {code}, got {other:?}"),
        }
    }
    assert_eq!(server_frame(w), None, "the TCP connection ends after Close");
    data
}

/// A raw WebSocket connection to `path`, upgraded.
fn ws_open(server: &Server, tls: bool, path: &str) -> Wire {
    let mut w = raw_socket(server.ws, tls);
    w.write_all(upgrade(path, "").as_bytes()).expect("write");
    let (status, head) = http_answer(&mut w);
    assert_eq!(status, 101, "{head}");
    w
}

/// The chatd login of `user` as command bytes (the token signed with the
/// server's secret, so no admin request is needed).
fn login_bytes(server: &Server, user: u64) -> Vec<u8> {
    let token = common::sign_jwt(
        &server.jwt_secret(),
        jsonwebtoken::Algorithm::HS256,
        &serde_json::json!({"sub": user.to_string(), "exp": common::unix_now() + 600}),
    );
    let mut out = Vec::new();
    chatd_client::login::encode_chatd(token.as_bytes(), &mut out);
    out
}

/// A raw WebSocket chatd connection of `user`, logged in.
fn ws_logged_in(server: &Server, tls: bool, user: u64) -> Wire {
    let mut w = ws_open(server, tls, "/chatd");
    w.write_all(&binary(&login_bytes(server, user)))
        .expect("login");
    let (op, p) = server_frame(&mut w).expect("HELLO");
    assert_eq!((op, p[0]), (0x82, 0x03), "OP_HELLO in a binary message");
    w
}

/// A logged-in client over `t` that the tests' offenders must not
/// disturb; [`still_fine`] checks it.
fn bystander(server: &Server) -> ChatdClient {
    server.chatd(99)
}

fn still_fine(c: &mut ChatdClient) {
    c.keepalive_roundtrip();
}

// ---- handshakes ----

#[test]
fn garbage_and_oversize_handshakes_get_400_and_nobody_else_notices() {
    let server = Server::start_over(TestTransport::Ws, 2, &[]);
    let mut ok = bystander(&server);
    let mut w = raw_socket(server.ws, false);
    w.write_all(b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n")
        .expect("write");
    assert_eq!(http_answer(&mut w).0, 400);
    // Over 8 KiB of headers, never finished: refused without waiting for
    // the end.
    let mut w = raw_socket(server.ws, false);
    let big = format!(
        "GET /chatd HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n",
        "a".repeat(9000)
    );
    w.write_all(big.as_bytes()).expect("write");
    let (status, text) = http_answer(&mut w);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("too large"), "{text}");
    still_fine(&mut ok);
}

#[test]
fn paths_origins_versions_and_missing_upgrades_get_their_status() {
    let server = Server::start_over(
        TestTransport::Ws,
        1,
        &[
            "--ws-allowed-origins",
            "https://app.example, https://other.example/",
        ],
    );
    let mut ok = bystander(&server);
    let status = |req: &str| {
        let mut w = raw_socket(server.ws, false);
        w.write_all(req.as_bytes()).expect("write");
        let (status, text) = http_answer(&mut w);
        assert!(
            status == 101 || text.contains("Connection: close"),
            "{text}"
        );
        status
    };
    assert_eq!(status(&upgrade("/nope", "")), 404);
    assert_eq!(
        status(&upgrade("/chatd", "Origin: https://evil.example\r\n")),
        403
    );
    assert_eq!(
        status(&upgrade("/chatd?x=1", "Origin: https://APP.example\r\n")),
        101
    );
    assert_eq!(
        status(&upgrade("/statusd", "Origin: https://other.example\r\n")),
        101
    );
    let v12 = upgrade("/chatd", "").replace("Version: 13", "Version: 12");
    assert_eq!(status(&v12), 400);
    let no_upgrade = upgrade("/chatd", "").replace("Upgrade: websocket\r\n", "");
    assert_eq!(status(&no_upgrade), 426);
    assert_eq!(status("GET /chatd HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    still_fine(&mut ok);
}

#[test]
fn a_handshake_that_never_finishes_is_closed_at_the_login_timeout() {
    for over in [TestTransport::Ws, TestTransport::Wss] {
        let server = Server::start_over(over, 1, &["--login-timeout-ms", "400"]);
        let mut w = raw_socket(server.ws, over.tls());
        let started = Instant::now();
        w.write_all(b"GET /chatd HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        w.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut rest = Vec::new();
        let _ = w.read_to_end(&mut rest);
        let took = started.elapsed();
        assert!(rest.is_empty(), "{over:?}: nothing is answered: {rest:?}");
        assert!(
            took >= Duration::from_millis(350) && took < WAIT,
            "{over:?}: closed after {took:?}"
        );
    }
}

// ---- framing ----

#[test]
fn each_framing_error_closes_that_connection_with_its_status() {
    // The longest command: OP_RTMSG of --max-rtmsg-len (65,536 + 25 bytes).
    let server = Server::start_over(TestTransport::Ws, 2, &[]);
    let mut ok = bystander(&server);
    let mask = Some([1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", frame(0x82, b"\x00", None, None), 1002),
        ("text", frame(0x81, b"hi", mask, None), 1003),
        ("reserved bits", frame(0xC2, b"\x00", mask, None), 1002),
        ("reserved opcode", frame(0x83, b"", mask, None), 1002),
        ("fragmented ping", frame(0x09, b"p", mask, None), 1002),
        (
            "control over 125 bytes",
            frame(0x89, &[0; 126], mask, None),
            1002,
        ),
        ("continuation first", frame(0x80, b"\x00", mask, None), 1002),
        (
            "close status 1005",
            frame(0x88, &1005u16.to_be_bytes(), mask, None),
            1002,
        ),
        (
            "close status 999",
            frame(0x88, &999u16.to_be_bytes(), mask, None),
            1002,
        ),
        ("close of one byte", frame(0x88, &[3], mask, None), 1002),
        // Only the header is sent: refused without waiting for 2^40 bytes.
        (
            "huge declared length",
            frame(0x82, b"", mask, Some(1 << 40)),
            1009,
        ),
        // Headers only: the server decides from them, without waiting
        // for the payload (and a client still sending when it closes
        // would see a reset rather than the Close).
        (
            "message over the longest command",
            frame(0x82, b"", mask, Some(65_562)),
            1009,
        ),
        (
            "fragments over the longest command",
            [
                frame(0x02, &[0; 10], mask, None),
                frame(0x80, b"", mask, Some(65_552)),
            ]
            .concat(),
            1009,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut w = ws_logged_in(&server, false, 1);
        w.write_all(&bytes).expect("write");
        let data = expect_close(&mut w, code);
        // (The fragments' ten keepalives are answered first.)
        let answers: usize = data.iter().map(Vec::len).sum();
        assert!(answers == 0 || answers == 10, "{what}: {data:?}");
        still_fine(&mut ok);
    }
}

#[test]
fn commands_may_span_messages_and_fragments_and_pings_are_answered() {
    let server = Server::start_over(TestTransport::Ws, 1, &["--idle-timeout-ms", "800"]);
    let mut w = ws_open(&server, false, "/chatd");
    let login = login_bytes(&server, 1);
    let (a, b) = login.split_at(5);
    // The login cut across a fragmented message, a Ping in the middle.
    let mask = Some([9, 8, 7, 6]);
    w.write_all(&frame(0x02, &a[..2], mask, None))
        .expect("write");
    w.write_all(&frame(0x89, b"ping 1", mask, None))
        .expect("write");
    w.write_all(&frame(0x00, &a[2..], mask, None))
        .expect("write");
    w.write_all(&frame(0x80, b, mask, None)).expect("write");
    assert_eq!(server_frame(&mut w), Some((0x8A, b"ping 1".to_vec())));
    let (op, hello) = server_frame(&mut w).expect("HELLO");
    assert_eq!((op, hello[0], hello.len()), (0x82, 0x03, 5));
    // Pings alone keep the connection past the idle timeout.
    for i in 0..6u8 {
        std::thread::sleep(Duration::from_millis(250));
        w.write_all(&frame(0x89, &[i], mask, None)).expect("ping");
        assert_eq!(server_frame(&mut w), Some((0x8A, vec![i])));
    }
}

// ---- close sequences ----

#[test]
fn a_client_close_is_answered_with_its_status_then_the_tcp_close() {
    let server = Server::start_over(TestTransport::Ws, 1, &[]);
    let mut ok = bystander(&server);
    let mut w = ws_logged_in(&server, false, 1);
    let mut close = 3001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    // A keepalive before the Close is still answered.
    w.write_all(
        &[
            binary(b"\x00"),
            frame(0x88, &close, Some([1, 1, 1, 1]), None),
        ]
        .concat(),
    )
    .expect("write");
    let data = expect_close(&mut w, 3001);
    assert_eq!(data, [vec![0u8]], "the keepalive's answer, then the Close");
    still_fine(&mut ok);
}

#[test]
fn a_closing_op_error_is_followed_by_close_1008_and_shutting_down_by_1000() {
    let mut server = Server::start_over(TestTransport::Ws, 2, &[]);
    // A bad token: OP_ERROR AUTH_FAILED in a binary message, Close 1008.
    let mut w = ws_open(&server, false, "/chatd");
    let mut auth = vec![OP_AUTH, 3, 0];
    auth.extend_from_slice(b"bad");
    w.write_all(&binary(&auth)).expect("write");
    let data = expect_close(&mut w, 1008);
    assert_eq!(data.len(), 1);
    assert_eq!(&data[0][..3], &[0x07, AUTH_FAILED, OP_AUTH]);
    // An unknown opcode after login: BAD_COMMAND, 1008.
    let mut w = ws_logged_in(&server, false, 1);
    w.write_all(&binary(b"\x42")).expect("write");
    let data = expect_close(&mut w, 1008);
    assert_eq!(&data[0][..2], &[0x07, BAD_COMMAND]);
    // An OP_JOIN, an unknown opcode and the client's Close in one write:
    // the JOIN's answer (from the room's home, maybe the other shard)
    // still comes first, then BAD_COMMAND, then the answer to the
    // client's Close (its status echoed): the Close did not cut the error
    // waiting for the answers before it.
    let chat: u64 = 4200;
    server.add_member(chat, 3);
    let mut w = ws_logged_in(&server, false, 3);
    let mut join = vec![0x01];
    join.extend_from_slice(&chat.to_le_bytes());
    let mut bytes = binary(&join);
    bytes.extend(binary(b"\x42"));
    bytes.extend(frame(
        0x88,
        &1000u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
        None,
    ));
    w.write_all(&bytes).expect("write");
    let data = expect_close(&mut w, 1000).concat();
    let mut want = join.clone();
    want.extend_from_slice(&[0x05]);
    want.extend_from_slice(&chat.to_le_bytes());
    want.push(0);
    assert!(
        data.starts_with(&want),
        "OP_JOIN, OP_IN_CALL first: {data:?}"
    );
    let error = data.get(want.len()..want.len() + 2);
    assert_eq!(error, Some(&[0x07, BAD_COMMAND][..]), "{data:?}");
    // SIGTERM: SHUTTING_DOWN, then Close 1000; a wss-less statusd too.
    let mut c = ws_logged_in(&server, false, 2);
    let mut s = ws_open(&server, false, "/statusd");
    // SAFETY: kill(2) on the server process this test started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    let data = expect_close(&mut c, 1000);
    assert_eq!(&data[0][..2], &[0x07, SHUTTING_DOWN]);
    let data = expect_close(&mut s, 1000);
    assert_eq!(&data[0][..2], &[0x07, SHUTTING_DOWN]);
    assert_eq!(server.terminate(), Some(0));
}

// ---- TLS ----

#[test]
fn plaintext_on_a_tls_port_and_tls_on_a_plaintext_port_affect_only_that_connection() {
    // A server with TLS: a plaintext chatd client is closed; plaintext
    // HTTP on the wss port is told so, in plaintext.
    let tls = Server::start_over(TestTransport::Tls, 2, &[]);
    let mut ok = bystander(&tls);
    let mut raw = raw_socket(tls.chatd.tcp, false);
    raw.write_all(&login_bytes(&tls, 1)).expect("write");
    raw.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "nothing, or a TLS alert: {got:02x?}"
    );
    let mut raw = raw_socket(tls.ws, false);
    raw.write_all(upgrade("/chatd", "").as_bytes())
        .expect("write");
    let (status, text) = http_answer(&mut raw);
    assert_eq!(status, 400);
    assert!(text.contains("wss://"), "{text}");
    still_fine(&mut ok);

    // A server without: a TLS client on the chatd port gets BAD_COMMAND
    // (0x16 is no opcode) and its handshake fails; on the ws port, 400.
    let plain = Server::start_over(TestTransport::Tcp, 2, &[]);
    let mut ok = bystander(&plain);
    let mut c = raw_socket(plain.chatd.tcp, true);
    assert!(
        c.write_all(b"\x00").is_err(),
        "no TLS handshake with a plain port"
    );
    let mut c = raw_socket(plain.ws, true);
    assert!(
        c.write_all(b"GET").is_err(),
        "no TLS handshake with a plain ws port"
    );
    let mut raw = raw_socket(plain.chatd.tcp, false);
    raw.write_all(b"\x16\x03\x01\x00\x05hello").expect("write");
    let mut c = ChatdClient::from_wire(raw);
    c.expect_error_and_close(BAD_COMMAND, 0x16, 0);
    still_fine(&mut ok);
}

#[test]
fn a_failed_or_unfinished_tls_handshake_closes_only_that_connection() {
    let server = Server::start_over(TestTransport::Wss, 2, &["--login-timeout-ms", "400"]);
    let mut ok = bystander(&server);
    // A client that does not trust the certificate.
    let stranger = {
        let roots = chatd_client::rustls::RootCertStore::empty();
        chatd_client::connect::tls_config(roots)
    };
    for addr in [server.chatd.tcp, server.ws] {
        let tcp = std::net::TcpStream::connect(addr).expect("connect");
        let name = chatd_client::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = chatd_client::rustls::ClientConnection::new(stranger.clone(), name).unwrap();
        let mut s = chatd_client::rustls::StreamOwned::new(conn, tcp);
        let e = s
            .write_all(b"\x00")
            .expect_err("the certificate is refused");
        assert!(e.to_string().contains("certificate"), "{e}");
    }
    // Half a ClientHello, then silence: closed by the login timeout.
    let mut raw = raw_socket(server.chatd.tcp, false);
    let started = Instant::now();
    raw.write_all(b"\x16\x03\x01\x02\x00\x01\x00")
        .expect("write");
    raw.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(started.elapsed() >= Duration::from_millis(350));
    still_fine(&mut ok);
}

#[test]
fn an_orderly_tls_close_sends_close_notify() {
    let server = Server::start_over(TestTransport::Tls, 1, &[]);
    let mut c = ChatdClient::connect(server.chatd);
    c.login(&server.token(1));
    c.send_raw(b"\x42");
    c.expect(Ev::Error {
        code: BAD_COMMAND,
        opcode: 0x42,
        id: 0,
    });
    let Wire::Tls(tls) = &mut c.stream else {
        panic!("a TLS client")
    };
    // rustls reads a clean end only after close_notify (else UnexpectedEof).
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("close_notify, then the end");
    assert!(rest.is_empty());
}

/// Writes a new certificate for 127.0.0.1 (and its key) to `cert`/`key`;
/// returns a client configuration trusting only it.
fn new_pair(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::sync::Arc<chatd_client::rustls::ClientConfig> {
    let k = rcgen::KeyPair::generate().expect("key");
    let c = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&k)
        .expect("cert");
    std::fs::write(cert, c.pem()).expect("write cert");
    std::fs::write(key, k.serialize_pem()).expect("write key");
    let roots = chatd_client::connect::roots_from_pem(c.pem().as_bytes()).expect("roots");
    chatd_client::connect::tls_config(roots)
}

/// Whether a TLS client trusting `config` completes a chatd login on
/// `server`.
fn tls_login(
    server: &Server,
    config: &std::sync::Arc<chatd_client::rustls::ClientConfig>,
) -> Result<ChatdClient, String> {
    let tcp = std::net::TcpStream::connect(server.chatd.tcp).map_err(|e| e.to_string())?;
    let name = chatd_client::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = chatd_client::rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut s = chatd_client::rustls::StreamOwned::new(conn, tcp);
    s.write_all(&login_bytes(server, 1))
        .map_err(|e| e.to_string())?;
    let mut c = ChatdClient::from_wire(Wire::Tls(Box::new(s)));
    match c.try_recv() {
        Some(Ev::Hello(_)) => Ok(c),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn sighup_reloads_the_pair_for_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = new_pair(&cert, &key);
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = Server::start_over(TestTransport::Tcp, 2, &["--tls-cert", c, "--tls-key", k]);
    let mut old = tls_login(&server, &first).expect("login with the first pair");

    let second = new_pair(&cert, &key);
    // SAFETY: kill(2) on the server process this test started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    common::wait_until("the new pair to be served", || {
        tls_login(&server, &second).is_ok()
    });
    assert!(tls_login(&server, &first).is_err(), "the old pair is gone");
    old.keepalive_roundtrip();

    // A bad pair: logged, and the current one stays.
    std::fs::write(&key, "not a key").expect("write");
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    common::wait_until("the reload error in the log", || {
        server
            .log()
            .contains("kept the old TLS certificate and key")
    });
    assert!(server.log().contains("key.pem"), "the log names the file");
    tls_login(&server, &second).expect("the second pair still served");
    old.keepalive_roundtrip();
}

/// Runs chatd with `args` (listeners on free ports) and expects it to
/// exit non-zero at once with one line on stderr containing every one
/// of `names`, having printed no listening line.
fn refused_at_start(args: &[&str], names: &[&str]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = common::chatd_command_over(&tmp.path().join("data"), 1, TestTransport::Tcp)
        .args(args)
        .env("CHATD_LOG", "off")
        .output()
        .expect("run chatd");
    assert!(!out.status.success(), "{args:?}: started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("listening"),
        "{args:?}: listened: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    for name in names {
        assert!(
            stderr.contains(name),
            "{args:?}: {stderr} does not name {name}"
        );
    }
}

#[test]
fn unusable_tls_flags_stop_the_start_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    new_pair(&cert, &key);
    let (other_cert, other_key) = (dir.path().join("c2.pem"), dir.path().join("k2.pem"));
    new_pair(&other_cert, &other_key);
    let (c, k, k2) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
    );
    refused_at_start(&["--tls-cert", c], &[c, "--tls-key"]);
    refused_at_start(&["--tls-key", k], &[k, "--tls-cert"]);
    refused_at_start(
        &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", k],
        &["/nonexistent/cert.pem"],
    );
    refused_at_start(&["--tls-cert", c, "--tls-key", c], &[c, "no private key"]);
    refused_at_start(&["--tls-cert", c, "--tls-key", k2], &[k2, "does not match"]);
}
