//! The frame decoder: each rule of RFC 6455 section 5 with the close status
//! protocol section 8 gives it, the 1009 limit known from headers alone,
//! control frames, payloads compacted in place, and property tests over
//! random messages, fragmentations, masks and cut points.

use bytes::BytesMut;
use proptest::prelude::*;

use super::{client_frame, read_in_pieces, Reader};
use crate::ws::decode::{unmask, unmask_into_place};
use crate::ws::opcode::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use crate::ws::{CloseCode, Decoder, Error};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const MAX: usize = 65_536 + 25;

/// Decodes `wire` in one read; returns the command stream or the error.
fn decode_all(wire: &[u8]) -> Result<Vec<u8>, Error> {
    let r = read_in_pieces(wire, &[], 0, MAX);
    match r.error {
        Some(e) => Err(e),
        None => Ok(r.stream()),
    }
}

fn binary(payload: &[u8]) -> Vec<u8> {
    client_frame(true, BINARY, payload, KEY)
}

#[test]
fn a_masked_binary_frame_becomes_its_payload() {
    assert_eq!(decode_all(&binary(b"\x00hello")), Ok(b"\x00hello".to_vec()));
}

#[test]
fn payloads_of_every_length_encoding_decode() {
    for len in [0, 1, 125, 126, 127, 1000, 0xFFFF, 0x1_0000, MAX] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(decode_all(&binary(&payload)), Ok(payload), "length {len}");
    }
}

#[test]
fn messages_concatenate_and_a_fragmented_message_spans_frames() {
    let mut wire = binary(b"ab");
    wire.extend(client_frame(false, BINARY, b"cd", KEY));
    wire.extend(client_frame(false, CONTINUATION, b"", [1, 2, 3, 4]));
    wire.extend(client_frame(false, CONTINUATION, b"ef", [9, 9, 9, 9]));
    wire.extend(client_frame(true, CONTINUATION, b"g", KEY));
    wire.extend(binary(b"h"));
    assert_eq!(decode_all(&wire), Ok(b"abcdefgh".to_vec()));
}

#[test]
fn control_frames_may_come_between_fragments() {
    let mut wire = client_frame(false, BINARY, b"ab", KEY);
    wire.extend(client_frame(true, PING, b"p1", KEY));
    wire.extend(client_frame(true, PONG, b"unsolicited", KEY));
    wire.extend(client_frame(true, CONTINUATION, b"cd", KEY));
    let r = read_in_pieces(&wire, &[], 0, MAX);
    assert_eq!((r.stream(), r.error), (b"abcd".to_vec(), None));
    assert_eq!(r.pings, vec![b"p1".to_vec()]);
}

#[test]
fn of_several_pings_in_one_read_only_the_last_is_answered() {
    let mut wire = client_frame(true, PING, b"first", KEY);
    wire.extend(client_frame(true, PING, b"", KEY));
    wire.extend(client_frame(true, PING, b"last", KEY));
    let r = read_in_pieces(&wire, &[], 0, MAX);
    assert_eq!(r.pings, vec![b"last".to_vec()]);
    // One read per Ping: each is answered.
    let r = read_in_pieces(&wire, &[11, 17], 0, MAX);
    assert_eq!(r.pings, vec![b"first".to_vec(), vec![], b"last".to_vec()]);
}

#[test]
fn a_ping_of_125_bytes_is_returned_whole() {
    let payload: Vec<u8> = (0..125).collect();
    let r = read_in_pieces(&client_frame(true, PING, &payload, KEY), &[3, 50], 0, MAX);
    assert_eq!(r.pings, vec![payload]);
}

#[test]
fn a_close_is_reported_with_its_status_and_reason_and_ends_the_stream() {
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend_from_slice("going away, ça va".as_bytes());
    let mut wire = binary(b"before");
    wire.extend(client_frame(true, CLOSE, &payload, KEY));
    wire.extend(binary(b"after"));
    let mut r = read_in_pieces(&wire, &[], 0, MAX);
    assert_eq!(r.stream(), b"before");
    let close = r.close.expect("close reported");
    assert_eq!(close.code, Some(CloseCode(1001)));
    assert_eq!(close.reason(), "going away, ça va");
    // Whatever comes later is dropped.
    r.read(&binary(b"later"), 0);
    assert_eq!((r.stream(), r.error), (b"before".to_vec(), None));
}

#[test]
fn a_close_without_payload_has_no_status() {
    let r = read_in_pieces(&client_frame(true, CLOSE, b"", KEY), &[], 0, MAX);
    let close = r.close.expect("close reported");
    assert_eq!((close.code, close.reason()), (None, ""));
}

/// Each framing rule, the error it raises and the status it closes with.
#[test]
fn each_violation_gets_its_error_and_close_status() {
    let unmasked = {
        let mut f = binary(b"x");
        f[1] &= 0x7F;
        f.truncate(2);
        f.push(b'x');
        f
    };
    let mut long_control = client_frame(true, PING, b"", KEY);
    long_control[1] = 0x80 | 126;
    let mut top_bit = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    top_bit.extend_from_slice(&KEY);
    let close_with = |payload: &[u8]| client_frame(true, CLOSE, payload, KEY);
    let mut in_message = client_frame(false, BINARY, b"a", KEY);
    in_message.extend(binary(b"b"));
    let mut text_in_message = client_frame(false, BINARY, b"a", KEY);
    text_in_message.extend(client_frame(true, TEXT, b"b", KEY));
    let cases: Vec<(Vec<u8>, Error, u16)> = vec![
        (client_frame(true, TEXT, b"hi", KEY), Error::Text, 1003),
        (unmasked, Error::Unmasked, 1002),
        (vec![0x80 | 0x40 | BINARY, 0x80], Error::ReservedBits, 1002),
        (vec![0x80 | 0x10 | BINARY, 0x80], Error::ReservedBits, 1002),
        (
            client_frame(true, 0x3, b"", KEY),
            Error::ReservedOpcode(3),
            1002,
        ),
        (
            client_frame(true, 0xB, b"", KEY),
            Error::ReservedOpcode(0xB),
            1002,
        ),
        (
            client_frame(false, PING, b"", KEY),
            Error::FragmentedControl,
            1002,
        ),
        (
            client_frame(false, CLOSE, b"", KEY),
            Error::FragmentedControl,
            1002,
        ),
        (long_control, Error::ControlTooLong, 1002),
        (
            client_frame(true, CONTINUATION, b"a", KEY),
            Error::UnexpectedContinuation,
            1002,
        ),
        (in_message, Error::UnfinishedMessage, 1002),
        (text_in_message, Error::UnfinishedMessage, 1002),
        (top_bit, Error::LengthTopBit, 1002),
        (close_with(&[3]), Error::CloseOneByte, 1002),
        (
            close_with(&999u16.to_be_bytes()),
            Error::InvalidCloseCode(999),
            1002,
        ),
        (
            close_with(&1005u16.to_be_bytes()),
            Error::InvalidCloseCode(1005),
            1002,
        ),
        (
            close_with(&2000u16.to_be_bytes()),
            Error::InvalidCloseCode(2000),
            1002,
        ),
        (
            close_with(&5000u16.to_be_bytes()),
            Error::InvalidCloseCode(5000),
            1002,
        ),
        (
            close_with(b"\x03\xe8\xff\xfe"),
            Error::InvalidCloseReason,
            1007,
        ),
    ];
    for (wire, err, code) in cases {
        assert_eq!(decode_all(&wire), Err(err), "{wire:x?}");
        assert_eq!(err.close_code(), CloseCode(code), "{err}");
    }
}

#[test]
fn close_statuses_the_rfc_allows_are_accepted() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1014, 3000, 4999,
    ] {
        let wire = client_frame(true, CLOSE, &u16::to_be_bytes(code), KEY);
        let r = read_in_pieces(&wire, &[], 0, MAX);
        assert_eq!(r.error, None, "status {code}");
        assert_eq!(r.close.and_then(|c| c.code), Some(CloseCode(code)));
    }
}

#[test]
fn an_error_is_raised_as_soon_as_its_header_bytes_are_in() {
    // The first byte decides reserved bits; the second, the mask.
    let mut d = Decoder::new(MAX);
    let mut buf = BytesMut::from(&[0xC2u8][..]);
    assert_eq!(d.decode(&mut buf, 0), Err(Error::ReservedBits));
    let mut d = Decoder::new(MAX);
    let mut buf = BytesMut::from(&[0x82u8, 0x05][..]);
    assert_eq!(d.decode(&mut buf, 0), Err(Error::Unmasked));
}

#[test]
fn a_message_over_the_limit_is_refused_from_its_header_alone() {
    let max = 1000;
    let wire = client_frame(true, BINARY, &vec![0; max + 1], KEY);
    // Only the header (2 + 2 + 4 bytes): no payload byte has arrived.
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::from(&wire[..8]);
    let err = d.decode(&mut buf, 0).unwrap_err();
    assert_eq!(
        err,
        Error::TooBig {
            len: 1001,
            max: 1000
        }
    );
    assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    // Exactly the limit is fine.
    let ok = client_frame(true, BINARY, &vec![7; max], KEY);
    assert_eq!(read_in_pieces(&ok, &[], 0, max).stream(), vec![7; max]);
}

#[test]
fn the_limit_counts_every_fragment_of_a_message() {
    let max = 100;
    let mut wire = client_frame(false, BINARY, &[1; 60], KEY);
    wire.extend(client_frame(false, CONTINUATION, &[2; 40], KEY));
    let fits = wire.clone();
    wire.extend(client_frame(true, CONTINUATION, &[3; 1], KEY));
    let r = read_in_pieces(&wire, &[], 0, max);
    assert_eq!(r.error, Some(Error::TooBig { len: 101, max: 100 }));
    // What was decoded before the offending frame is still there.
    assert_eq!(r.stream().len(), 100);
    // A new message starts counting from zero.
    let mut wire = fits;
    wire.extend(client_frame(true, CONTINUATION, &[], KEY));
    wire.extend(binary(&[4; 100]));
    let r = read_in_pieces(&wire, &[], 0, max);
    assert_eq!((r.error, r.stream().len()), (None, 200));
}

#[test]
fn a_failed_decoder_repeats_its_error_and_takes_nothing_more() {
    let mut r = Reader::new(MAX);
    r.read(&client_frame(true, TEXT, b"x", KEY), 0);
    assert_eq!(r.error, Some(Error::Text));
    r.read(&binary(b"more"), 0);
    assert_eq!((r.error, r.stream()), (Some(Error::Text), vec![]));
}

#[test]
fn a_lone_frame_payload_is_not_moved_the_buffer_start_advances() {
    let payload: Vec<u8> = (0..60_000u32).map(|i| i as u8).collect();
    let wire = binary(&payload);
    let mut buf = BytesMut::with_capacity(wire.len());
    buf.extend_from_slice(&wire);
    let base = buf.as_ptr() as usize;
    let mut d = Decoder::new(MAX);
    d.decode(&mut buf, 0).expect("valid frame");
    assert_eq!(&buf[..], &payload[..]);
    // 2 + 2 + 4 header bytes skipped in place: same allocation, no copy.
    assert_eq!(buf.as_ptr() as usize, base + 8);
}

#[test]
fn a_short_command_prefix_moves_forward_instead_of_the_payload() {
    // Three bytes of a command were left by the last read; a large frame
    // follows. The three bytes move, the payload stays where it was read.
    let payload = vec![0xAB; 4000];
    let wire = binary(&payload);
    let mut buf = BytesMut::with_capacity(3 + wire.len());
    buf.extend_from_slice(b"\x07\x08\x09");
    buf.extend_from_slice(&wire);
    let payload_at = buf.as_ptr() as usize + 3 + 8;
    let mut d = Decoder::new(MAX);
    d.decode(&mut buf, 3).expect("valid frame");
    assert_eq!(&buf[..3], b"\x07\x08\x09");
    assert_eq!(&buf[3..], &payload[..]);
    assert_eq!(buf.as_ptr() as usize + 3, payload_at);
}

#[test]
fn unmask_matches_the_rfc_at_every_phase_and_length() {
    let key = [0xde, 0xad, 0xbe, 0xef];
    for phase in 0..4 {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut got = data.clone();
            unmask(&mut got, key, phase);
            let want: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[(i + phase) % 4])
                .collect();
            assert_eq!(got, want, "phase {phase} len {len}");
        }
    }
}

#[test]
fn a_payload_lands_after_the_command_bytes_unmasked_whatever_the_gap() {
    let key = [0x11, 0x22, 0x44, 0x88];
    for plain in [0, 1, 5, 8, 30] {
        for gap in 0..12 {
            for len in [0, 1, 7, 8, 9, 20, 33] {
                for phase in 0..4 {
                    let front: Vec<u8> = (0..plain as u8).map(|i| 200 - i).collect();
                    let payload: Vec<u8> = (0..len as u8).collect();
                    let mut buf = BytesMut::from(&front[..]);
                    buf.extend_from_slice(&vec![0xEE; gap]);
                    buf.extend(
                        payload
                            .iter()
                            .enumerate()
                            .map(|(i, b)| b ^ key[(i + phase) % 4]),
                    );
                    buf.extend_from_slice(b"rest");
                    let (w, r) = unmask_into_place(&mut buf, plain, plain + gap, len, key, phase);
                    let mut want = front.clone();
                    want.extend_from_slice(&payload);
                    assert_eq!(w, plain + len);
                    assert_eq!(
                        &buf[..w],
                        &want[..],
                        "plain {plain} gap {gap} len {len} phase {phase}"
                    );
                    assert_eq!(&buf[r..], b"rest");
                }
            }
        }
    }
}

/// Something a client sends: a message cut into fragments, or a control
/// frame between messages or fragments.
#[derive(Clone, Debug)]
pub(super) enum Item {
    /// A binary message: its payload, where it is cut into frames, and each
    /// frame's mask key; `pings` holds a Ping payload to send after frame i.
    Message {
        payload: Vec<u8>,
        cuts: Vec<prop::sample::Index>,
        keys: Vec<[u8; 4]>,
        pings: Vec<Option<Vec<u8>>>,
    },
    Ping(Vec<u8>, [u8; 4]),
    Pong(Vec<u8>, [u8; 4]),
}

pub(super) fn any_item(max_payload: usize) -> impl Strategy<Value = Item> {
    let control = prop::collection::vec(any::<u8>(), 0..=125);
    prop_oneof![
        4 => (
            // Mostly short; sometimes up to the most asked for.
            (prop_oneof![3 => 0..=max_payload.min(300), 1 => 0..=max_payload], any::<u64>())
                .prop_map(|(len, seed)| noise(len, seed)),
            prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            prop::collection::vec(any::<[u8; 4]>(), 5),
            prop::collection::vec(prop::option::weighted(0.2, control.clone()), 5),
        )
            .prop_map(|(payload, cuts, keys, pings)| Item::Message { payload, cuts, keys, pings }),
        1 => (control.clone(), any::<[u8; 4]>()).prop_map(|(p, k)| Item::Ping(p, k)),
        1 => (control, any::<[u8; 4]>()).prop_map(|(p, k)| Item::Pong(p, k)),
    ]
}

/// `len` pseudo-random bytes (xorshift from `seed`): cheap where a
/// strategy per byte is slow for payloads of tens of kilobytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A client's bytes for `items`: the wire, the command stream it carries,
/// the Pings in order, and for each wire byte whether it is payload.
pub(super) struct Wire {
    pub(super) bytes: Vec<u8>,
    stream: Vec<u8>,
    pings: Vec<Vec<u8>>,
    is_payload: Vec<bool>,
}

pub(super) fn build(items: &[Item]) -> Wire {
    let mut w = Wire {
        bytes: Vec::new(),
        stream: Vec::new(),
        pings: Vec::new(),
        is_payload: Vec::new(),
    };
    let push = |w: &mut Wire, fin: bool, op: u8, payload: &[u8], key: [u8; 4]| {
        let f = client_frame(fin, op, payload, key);
        let head = f.len() - payload.len();
        let data = op == BINARY || op == CONTINUATION;
        w.is_payload.extend((0..f.len()).map(|i| data && i >= head));
        w.bytes.extend(f);
        if data {
            w.stream.extend_from_slice(payload);
        } else if op == PING {
            w.pings.push(payload.to_vec());
        }
    };
    for item in items {
        match item {
            Item::Message {
                payload,
                cuts,
                keys,
                pings,
            } => {
                let mut ends: Vec<usize> =
                    cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
                ends.sort_unstable();
                ends.push(payload.len());
                let mut at = 0;
                for (i, &end) in ends.iter().enumerate() {
                    let op = if i == 0 { BINARY } else { CONTINUATION };
                    let fin = i + 1 == ends.len();
                    push(&mut w, fin, op, &payload[at..end], keys[i]);
                    if let (false, Some(p)) = (fin, &pings[i]) {
                        push(&mut w, true, PING, p, keys[i]);
                    }
                    at = end;
                }
            }
            Item::Ping(p, k) => push(&mut w, true, PING, p, *k),
            Item::Pong(p, k) => push(&mut w, true, PONG, p, *k),
        }
    }
    w
}

/// The Pings a reader reported must be Pings that were sent, in order,
/// ending with the last one sent (only the last of each read is kept).
fn assert_pings_answered(reported: &[Vec<u8>], sent: &[Vec<u8>]) {
    assert_eq!(reported.last(), sent.last());
    let mut sent = sent.iter();
    for p in reported {
        assert!(sent.any(|s| s == p), "ping {p:?} reported out of order");
    }
}

proptest! {
    #[test]
    fn any_stream_cut_at_any_single_point_decodes_the_same(
        items in prop::collection::vec(any_item(40), 1..6),
        keep in 0usize..6,
    ) {
        let w = build(&items);
        for cut in 0..=w.bytes.len() {
            let r = read_in_pieces(&w.bytes, &[cut], keep, MAX);
            prop_assert_eq!(r.error, None);
            prop_assert_eq!(r.stream(), w.stream.clone(), "cut at {}", cut);
            assert_pings_answered(&r.pings, &w.pings);
        }
    }

    #[test]
    fn any_stream_in_random_reads_hands_over_each_payload_byte_as_it_arrives(
        items in prop::collection::vec(any_item(70_000), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        keep in 0usize..40,
    ) {
        let w = build(&items);
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(w.bytes.len() + 1)).collect();
        ends.sort_unstable();
        ends.push(w.bytes.len());
        // arrived[i]: payload bytes among the first i wire bytes.
        let arrived: Vec<usize> = std::iter::once(0)
            .chain(w.is_payload.iter().scan(0, |n, &p| {
                *n += usize::from(p);
                Some(*n)
            }))
            .collect();
        let mut r = Reader::new(1 << 20);
        let mut at = 0;
        for end in ends {
            r.read(&w.bytes[at..end], keep);
            at = end;
            prop_assert_eq!(r.taken.len() + r.buf.len(), arrived[at]);
        }
        prop_assert_eq!(r.error, None);
        prop_assert_eq!(r.stream(), w.stream);
        assert_pings_answered(&r.pings, &w.pings);
    }

    #[test]
    fn random_bytes_never_panic_and_decode_the_same_however_cut(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        cut in any::<prop::sample::Index>(),
        max in 0usize..300,
    ) {
        let whole = read_in_pieces(&bytes, &[], 0, max);
        let split = read_in_pieces(&bytes, &[cut.index(bytes.len() + 1)], 3, max);
        prop_assert_eq!(whole.error, split.error);
        prop_assert_eq!(whole.close, split.close);
        prop_assert_eq!(whole.stream(), split.stream());
        prop_assert!(whole.stream().len() <= bytes.len());
    }
}
