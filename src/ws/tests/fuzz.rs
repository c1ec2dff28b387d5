//! A fuzz run that fits in `cargo test` on stable: many cases of random
//! and mutated input for the frame decoder and the handshake parser (the
//! cargo-fuzz targets in fuzz/ do the same for longer, on nightly). The
//! number of cases is fixed, so a run is repeatable and its length bounded;
//! `CHATD_FUZZ_CASES` raises it for a longer run. The mutations are
//! `chatd_proto::testing`'s, shared with the codec's own fuzz run.
//!
//! What must hold for any input: no panic; the result does not depend on
//! how reads cut the bytes; the decoder never hands over more bytes than
//! it was given.

use chatd_proto::testing::{any_mutations, fuzz_cases, mutate};
use proptest::prelude::*;
use proptest::test_runner::Config;

use super::decode::{any_item, build};
use super::read_in_pieces;
use crate::ws::handshake::{parse, OriginPolicy, Parsed};

/// Client bytes: a valid stream mutated, or random bytes.
fn any_client_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (prop::collection::vec(any_item(300), 1..6), any_mutations()).prop_map(|(items, ms)| {
            let mut bytes = build(&items).bytes;
            mutate(&mut bytes, &ms);
            bytes
        }),
        1 => prop::collection::vec(any::<u8>(), 0..400),
    ]
}

/// A handshake: a browser's request mutated, or random bytes.
fn any_request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let base = b"GET /chatd?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n\r\n\x82\x80";
    prop_oneof![
        3 => any_mutations().prop_map(move |ms| {
            let mut bytes = base.to_vec();
            mutate(&mut bytes, &ms);
            bytes
        }),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(Config { cases: fuzz_cases(), ..Config::default() })]

    #[test]
    fn fuzz_frame_decoder(
        bytes in any_client_bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        keep in 0usize..8,
        max in prop_oneof![Just(65_561usize), 0usize..400],
    ) {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        ends.sort_unstable();
        let whole = read_in_pieces(&bytes, &[], 0, max);
        let split = read_in_pieces(&bytes, &ends, keep, max);
        prop_assert_eq!(whole.error, split.error);
        prop_assert_eq!(whole.close, split.close);
        prop_assert_eq!(whole.stream(), split.stream());
        prop_assert!(whole.stream().len() <= bytes.len());
        prop_assert!(whole.error.is_none() || whole.close.is_none());
    }

    #[test]
    fn fuzz_handshake_parser(
        bytes in any_request_bytes(),
        cut in any::<prop::sample::Index>(),
        only in any::<bool>(),
    ) {
        let policy = if only {
            OriginPolicy::parse("https://a.example")
        } else {
            OriginPolicy::Any
        };
        let whole = parse(&bytes, &policy);
        let prefix = parse(&bytes[..cut.index(bytes.len() + 1)], &policy);
        // An answer given on a prefix never changes with more bytes.
        if prefix != Parsed::Incomplete {
            prop_assert_eq!(&prefix, &whole);
        }
        if let Parsed::Upgrade { used, .. } = whole {
            prop_assert!(used <= bytes.len());
        }
    }
}
