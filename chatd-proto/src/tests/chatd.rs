//! chatd codec tests.

use proptest::prelude::*;

use super::{
    assert_every_split, assert_truncations_need_more, auth_header, check_arbitrary_bytes,
    decode_chunked, token_len_cases,
};
use crate::chatd::*;
use crate::limits::{DEFAULT_MAX_RTMSG_LEN, MSGLEN_FIELD_MAX};
use crate::{DecodeError, ErrorCode, Limits, OP_ERROR};

const LIMITS: Limits = Limits {
    max_rtmsg_len: DEFAULT_MAX_RTMSG_LEN,
};

fn dec_req(b: &[u8]) -> super::Decoded<Request<'_>> {
    decode_request(b, &LIMITS)
}

fn dec_ev(b: &[u8]) -> super::Decoded<Event<'_>> {
    decode_event(b, &LIMITS)
}

fn enc_req(r: &Request<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    encode_request(r, &mut b);
    b
}

fn enc_ev(e: &Event<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    encode_event(e, &mut b);
    b
}

/// One of every request, with boundary values.
fn sample_requests(data: &[u8]) -> Vec<Request<'_>> {
    vec![
        Request::Keepalive,
        Request::Auth { token: b"h.p.s" },
        Request::Hello { version: 1 },
        Request::Join { chatid: 1 },
        Request::Leave { chatid: u64::MAX },
        Request::RtMsg {
            chatid: 7,
            receiver_userid: 0,
            receiver_clientid: 0,
            msgtype: 0xfe,
            data: &[],
        },
        Request::RtMsg {
            chatid: u64::MAX,
            receiver_userid: 42,
            receiver_clientid: u32::MAX,
            msgtype: 3,
            data,
        },
        Request::InCall {
            chatid: 7,
            in_call: true,
        },
        Request::InCall {
            chatid: 8,
            in_call: false,
        },
    ]
}

/// One of every event, with boundary values.
fn sample_events(data: &[u8]) -> Vec<Event<'_>> {
    vec![
        Event::Keepalive,
        Event::Error {
            code: ErrorCode::NotJoined as u8,
            opcode: OP_RTMSG,
            id: 7,
        },
        Event::Error {
            code: 200,
            opcode: 0xff,
            id: u64::MAX,
        },
        Event::Hello {
            client_id: u32::MAX,
        },
        Event::Join { chatid: 7 },
        Event::Leave { chatid: 7 },
        Event::RtMsg {
            chatid: 7,
            sender_userid: 1,
            sender_clientid: 2,
            msgtype: 0,
            data,
        },
        Event::InCall {
            chatid: 7,
            in_call: true,
        },
        Event::InCall {
            chatid: 7,
            in_call: false,
        },
    ]
}

#[test]
fn every_request_round_trips_with_used_equal_to_encoded_len() {
    let data: Vec<u8> = (0..=255).collect();
    for req in sample_requests(&data) {
        let b = enc_req(&req);
        assert_eq!(b.len(), req.encoded_len(), "{req:?}");
        assert_eq!(b[0], req.opcode());
        assert_eq!(dec_req(&b), Ok(Some((req, b.len()))));
        assert_truncations_need_more(&b, dec_req);
    }
}

#[test]
fn every_event_round_trips_with_used_equal_to_encoded_len() {
    let data: Vec<u8> = (0..=255).rev().collect();
    for ev in sample_events(&data) {
        let b = enc_ev(&ev);
        assert_eq!(b.len(), ev.encoded_len(), "{ev:?}");
        assert_eq!(b[0], ev.opcode());
        assert_eq!(dec_ev(&b), Ok(Some((ev, b.len()))));
        assert_truncations_need_more(&b, dec_ev);
    }
}

#[test]
fn a_stream_of_requests_decodes_the_same_at_every_split_and_byte_by_byte() {
    let data = [9u8; 40];
    let reqs = sample_requests(&data);
    let mut stream = Vec::new();
    for r in &reqs {
        encode_request(r, &mut stream);
    }
    assert_every_split(&stream, &reqs, dec_req);
}

#[test]
fn a_stream_of_events_decodes_the_same_at_every_split_and_byte_by_byte() {
    let data = [7u8; 40];
    let evs = sample_events(&data);
    let mut stream = Vec::new();
    for e in &evs {
        encode_event(e, &mut stream);
    }
    assert_every_split(&stream, &evs, dec_ev);
}

#[test]
fn layouts_are_little_endian_as_in_the_contract() {
    let hello = enc_req(&Request::Hello { version: 0x0102 });
    assert_eq!(hello, [OP_HELLO, 0x02, 0x01, 0, 0]);
    let mut b = Vec::new();
    encode_hello_reply(0x0102_0304, &mut b);
    assert_eq!(b, [OP_HELLO, 4, 3, 2, 1]);
    assert_eq!(
        enc_ev(&Event::Join {
            chatid: 0x0102_0304_0506_0708
        }),
        [OP_JOIN, 8, 7, 6, 5, 4, 3, 2, 1]
    );
    let mut b = Vec::new();
    encode_leave(0x0a, &mut b);
    assert_eq!(b, [OP_LEAVE, 0x0a, 0, 0, 0, 0, 0, 0, 0]);
    let mut b = Vec::new();
    encode_in_call(0x0b, true, &mut b);
    assert_eq!(b, [OP_IN_CALL, 0x0b, 0, 0, 0, 0, 0, 0, 0, 1]);
    let data = vec![0xaa; 0x0102];
    let rt = enc_req(&Request::RtMsg {
        chatid: 0x11,
        receiver_userid: 0x0102,
        receiver_clientid: 0x0304_0506,
        msgtype: 0x77,
        data: &data,
    });
    let header: [u8; RTMSG_HEADER_LEN] = [
        OP_RTMSG, 0x11, 0, 0, 0, 0, 0, 0, 0, // chatid
        0x02, 0x01, 0, 0, 0, 0, 0, 0, // receiver_userid
        0x06, 0x05, 0x04, 0x03, // receiver_clientid
        0x77, // msgtype
        0x02, 0x01, 0x00, // msglen, 24-bit LE
    ];
    assert_eq!(rt[..RTMSG_HEADER_LEN], header);
    assert_eq!(rt[RTMSG_HEADER_LEN..], data[..]);
}

#[test]
fn hello_reserved_bytes_are_ignored() {
    let b = [OP_HELLO, 1, 0, 0xde, 0xad];
    assert_eq!(dec_req(&b), Ok(Some((Request::Hello { version: 1 }, 5))));
}

#[test]
fn unknown_opcodes_are_refused_at_the_first_byte() {
    for op in [OP_ERROR, 0x08, 0x7f, 0xff] {
        assert_eq!(dec_req(&[op]), Err(DecodeError::UnknownOpcode(op)));
    }
    // OP_AUTH is client-only, so a client refuses it from the server.
    for op in [crate::OP_AUTH, 0x08, 0xff] {
        assert_eq!(dec_ev(&[op]), Err(DecodeError::UnknownOpcode(op)));
    }
}

#[test]
fn in_call_status_other_than_0_or_1_is_a_bad_field_naming_the_room() {
    let mut b = Vec::new();
    encode_in_call(0x1234, true, &mut b);
    for status in [2u8, 0x80, 0xff] {
        b[9] = status;
        let want = DecodeError::BadField {
            opcode: OP_IN_CALL,
            chatid: 0x1234,
            field: "status",
        };
        assert_eq!(dec_req(&b), Err(want.clone()));
        assert_eq!(dec_ev(&b), Err(want.clone()));
        assert_eq!(want.error_code(), ErrorCode::BadCommand);
        assert_eq!(want.chatid(), 0x1234);
    }
}

#[test]
fn bad_token_len_is_refused_from_the_two_length_bytes_alone() {
    let (ok, bad) = token_len_cases();
    for len in bad {
        let h = auth_header(len);
        assert_eq!(h.len(), 3);
        assert_eq!(dec_req(&h), Err(DecodeError::BadTokenLen { len }));
        assert_eq!(
            DecodeError::BadTokenLen { len }.error_code(),
            ErrorCode::AuthFailed
        );
    }
    for len in ok {
        assert_eq!(dec_req(&auth_header(len)), Ok(None), "len {len}");
        let token = vec![b'x'; usize::from(len)];
        let req = Request::Auth { token: &token };
        assert_eq!(dec_req(&enc_req(&req)), Ok(Some((req, 3 + token.len()))));
    }
}

/// An `OP_RTMSG` header announcing `msglen`, with no payload.
fn rtmsg_header(chatid: u64, msglen: u32) -> Vec<u8> {
    let mut b = vec![OP_RTMSG];
    b.extend_from_slice(&chatid.to_le_bytes());
    b.extend_from_slice(&[0; 13]);
    b.extend_from_slice(&msglen.to_le_bytes()[..3]);
    assert_eq!(b.len(), RTMSG_HEADER_LEN);
    b
}

#[test]
fn too_large_is_refused_from_the_header_alone_naming_the_room() {
    let max = DEFAULT_MAX_RTMSG_LEN;
    for len in [max + 1, MSGLEN_FIELD_MAX] {
        let h = rtmsg_header(99, len);
        let want = DecodeError::TooLarge {
            opcode: OP_RTMSG,
            chatid: 99,
            len,
            max,
        };
        assert_eq!(dec_req(&h), Err(want.clone()));
        assert_eq!(dec_ev(&h), Err(want.clone()));
        assert_eq!(want.error_code(), ErrorCode::TooLarge);
        assert_eq!((want.opcode(), want.chatid()), (OP_RTMSG, 99));
        // One byte short of the header, the length is not known yet.
        assert_eq!(dec_req(&h[..RTMSG_HEADER_LEN - 1]), Ok(None));
    }
    // Exactly at the limit: waits for the payload.
    assert_eq!(dec_req(&rtmsg_header(99, max)), Ok(None));
}

#[test]
fn the_rtmsg_limit_is_configurable_and_capped_by_the_field() {
    let small = Limits { max_rtmsg_len: 3 };
    let h = rtmsg_header(5, 4);
    let want = Err(DecodeError::TooLarge {
        opcode: OP_RTMSG,
        chatid: 5,
        len: 4,
        max: 3,
    });
    assert_eq!(decode_request(&h, &small), want);
    assert_eq!(decode_request(&rtmsg_header(5, 3), &small), Ok(None));
    let huge = Limits {
        max_rtmsg_len: u32::MAX,
    };
    assert_eq!(
        decode_request(&rtmsg_header(5, MSGLEN_FIELD_MAX), &huge),
        Ok(None)
    );
}

#[test]
fn a_rewritten_rtmsg_decodes_as_the_event_recipients_get() {
    let data = b"hello room";
    let req = Request::RtMsg {
        chatid: 7,
        receiver_userid: 0,
        receiver_clientid: 0,
        msgtype: 9,
        data,
    };
    let mut frame = enc_req(&req);
    rewrite_rtmsg_for_delivery(&mut frame, 0x0102_0304_0506_0708, 0x0a0b_0c0d);
    let want = Event::RtMsg {
        chatid: 7,
        sender_userid: 0x0102_0304_0506_0708,
        sender_clientid: 0x0a0b_0c0d,
        msgtype: 9,
        data,
    };
    assert_eq!(dec_ev(&frame), Ok(Some((want, frame.len()))));
    assert_eq!(frame, enc_ev(&want));
}

/// Owned requests for property tests (strategies cannot yield borrows).
#[derive(Clone, Debug)]
pub(super) enum OwnedReq {
    Keepalive,
    Auth(Vec<u8>),
    Hello(u16),
    Join(u64),
    Leave(u64),
    RtMsg(u64, u64, u32, u8, Vec<u8>),
    InCall(u64, bool),
}

impl OwnedReq {
    pub(super) fn borrow(&self) -> Request<'_> {
        match self {
            OwnedReq::Keepalive => Request::Keepalive,
            OwnedReq::Auth(t) => Request::Auth { token: t },
            OwnedReq::Hello(v) => Request::Hello { version: *v },
            OwnedReq::Join(c) => Request::Join { chatid: *c },
            OwnedReq::Leave(c) => Request::Leave { chatid: *c },
            OwnedReq::RtMsg(c, u, cl, t, d) => Request::RtMsg {
                chatid: *c,
                receiver_userid: *u,
                receiver_clientid: *cl,
                msgtype: *t,
                data: d,
            },
            OwnedReq::InCall(c, s) => Request::InCall {
                chatid: *c,
                in_call: *s,
            },
        }
    }
}

pub(super) fn any_request() -> impl Strategy<Value = OwnedReq> {
    prop_oneof![
        Just(OwnedReq::Keepalive),
        prop::collection::vec(any::<u8>(), 1..=64).prop_map(OwnedReq::Auth),
        any::<u16>().prop_map(OwnedReq::Hello),
        any::<u64>().prop_map(OwnedReq::Join),
        any::<u64>().prop_map(OwnedReq::Leave),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(c, u, cl, t, d)| OwnedReq::RtMsg(c, u, cl, t, d)),
        (any::<u64>(), any::<bool>()).prop_map(|(c, s)| OwnedReq::InCall(c, s)),
    ]
}

/// Owned events for property tests.
#[derive(Clone, Debug)]
pub(super) enum OwnedEv {
    Keepalive,
    Error(u8, u8, u64),
    Hello(u32),
    Join(u64),
    Leave(u64),
    RtMsg(u64, u64, u32, u8, Vec<u8>),
    InCall(u64, bool),
}

impl OwnedEv {
    pub(super) fn borrow(&self) -> Event<'_> {
        match self {
            OwnedEv::Keepalive => Event::Keepalive,
            OwnedEv::Error(code, opcode, id) => Event::Error {
                code: *code,
                opcode: *opcode,
                id: *id,
            },
            OwnedEv::Hello(c) => Event::Hello { client_id: *c },
            OwnedEv::Join(c) => Event::Join { chatid: *c },
            OwnedEv::Leave(c) => Event::Leave { chatid: *c },
            OwnedEv::RtMsg(c, u, cl, t, d) => Event::RtMsg {
                chatid: *c,
                sender_userid: *u,
                sender_clientid: *cl,
                msgtype: *t,
                data: d,
            },
            OwnedEv::InCall(c, s) => Event::InCall {
                chatid: *c,
                in_call: *s,
            },
        }
    }
}

pub(super) fn any_event() -> impl Strategy<Value = OwnedEv> {
    prop_oneof![
        Just(OwnedEv::Keepalive),
        (any::<u8>(), any::<u8>(), any::<u64>()).prop_map(|(a, b, c)| OwnedEv::Error(a, b, c)),
        any::<u32>().prop_map(OwnedEv::Hello),
        any::<u64>().prop_map(OwnedEv::Join),
        any::<u64>().prop_map(OwnedEv::Leave),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(c, u, cl, t, d)| OwnedEv::RtMsg(c, u, cl, t, d)),
        (any::<u64>(), any::<bool>()).prop_map(|(c, s)| OwnedEv::InCall(c, s)),
    ]
}

proptest! {
    #[test]
    fn arbitrary_requests_round_trip_through_arbitrary_chunks(
        owned in prop::collection::vec(any_request(), 1..16),
        mut ends in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let reqs: Vec<Request<'_>> = owned.iter().map(OwnedReq::borrow).collect();
        let mut stream = Vec::new();
        for r in &reqs {
            let before = stream.len();
            encode_request(r, &mut stream);
            prop_assert_eq!(stream.len() - before, r.encoded_len());
        }
        let mut cuts: Vec<usize> = ends.drain(..).map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(decode_chunked(&stream, cuts, dec_req), reqs);
    }

    #[test]
    fn arbitrary_events_round_trip_through_arbitrary_chunks(
        owned in prop::collection::vec(any_event(), 1..16),
        mut ends in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let evs: Vec<Event<'_>> = owned.iter().map(OwnedEv::borrow).collect();
        let mut stream = Vec::new();
        for e in &evs {
            let before = stream.len();
            encode_event(e, &mut stream);
            prop_assert_eq!(stream.len() - before, e.encoded_len());
        }
        let mut cuts: Vec<usize> = ends.drain(..).map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(decode_chunked(&stream, cuts, dec_ev), evs);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        max in 0u32..64,
    ) {
        let limits = Limits { max_rtmsg_len: max };
        check_arbitrary_bytes(&bytes, |b| decode_request(b, &limits));
        check_arbitrary_bytes(&bytes, |b| decode_event(b, &limits));
    }

    #[test]
    fn decoders_never_panic_on_bytes_after_a_valid_opcode(
        op in 0u8..=7,
        bytes in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        // Arbitrary bytes rarely start with a known opcode and a plausible
        // length; this steers them into every decoder branch.
        let mut b = vec![op];
        b.extend_from_slice(&bytes);
        let limits = Limits { max_rtmsg_len: 16 };
        check_arbitrary_bytes(&b, |b| decode_request(b, &limits));
        check_arbitrary_bytes(&b, |b| decode_event(b, &limits));
    }
}
