//! A fuzz run that fits in `cargo test` on stable: many cases of random
//! and mutated input for the frame decoder and the handshake parser (the
//! cargo-fuzz targets in fuzz/ do the same for longer, on nightly). The
//! number of cases is fixed, so a run is repeatable and its length bounded;
//! `CHATD_FUZZ_CASES` raises it for a longer run.
//!
//! What must hold for any input: no panic; the result does not depend on
//! how reads cut the bytes; the decoder never hands over more bytes than
//! it was given.

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::decode::{any_item, build};
use super::read_in_pieces;
use crate::ws::handshake::{parse, OriginPolicy, Parsed};

/// Cases per fuzz test: `CHATD_FUZZ_CASES`, or 2,000.
fn cases() -> u32 {
    std::env::var("CHATD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// A change to a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        match m {
            Mutation::Flip(i, bit) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << (bit % 8);
            }
            Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            _ => {}
        }
    }
}

fn any_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let m = prop_oneof![
        4 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ];
    prop::collection::vec(m, 0..6)
}

/// Client bytes: a valid stream mutated, or random bytes.
fn any_client_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (prop::collection::vec(any_item(300), 1..6), any_mutations()).prop_map(|(items, ms)| {
            let mut bytes = build(&items).bytes;
            apply(&mut bytes, &ms);
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
            apply(&mut bytes, &ms);
            bytes
        }),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(Config { cases: cases(), ..Config::default() })]

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
