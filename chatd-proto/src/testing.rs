//! Test support for fuzzing parsers on the stable toolchain (feature
//! `testing`, and this crate's own tests): proptest strategies that mutate
//! a valid byte string the way a fuzzer would, and the case count of a
//! bounded fuzz run. `cargo test` runs such a test as a fixed number of
//! cases, so a run is repeatable and its time bounded; the cargo-fuzz
//! targets in `fuzz/` do the same open-ended, on nightly.

use proptest::prelude::*;

/// Cases per fuzz test: `CHATD_FUZZ_CASES`, or 2,000 (what a `cargo test`
/// run affords; CI runs more, see `.ci/run`).
pub fn fuzz_cases() -> u32 {
    std::env::var("CHATD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// One change to a byte string.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flips bit `.1 % 8` of a byte.
    Flip(prop::sample::Index, u8),
    /// Inserts a byte.
    Insert(prop::sample::Index, u8),
    /// Removes a byte.
    Remove(prop::sample::Index),
    /// Cuts the string short.
    Truncate(prop::sample::Index),
    /// Overwrites a byte with an "interesting" value (0, 1, 0x7f, 0x80, 0xff).
    Extreme(prop::sample::Index, u8),
}

/// Applies `mutations` to `bytes`, in order.
pub fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
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
            Mutation::Extreme(i, which) if !bytes.is_empty() => {
                const VALUES: [u8; 5] = [0, 1, 0x7f, 0x80, 0xff];
                let i = i.index(bytes.len());
                bytes[i] = VALUES[usize::from(*which) % VALUES.len()];
            }
            _ => {}
        }
    }
}

/// Up to five mutations, mostly bit flips.
pub fn any_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let index = any::<prop::sample::Index>;
    let m = prop_oneof![
        4 => (index(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (index(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => index().prop_map(Mutation::Remove),
        1 => index().prop_map(Mutation::Truncate),
        2 => (index(), any::<u8>()).prop_map(|(i, b)| Mutation::Extreme(i, b)),
    ];
    prop::collection::vec(m, 0..6)
}

/// Sorted cut points for reads of a `len`-byte stream.
pub fn any_cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..6).prop_map(move |ends| {
        let mut cuts: Vec<usize> = ends.iter().map(|i| i.index(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    })
}
