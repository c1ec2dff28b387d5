//! A fuzz run that fits in `cargo test` on stable: valid command streams
//! of both services, in both directions, mutated (or random bytes), fed to
//! the decoders whole and cut into reads at random points. The cargo-fuzz
//! targets in `fuzz/` do the same open-ended on nightly; this runs a fixed
//! number of cases ([`fuzz_cases`]), so CI runs it every time.
//!
//! What must hold for any input:
//! - no panic;
//! - the commands, the error that stops decoding and the bytes consumed do
//!   not depend on how reads cut the stream;
//! - each command used at least one byte and no more than there were, its
//!   `encoded_len` is what it used, and encoding it again gives back those
//!   bytes (but the ignored reserved bytes of a C->S `OP_HELLO`);
//! - an `OP_RTMSG` rewritten for delivery in place decodes as the event
//!   its recipients expect.

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::{chatd as chatd_tests, statusd as statusd_tests, Decoded};
use crate::testing::{any_cuts, any_mutations, fuzz_cases, mutate};
use crate::{chatd, statusd, DecodeError, Limits};

/// What a reader got from a stream: the commands with the bytes each used,
/// the error that stopped decoding (if any), and the bytes consumed.
type Reading<'a, T> = (Vec<(T, &'a [u8])>, Option<DecodeError>, usize);

/// What a reader gets from `stream` when its bytes arrive in reads ending
/// at each of `ends`, then at the end.
fn decode_reads<'a, T>(
    stream: &'a [u8],
    ends: &[usize],
    decode: impl Fn(&'a [u8]) -> Decoded<T>,
) -> Reading<'a, T> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in ends.iter().chain([&stream.len()]) {
        let end = end.clamp(start, stream.len());
        loop {
            match decode(&stream[start..end]) {
                Ok(Some((cmd, used))) => {
                    assert!(
                        used > 0 && used <= end - start,
                        "used {used} of {}",
                        end - start
                    );
                    out.push((cmd, &stream[start..start + used]));
                    start += used;
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e), start),
            }
        }
    }
    (out, None, start)
}

/// Decodes `stream` whole and in reads cut at `cuts`, asserts both give the
/// same, and returns the whole reading's commands with their bytes.
fn same_however_cut<'a, T: PartialEq + std::fmt::Debug>(
    stream: &'a [u8],
    cuts: &[usize],
    decode: impl Fn(&'a [u8]) -> Decoded<T> + Copy,
) -> Result<Vec<(T, &'a [u8])>, TestCaseError> {
    let whole = decode_reads(stream, &[], decode);
    let split = decode_reads(stream, cuts, decode);
    prop_assert_eq!(&whole, &split, "cut at {:?}", cuts);
    Ok(whole.0)
}

/// A chatd stream: client commands (`requests`) or server commands,
/// valid then mutated, or random bytes.
fn any_chatd_bytes(requests: bool) -> impl Strategy<Value = Vec<u8>> {
    let valid = if requests {
        prop::collection::vec(chatd_tests::any_request(), 1..8)
            .prop_map(|reqs| {
                let mut b = Vec::new();
                for r in &reqs {
                    chatd::encode_request(&r.borrow(), &mut b);
                }
                b
            })
            .boxed()
    } else {
        prop::collection::vec(chatd_tests::any_event(), 1..8)
            .prop_map(|evs| {
                let mut b = Vec::new();
                for e in &evs {
                    chatd::encode_event(&e.borrow(), &mut b);
                }
                b
            })
            .boxed()
    };
    mutated_or_random(valid)
}

/// A statusd stream, as [`any_chatd_bytes`].
fn any_statusd_bytes(requests: bool) -> impl Strategy<Value = Vec<u8>> {
    let valid = if requests {
        prop::collection::vec(statusd_tests::any_request(), 1..8)
            .prop_map(|reqs| {
                let mut b = Vec::new();
                for r in &reqs {
                    statusd::encode_request(&r.borrow(), &mut b);
                }
                b
            })
            .boxed()
    } else {
        prop::collection::vec(statusd_tests::any_event(), 1..8)
            .prop_map(|evs| {
                let mut b = Vec::new();
                for e in &evs {
                    statusd::encode_event(e, &mut b);
                }
                b
            })
            .boxed()
    };
    mutated_or_random(valid)
}

/// Mostly `valid` mutated, sometimes random bytes.
fn mutated_or_random(valid: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (valid, any_mutations()).prop_map(|(mut bytes, ms)| {
            mutate(&mut bytes, &ms);
            bytes
        }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

/// A stream with read cuts in it.
fn with_cuts(
    bytes: impl Strategy<Value = Vec<u8>>,
) -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    bytes.prop_flat_map(|b| {
        let len = b.len();
        (Just(b), any_cuts(len))
    })
}

/// The `OP_RTMSG` limit: small, so that both complete messages and
/// TOO_LARGE occur in short inputs, or the default.
fn any_limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (0u32..300).prop_map(|max| Limits { max_rtmsg_len: max })
    ]
}

proptest! {
    #![proptest_config(Config { cases: fuzz_cases(), ..Config::default() })]

    #[test]
    fn fuzz_chatd_requests((bytes, cuts) in with_cuts(any_chatd_bytes(true)), limits in any_limits()) {
        let decode = |b| chatd::decode_request(b, &limits);
        for (req, used) in same_however_cut(&bytes, &cuts, decode)? {
            prop_assert_eq!(req.encoded_len(), used.len());
            if !matches!(req, chatd::Request::Hello { .. }) {
                let mut again = Vec::new();
                chatd::encode_request(&req, &mut again);
                prop_assert_eq!(&again[..], used);
            }
            if let chatd::Request::RtMsg { chatid, msgtype, data, .. } = req {
                let mut frame = used.to_vec();
                chatd::rewrite_rtmsg_for_delivery(&mut frame, 11, 12);
                let want = chatd::Event::RtMsg {
                    chatid,
                    sender_userid: 11,
                    sender_clientid: 12,
                    msgtype,
                    data,
                };
                prop_assert_eq!(chatd::decode_event(&frame, &limits), Ok(Some((want, used.len()))));
            }
        }
    }

    #[test]
    fn fuzz_chatd_events((bytes, cuts) in with_cuts(any_chatd_bytes(false)), limits in any_limits()) {
        let decode = |b| chatd::decode_event(b, &limits);
        for (ev, used) in same_however_cut(&bytes, &cuts, decode)? {
            prop_assert_eq!(ev.encoded_len(), used.len());
            let mut again = Vec::new();
            chatd::encode_event(&ev, &mut again);
            prop_assert_eq!(&again[..], used);
        }
    }

    #[test]
    fn fuzz_statusd_requests((bytes, cuts) in with_cuts(any_statusd_bytes(true))) {
        for (req, used) in same_however_cut(&bytes, &cuts, statusd::decode_request)? {
            prop_assert_eq!(req.encoded_len(), used.len());
            if !matches!(req, statusd::Request::Hello { .. }) {
                let mut again = Vec::new();
                statusd::encode_request(&req, &mut again);
                prop_assert_eq!(&again[..], used);
            }
        }
    }

    #[test]
    fn fuzz_statusd_events((bytes, cuts) in with_cuts(any_statusd_bytes(false))) {
        for (ev, used) in same_however_cut(&bytes, &cuts, statusd::decode_event)? {
            prop_assert_eq!(ev.encoded_len(), used.len());
            let mut again = Vec::new();
            statusd::encode_event(&ev, &mut again);
            prop_assert_eq!(&again[..], used);
        }
    }
}
