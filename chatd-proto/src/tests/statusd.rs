//! statusd codec tests.

use proptest::prelude::*;

use super::{
    assert_every_split, assert_truncations_need_more, auth_header, check_arbitrary_bytes,
    decode_chunked, token_len_cases,
};
use crate::statusd::*;
use crate::{DecodeError, ErrorCode, OP_AUTH, OP_ERROR, OP_KEEPALIVE};

fn enc_req(r: &Request<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    encode_request(r, &mut b);
    b
}

fn enc_ev(e: &Event) -> Vec<u8> {
    let mut b = Vec::new();
    encode_event(e, &mut b);
    b
}

fn sample_requests() -> Vec<Request<'static>> {
    vec![
        Request::Keepalive,
        Request::Auth { token: b"a.b.c" },
        Request::Hello {
            version: 1,
            presence: 3,
        },
        Request::Hello {
            version: u16::MAX,
            presence: AUTO_FLAG | 2,
        },
        Request::SetPres { presence: 0 },
        Request::SetPres {
            presence: AUTO_FLAG | 0x7f,
        },
    ]
}

fn sample_events() -> Vec<Event> {
    vec![
        Event::Keepalive,
        Event::Error {
            code: ErrorCode::ShuttingDown as u8,
            opcode: 0,
            id: 0,
        },
        Event::Pres {
            userid: 0,
            presence: 3,
        },
        Event::Pres {
            userid: u64::MAX,
            presence: 0,
        },
    ]
}

#[test]
fn every_request_round_trips_with_used_equal_to_encoded_len() {
    for req in sample_requests() {
        let b = enc_req(&req);
        assert_eq!(b.len(), req.encoded_len(), "{req:?}");
        assert_eq!(b[0], req.opcode());
        assert_eq!(decode_request(&b), Ok(Some((req, b.len()))));
        assert_truncations_need_more(&b, decode_request);
    }
}

#[test]
fn every_event_round_trips_with_used_equal_to_encoded_len() {
    for ev in sample_events() {
        let b = enc_ev(&ev);
        assert_eq!(b.len(), ev.encoded_len(), "{ev:?}");
        assert_eq!(b[0], ev.opcode());
        assert_eq!(decode_event(&b), Ok(Some((ev, b.len()))));
        assert_truncations_need_more(&b, decode_event);
    }
}

#[test]
fn streams_decode_the_same_at_every_split_and_byte_by_byte() {
    let reqs = sample_requests();
    let mut stream = Vec::new();
    reqs.iter().for_each(|r| encode_request(r, &mut stream));
    assert_every_split(&stream, &reqs, decode_request);

    let evs = sample_events();
    let mut stream = Vec::new();
    evs.iter().for_each(|e| encode_event(e, &mut stream));
    assert_every_split(&stream, &evs, decode_event);
}

#[test]
fn layouts_are_little_endian_as_in_the_contract() {
    let hello = enc_req(&Request::Hello {
        version: 0x0102,
        presence: 0x83,
    });
    assert_eq!(hello, [OP_HELLO, 0x02, 0x01, 0x83, 0]);
    assert_eq!(enc_req(&Request::SetPres { presence: 4 }), [OP_SETPRES, 4]);
    let mut b = Vec::new();
    encode_pres(0x0102_0304_0506_0708, 3, &mut b);
    assert_eq!(b, [OP_PRES, 8, 7, 6, 5, 4, 3, 2, 1, 3]);
    assert_eq!(b.len(), PRES_LEN);
}

#[test]
fn hello_reserved_byte_is_ignored() {
    let b = [OP_HELLO, 1, 0, 2, 0xff];
    let want = Request::Hello {
        version: 1,
        presence: 2,
    };
    assert_eq!(decode_request(&b), Ok(Some((want, 5))));
}

#[test]
fn unknown_opcodes_are_refused_at_the_first_byte() {
    // chatd's opcodes are unknown here: each listener speaks its own set.
    for op in [0x04, 0x05, OP_PRES, OP_ERROR, 0xff] {
        assert_eq!(decode_request(&[op]), Err(DecodeError::UnknownOpcode(op)));
    }
    for op in [OP_HELLO, OP_SETPRES, OP_AUTH, 0xff] {
        assert_eq!(decode_event(&[op]), Err(DecodeError::UnknownOpcode(op)));
    }
    assert_eq!(
        decode_request(&[OP_KEEPALIVE, 0xff]),
        Ok(Some((Request::Keepalive, 1)))
    );
}

#[test]
fn bad_token_len_is_refused_from_the_two_length_bytes_alone() {
    let (ok, bad) = token_len_cases();
    for len in bad {
        assert_eq!(
            decode_request(&auth_header(len)),
            Err(DecodeError::BadTokenLen { len })
        );
    }
    for len in ok {
        assert_eq!(decode_request(&auth_header(len)), Ok(None), "len {len}");
    }
}

#[derive(Clone, Debug)]
pub(super) enum OwnedReq {
    Keepalive,
    Auth(Vec<u8>),
    Hello(u16, u8),
    SetPres(u8),
}

impl OwnedReq {
    pub(super) fn borrow(&self) -> Request<'_> {
        match self {
            OwnedReq::Keepalive => Request::Keepalive,
            OwnedReq::Auth(t) => Request::Auth { token: t },
            OwnedReq::Hello(version, presence) => Request::Hello {
                version: *version,
                presence: *presence,
            },
            OwnedReq::SetPres(presence) => Request::SetPres {
                presence: *presence,
            },
        }
    }
}

pub(super) fn any_request() -> impl Strategy<Value = OwnedReq> {
    prop_oneof![
        Just(OwnedReq::Keepalive),
        prop::collection::vec(any::<u8>(), 1..=64).prop_map(OwnedReq::Auth),
        (any::<u16>(), any::<u8>()).prop_map(|(v, p)| OwnedReq::Hello(v, p)),
        any::<u8>().prop_map(OwnedReq::SetPres),
    ]
}

pub(super) fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Keepalive),
        (any::<u8>(), any::<u8>(), any::<u64>()).prop_map(|(code, opcode, id)| Event::Error {
            code,
            opcode,
            id
        }),
        (any::<u64>(), any::<u8>()).prop_map(|(userid, presence)| Event::Pres { userid, presence }),
    ]
}

/// Sorted cut points within a stream of `len` bytes.
fn cuts(ends: Vec<prop::sample::Index>, len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = ends.into_iter().map(|i| i.index(len + 1)).collect();
    c.sort_unstable();
    c
}

proptest! {
    #[test]
    fn arbitrary_requests_round_trip_through_arbitrary_chunks(
        owned in prop::collection::vec(any_request(), 1..16),
        ends in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let reqs: Vec<Request<'_>> = owned.iter().map(OwnedReq::borrow).collect();
        let mut stream = Vec::new();
        for r in &reqs {
            let before = stream.len();
            encode_request(r, &mut stream);
            prop_assert_eq!(stream.len() - before, r.encoded_len());
        }
        let cuts = cuts(ends, stream.len());
        prop_assert_eq!(decode_chunked(&stream, cuts, decode_request), reqs);
    }

    #[test]
    fn arbitrary_events_round_trip_through_arbitrary_chunks(
        evs in prop::collection::vec(any_event(), 1..16),
        ends in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for e in &evs {
            let before = stream.len();
            encode_event(e, &mut stream);
            prop_assert_eq!(stream.len() - before, e.encoded_len());
        }
        let cuts = cuts(ends, stream.len());
        prop_assert_eq!(decode_chunked(&stream, cuts, decode_event), evs);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        op in 0u8..=7,
        bytes in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        check_arbitrary_bytes(&bytes, decode_request);
        check_arbitrary_bytes(&bytes, decode_event);
        let mut b = vec![op];
        b.extend_from_slice(&bytes);
        check_arbitrary_bytes(&b, decode_request);
        check_arbitrary_bytes(&b, decode_event);
    }
}
