//! chatd-client against the real server: login, rooms, the three
//! addressings, calls, presence, keepalive, and reconnects that restore
//! rooms, calls and presence (after a server restart on the same data dir
//! and ports, and after the connection is cut).
//!
//! Each test starts the server (blocking harness), then drives the async
//! clients on a runtime of its own; the harness's admin calls run outside
//! that runtime.

mod common;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatd_client::admin::AdminClient;
use chatd_client::{
    Backoff, ChatClient, ChatEvent, ChatEvents, ClientError, Connect, Events, Message,
    PresenceClient, PresenceEvent, PresenceEvents, To,
};
use chatd_proto::ErrorCode;
use common::{Server, WAIT};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Reconnects quickly, so the tests do not wait on backoff.
const FAST: Backoff = Backoff {
    initial: Duration::from_millis(20),
    max: Duration::from_millis(200),
};

/// Reconnects 150-300 ms after a cut (the first attempt comes after a
/// random half to all of `initial`): time to act while disconnected.
const AFTER_A_CUT: Backoff = Backoff {
    initial: Duration::from_millis(300),
    max: Duration::from_millis(300),
};

/// The next event, within [`WAIT`].
async fn next<E: std::fmt::Debug>(events: &mut Events<E>) -> E {
    match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("the event stream ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// The first event `pick` accepts (others are skipped), within [`WAIT`].
async fn until<E: std::fmt::Debug, T>(
    events: &mut Events<E>,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let ev = events.recv().await.expect("the event stream ended");
            if let Some(t) = pick(&ev) {
                return t;
            }
        }
    });
    found.await.expect("the awaited event did not come")
}

/// Nothing arrives for `d` (for what no event announces: a flag that
/// stays as it is, a connection that stays open).
async fn quiet<E: std::fmt::Debug>(events: &mut Events<E>, d: Duration) {
    if let Ok(ev) = tokio::time::timeout(d, events.recv()).await {
        panic!("expected nothing for {d:?}, got {ev:?}");
    }
}

/// A chat client of `token` with `rooms`, its login and joins read.
async fn chat(ep: common::Endpoint, token: &str, rooms: &[u64]) -> (ChatClient, ChatEvents) {
    let (c, mut ev) = ChatClient::builder(token)
        .rooms(rooms.iter().copied())
        .reconnect(FAST)
        .connect_with(ep.dial())
        .await
        .expect("chat client logs in");
    logged_in_and_joined(&mut ev, rooms).await;
    (c, ev)
}

/// `Connected`, then `Joined` and the call flag (off) for each room.
async fn logged_in_and_joined(ev: &mut ChatEvents, rooms: &[u64]) -> u32 {
    let client_id = match next(ev).await {
        ChatEvent::Connected { client_id } => client_id,
        other => panic!("expected Connected, got {other:?}"),
    };
    for &room in rooms {
        assert!(matches!(next(ev).await, ChatEvent::Joined { chat } if chat == room));
        assert!(matches!(
            next(ev).await,
            ChatEvent::InCall { chat, in_call: false } if chat == room
        ));
    }
    client_id
}

/// The next event is this message.
async fn expect_message(ev: &mut ChatEvents, from: &ChatClient, from_user: u64, want: (u8, &[u8])) {
    match next(ev).await {
        ChatEvent::Message(Message {
            chat,
            from_user: u,
            from_client,
            msgtype,
            data,
        }) => {
            assert_eq!((chat, u, msgtype), (7, from_user, want.0));
            assert_eq!(Some(from_client), from.client_id());
            assert_eq!(&data[..], want.1);
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next event is `user`'s presence `presence`.
async fn expect_presence(ev: &mut PresenceEvents, user: u64, presence: u8) {
    match next(ev).await {
        PresenceEvent::Presence {
            user: u,
            presence: p,
        } if (u, p) == (user, presence) => {}
        other => panic!("expected user {user} at {presence}, got {other:?}"),
    }
}

/// The next event ends the login dump with the own presence `own`.
async fn expect_synced(ev: &mut PresenceEvents, own: u8) {
    match next(ev).await {
        PresenceEvent::Synced { own: o } if o == own => {}
        other => panic!("expected Synced {{ own: {own} }}, got {other:?}"),
    }
}

/// The next event is the own presence `presence`.
async fn expect_own(ev: &mut PresenceEvents, presence: u8) {
    match next(ev).await {
        PresenceEvent::Own { presence: p } if p == presence => {}
        other => panic!("expected Own {{ presence: {presence} }}, got {other:?}"),
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    rt().block_on(f)
}

#[test]
fn messages_reach_the_room_one_user_or_one_client() {
    let s = Server::start(2, &[]);
    s.add_member(7, 1);
    s.add_member(7, 2);
    let (t1, t2) = (s.token(1), s.token(2));
    block_on(async {
        let (a, mut ae) = chat(s.chatd, &t1, &[7]).await;
        let (b1, mut b1e) = chat(s.chatd, &t2, &[7]).await;
        let (b2, mut b2e) = chat(s.chatd, &t2, &[7]).await;
        assert_ne!(b1.client_id(), b2.client_id());

        a.send(7, To::Room, 1, b"to all").await.expect("send");
        expect_message(&mut b1e, &a, 1, (1, b"to all")).await;
        expect_message(&mut b2e, &a, 1, (1, b"to all")).await;

        a.send(7, To::User(2), 2, b"to user 2").await.expect("send");
        expect_message(&mut b1e, &a, 1, (2, b"to user 2")).await;
        expect_message(&mut b2e, &a, 1, (2, b"to user 2")).await;

        let one = b1.client_id().expect("connected");
        a.send(7, To::Client(2, one), 3, b"to one")
            .await
            .expect("send");
        expect_message(&mut b1e, &a, 1, (3, b"to one")).await;
        // A room-wide fence: b2's next message is it, so it got nothing
        // addressed to b1 (one connection's messages arrive in order).
        a.send(7, To::Room, 4, b"fence").await.expect("send");
        expect_message(&mut b2e, &a, 1, (4, b"fence")).await;
        expect_message(&mut b1e, &a, 1, (4, b"fence")).await;

        // The sender never got its own: its next event is b1's answer.
        b1.send(7, To::User(1), 5, b"back").await.expect("send");
        expect_message(&mut ae, &b1, 2, (5, b"back")).await;

        // What the protocol cannot address is refused before sending; a
        // room not joined is the server's NOT_JOINED, and the client stays.
        assert!(matches!(
            a.send(7, To::User(0), 1, b"x").await,
            Err(ClientError::InvalidArgument(_))
        ));
        a.send(8, To::Room, 1, b"x").await.expect("send");
        match next(&mut ae).await {
            ChatEvent::Error(e) => {
                assert_eq!((e.error_code(), e.id), (Some(ErrorCode::NotJoined), 8))
            }
            other => panic!("expected NOT_JOINED, got {other:?}"),
        }
        a.leave(7).await.expect("leave");
        assert!(matches!(next(&mut ae).await, ChatEvent::Left { chat: 7 }));
        a.close().await;
        assert!(matches!(
            next(&mut ae).await,
            ChatEvent::Closed { error: None }
        ));
        assert!(ae.recv().await.is_none(), "the stream ends after Closed");
    });
}

#[test]
fn a_refused_token_fails_connect_and_is_not_retried() {
    let s = Server::start(1, &[]);
    block_on(async {
        match ChatClient::builder("not.a.jwt")
            .connect_with(s.chatd.dial())
            .await
        {
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.error_code(), Some(ErrorCode::AuthFailed));
                assert!(e.is_fatal());
            }
            other => panic!("expected AUTH_FAILED, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn a_call_stays_on_while_the_clients_beat_and_ends_when_one_leaves() {
    // Heartbeats every 50 ms against a 1 s call timeout: 20 a timeout.
    let s = Server::start(1, &["--call-timeout-ms", "1000"]);
    s.add_member(7, 1);
    s.add_member(7, 2);
    let (t1, t2) = (s.token(1), s.token(2));
    let api = AdminClient::new(s.admin, s.admin_token.clone());
    // HTTPS when the suite runs over TLS.
    let api = if common::transport().tls() {
        api.with_tls(common::test_tls().client.clone())
    } else {
        api
    };
    block_on(async {
        let beat = Duration::from_millis(50);
        let (a, mut ae) = ChatClient::builder(t1)
            .rooms([7])
            .call_heartbeat(beat)
            .connect_with(s.chatd.dial())
            .await
            .expect("login");
        logged_in_and_joined(&mut ae, &[7]).await;
        let (b, mut be) = ChatClient::builder(t2)
            .rooms([7])
            .call_heartbeat(beat)
            .connect_with(s.chatd.dial())
            .await
            .expect("login");
        logged_in_and_joined(&mut be, &[7]).await;

        a.enter_call(7).await.expect("call");
        b.enter_call(7).await.expect("call");
        for ev in [&mut ae, &mut be] {
            assert!(matches!(
                next(ev).await,
                ChatEvent::InCall {
                    chat: 7,
                    in_call: true
                }
            ));
        }
        // Two call timeouts later the flag has not dropped: the clients
        // kept beating.
        quiet(&mut ae, Duration::from_millis(2000)).await;
        let room = api.room(7).await.expect("room").expect("members");
        assert_eq!((room.in_call, room.call_users), (true, vec![1, 2]));

        a.leave_call(7).await.expect("leave call");
        assert!(matches!(
            next(&mut be).await,
            ChatEvent::InCall {
                chat: 7,
                in_call: false
            }
        ));
    });
}

#[test]
fn presence_comes_with_the_dump_then_as_changes_and_own_answers() {
    let s = Server::start(2, &[]);
    s.add_contact(1, 2);
    let (t1, t2) = (s.token(1), s.token(2));
    block_on(async {
        let (p1, mut e1) = PresenceClient::builder(t1)
            .presence(3)
            .connect_with(s.statusd.dial())
            .await
            .expect("login");
        assert!(matches!(next(&mut e1).await, PresenceEvent::Connected));
        expect_synced(&mut e1, 3).await;

        let (_p2, mut e2) = PresenceClient::builder(t2)
            .presence(2)
            .connect_with(s.statusd.dial())
            .await
            .expect("login");
        assert!(matches!(next(&mut e2).await, PresenceEvent::Connected));
        expect_presence(&mut e2, 1, 3).await;
        expect_synced(&mut e2, 2).await;
        expect_presence(&mut e1, 2, 2).await;

        p1.set_presence(1).await.expect("set");
        expect_own(&mut e1, 1).await;
        expect_presence(&mut e2, 1, 1).await;
    });
}

#[test]
fn keepalive_holds_a_silent_client_past_the_idle_timeout() {
    // Keepalives every 100 ms against a 2 s idle timeout: 20 a timeout.
    let s = Server::start(1, &["--idle-timeout-ms", "2000"]);
    let t1 = s.token(1);
    block_on(async {
        let (_kept, mut kept_ev) = ChatClient::builder(t1.clone())
            .keepalive(Duration::from_millis(100))
            .connect_with(s.chatd.dial())
            .await
            .expect("login");
        let (_silent, mut silent_ev) = ChatClient::builder(t1)
            .keepalive(Duration::from_secs(60))
            .no_reconnect()
            .connect_with(s.chatd.dial())
            .await
            .expect("login");
        assert!(matches!(
            next(&mut kept_ev).await,
            ChatEvent::Connected { .. }
        ));
        assert!(matches!(
            next(&mut silent_ev).await,
            ChatEvent::Connected { .. }
        ));
        // The silent one is closed by the server's idle timeout...
        match next(&mut silent_ev).await {
            ChatEvent::Closed {
                error: Some(ClientError::Closed),
            } => {}
            other => panic!("expected the idle close, got {other:?}"),
        }
        // ...while the one that sends keepalives stays, well past it.
        quiet(&mut kept_ev, Duration::from_millis(2000)).await;
    });
}

#[test]
fn after_a_server_restart_rooms_calls_and_presence_are_restored() {
    let mut s = Server::start(1, &[]);
    s.add_member(7, 1);
    s.add_member(7, 2);
    s.add_contact(1, 3);
    let (t1, t2, t3) = (s.token(1), s.token(2), s.token(3));
    let rt = rt();
    let (chat1, mut chat1_ev, pres1, mut pres1_ev) = rt.block_on(async {
        let (c, ce) = chat(s.chatd, &t1, &[7]).await;
        c.enter_call(7).await.expect("call");
        let (p, mut pe) = PresenceClient::builder(t1.clone())
            .presence(3)
            .reconnect(FAST)
            .connect_with(s.statusd.dial())
            .await
            .expect("login");
        assert!(matches!(next(&mut pe).await, PresenceEvent::Connected));
        expect_synced(&mut pe, 3).await;
        p.set_presence(4).await.expect("set");
        expect_own(&mut pe, 4).await;
        (c, ce, p, pe)
    });

    // Relations and secrets are in the data dir; presence and calls are
    // not: only the clients can bring them back.
    s.restart(&[]);

    rt.block_on(async {
        let drained = until(&mut chat1_ev, |ev| match ev {
            ChatEvent::Reconnecting { error, .. } => Some(format!("{error}")),
            _ => None,
        })
        .await;
        assert!(
            drained.contains("SHUTTING_DOWN") || drained.contains("closed"),
            "{drained}"
        );
        until(&mut chat1_ev, |ev| {
            matches!(ev, ChatEvent::Connected { .. }).then_some(())
        })
        .await;
        assert!(matches!(
            next(&mut chat1_ev).await,
            ChatEvent::Joined { chat: 7 }
        ));
        assert!(matches!(
            next(&mut chat1_ev).await,
            ChatEvent::InCall {
                chat: 7,
                in_call: false
            }
        ));
        until(&mut pres1_ev, |ev| {
            matches!(ev, PresenceEvent::Connected).then_some(())
        })
        .await;
        expect_synced(&mut pres1_ev, 4).await;

        // The room is joined on the new server: a message reaches it.
        let (chat2, mut chat2_ev) = chat(s.chatd, &t2, &[7]).await;
        chat2
            .send(7, To::Room, 9, b"after restart")
            .await
            .expect("send");
        expect_message(&mut chat1_ev, &chat2, 2, (9, b"after restart")).await;
        // The call resumed: a second user in it turns the flag on.
        chat2.enter_call(7).await.expect("call");
        for ev in [&mut chat1_ev, &mut chat2_ev] {
            assert!(matches!(
                next(ev).await,
                ChatEvent::InCall {
                    chat: 7,
                    in_call: true
                }
            ));
        }
        // The presence was announced again: a contact sees it.
        let (_p3, mut p3_ev) = PresenceClient::builder(t3)
            .connect_with(s.statusd.dial())
            .await
            .expect("login");
        assert!(matches!(next(&mut p3_ev).await, PresenceEvent::Connected));
        expect_presence(&mut p3_ev, 1, 4).await;
        assert!(chat1.is_connected() && pres1.is_connected());
    });
}

/// A [`Connect`] over the suite's transport that keeps a handle on every
/// socket it opened, so the test can cut them as a network failure would.
#[derive(Clone)]
struct Cuttable {
    ep: common::Endpoint,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

/// The TCP connections of a [`Cuttable`], each recorded.
struct Recorded(Cuttable);

impl Connect for Recorded {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(self.0.ep.addr())
            .await?
            .into_std()?;
        self.0.open.lock().expect("lock").push(stream.try_clone()?);
        tokio::net::TcpStream::from_std(stream)
    }
}

impl Connect for Cuttable {
    type Stream = Box<dyn chatd_client::connect::AnyStream>;

    async fn connect(&self) -> std::io::Result<Self::Stream> {
        self.ep.dial().connect_over(Recorded(self.clone())).await
    }
}

impl Cuttable {
    fn new(ep: common::Endpoint) -> Self {
        Cuttable {
            ep,
            open: Arc::default(),
        }
    }

    /// Shuts every socket opened so far down, both ways.
    fn cut(&self) {
        for s in self.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_cut_connection_is_reconnected_and_its_rooms_joined_again() {
    let s = Server::start(2, &[]);
    s.add_member(7, 1);
    s.add_member(7, 2);
    let (t1, t2) = (s.token(1), s.token(2));
    block_on(async {
        let link = Cuttable::new(s.chatd);
        // The first attempt comes 150-300 ms after the cut.
        let (a, mut ae) = ChatClient::builder(t1)
            .rooms([7])
            .reconnect(AFTER_A_CUT)
            .connect_with(link.clone())
            .await
            .expect("login");
        let first = logged_in_and_joined(&mut ae, &[7]).await;
        let (b, mut be) = chat(s.chatd, &t2, &[7]).await;

        link.cut();
        match next(&mut ae).await {
            ChatEvent::Reconnecting { attempt: 1, .. } => {}
            other => panic!("expected Reconnecting, got {other:?}"),
        }
        // Real-time messages are not queued while down.
        assert!(matches!(
            a.send(7, To::Room, 1, b"while down").await,
            Err(ClientError::NotConnected)
        ));
        assert!(!a.is_connected() && a.client_id().is_none());
        let second = logged_in_and_joined(&mut ae, &[7]).await;
        assert_ne!(first, second, "a new connection, a new client id");
        assert_eq!(a.client_id(), Some(second));

        b.send(7, To::Room, 2, b"after the cut")
            .await
            .expect("send");
        expect_message(&mut ae, &b, 2, (2, b"after the cut")).await;
        a.send(7, To::Room, 3, b"back").await.expect("send");
        expect_message(&mut be, &a, 1, (3, b"back")).await;
    });
}

/// The presence client keeps a value set while it was disconnected and
/// announces it at the next login.
#[test]
fn presence_set_while_disconnected_is_announced_at_the_next_login() {
    let s = Server::start(1, &[]);
    s.add_contact(1, 2);
    let (t1, t2) = (s.token(1), s.token(2));
    block_on(async {
        let link = Cuttable::new(s.statusd);
        let (p1, mut e1) = PresenceClient::builder(t1)
            .presence(3)
            .reconnect(AFTER_A_CUT)
            .connect_with(link.clone())
            .await
            .expect("login");
        assert!(matches!(next(&mut e1).await, PresenceEvent::Connected));
        expect_synced(&mut e1, 3).await;
        link.cut();
        assert!(matches!(
            next(&mut e1).await,
            PresenceEvent::Reconnecting { .. }
        ));
        // Within the 150-300 ms before the next attempt.
        p1.set_presence(2).await.expect("set");
        assert!(matches!(next(&mut e1).await, PresenceEvent::Connected));
        expect_synced(&mut e1, 2).await;

        let (_p2, mut e2) = PresenceClient::builder(t2)
            .connect_with(s.statusd.dial())
            .await
            .expect("login");
        assert!(matches!(next(&mut e2).await, PresenceEvent::Connected));
        expect_presence(&mut e2, 1, 2).await;
    });
}
