//! The client's timeouts against a scripted peer: what a real server does
//! not do on purpose (go silent after the login, never answer it). The
//! client's behaviour against the real server is tested in the server's
//! `tests/client.rs`.

use std::time::Duration;

use chatd_client::{Backoff, ChatClient, ChatEvent, ChatEvents, ClientError};
use chatd_proto::chatd::{self as cw, Request};
use chatd_proto::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest wait for anything the test expects.
const WAIT: Duration = Duration::from_secs(10);

/// The next event, within [`WAIT`].
async fn next(events: &mut ChatEvents) -> ChatEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

/// Reads a chatd login (OP_AUTH, OP_HELLO) from `s`.
async fn read_login(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut seen = 0;
    while seen < 2 {
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "client closed during login");
        buf.extend_from_slice(&chunk[..n]);
        while let Some((req, used)) = cw::decode_request(&buf, &Limits::ANY).expect("valid") {
            assert!(matches!(
                (seen, req),
                (0, Request::Auth { .. }) | (1, Request::Hello { version: 1 })
            ));
            seen += 1;
            buf.drain(..used);
        }
    }
}

/// A peer that answers each login with a new client id, then reads
/// nothing and says nothing more, holding the socket open.
async fn silent_after_login() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        for id in 1u32.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            read_login(&mut s).await;
            let mut hello = Vec::new();
            cw::encode_hello_reply(id, &mut hello);
            s.write_all(&hello).await.expect("write");
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn an_unanswered_keepalive_makes_the_client_reconnect() {
    let addr = silent_after_login().await;
    let (client, mut events) = ChatClient::builder("a.b.c")
        .keepalive(Duration::from_millis(100))
        .keepalive_timeout(Duration::from_millis(200))
        .reconnect(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        })
        .connect(addr)
        .await
        .expect("login");
    assert!(matches!(
        next(&mut events).await,
        ChatEvent::Connected { client_id: 1 }
    ));
    match next(&mut events).await {
        ChatEvent::Reconnecting {
            error: ClientError::Timeout(_),
            attempt: 1,
            ..
        } => {}
        other => panic!("expected a keepalive timeout, got {other:?}"),
    }
    assert!(matches!(
        next(&mut events).await,
        ChatEvent::Connected { client_id: 2 }
    ));
    assert_eq!(client.client_id(), Some(2));
}

#[tokio::test]
async fn a_login_without_answer_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        read_login(&mut s).await;
        // Holds the socket open without answering, until the client gives up.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let res = ChatClient::builder("a.b.c")
        .login_timeout(Duration::from_millis(200))
        .connect(addr)
        .await;
    assert!(
        matches!(res, Err(ClientError::Timeout("login"))),
        "{:?}",
        res.map(|_| ())
    );
    tokio::time::timeout(WAIT, peer)
        .await
        .expect("the client closed its socket")
        .expect("peer");
}

/// A client that keeps sending (call heartbeats) but hears nothing still
/// finds out that its connection is dead.
#[tokio::test]
async fn a_client_that_only_sends_still_detects_a_dead_connection() {
    let addr = silent_after_login().await;
    let (client, mut events) = ChatClient::builder("a.b.c")
        .rooms([7])
        .call_heartbeat(Duration::from_millis(50))
        .keepalive(Duration::from_millis(200))
        .keepalive_timeout(Duration::from_millis(200))
        .no_reconnect()
        .connect(addr)
        .await
        .expect("login");
    client.enter_call(7).await.expect("call");
    assert!(matches!(
        next(&mut events).await,
        ChatEvent::Connected { client_id: 1 }
    ));
    match next(&mut events).await {
        ChatEvent::Closed {
            error: Some(ClientError::Timeout(_)),
        } => {}
        other => panic!("expected a keepalive timeout, got {other:?}"),
    }
}
