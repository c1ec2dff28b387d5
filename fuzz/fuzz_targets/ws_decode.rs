//! The WebSocket frame decoder gives the same command stream, the same
//! Close and the same error whether the client's bytes arrive whole or in
//! reads cut at fuzzer-chosen points, with the command decoder leaving a
//! fuzzer-chosen number of bytes behind after each read (as a command not
//! yet complete does); and it never panics.
#![no_main]

use bytes::BytesMut;
use chatd::ws::{Close, Decoder, Error};
use libfuzzer_sys::fuzz_target;

/// The command stream, the Close and the error after reading `wire` in
/// reads ending at each of `ends`, keeping `keep` bytes back each time.
fn read(wire: &[u8], ends: &[usize], keep: usize, max: usize) -> (Vec<u8>, Option<Close>, Option<Error>) {
    let mut dec = Decoder::new(max);
    let mut buf = BytesMut::new();
    let (mut taken, mut close, mut error) = (Vec::new(), None, None);
    let mut at = 0;
    for &end in ends.iter().chain([&wire.len()]) {
        let end = end.clamp(at, wire.len());
        let start = buf.len();
        buf.extend_from_slice(&wire[at..end]);
        at = end;
        match dec.decode(&mut buf, start) {
            Ok(inbound) => close = close.or(inbound.close),
            Err(e) => error = Some(e),
        }
        let take = buf.len().saturating_sub(keep);
        taken.extend_from_slice(&buf.split_to(take));
    }
    taken.extend_from_slice(&buf);
    (taken, close, error)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b, c, keep, max], wire)) = data.split_first_chunk::<5>() else {
        return;
    };
    let cut = |x: u8| usize::from(x) * wire.len() / 255;
    let mut ends = [cut(a), cut(b), cut(c)];
    ends.sort_unstable();
    let max = usize::from(max) * 8;
    let whole = read(wire, &[], 0, max);
    assert!(whole.0.len() <= wire.len());
    assert_eq!(whole, read(wire, &ends, usize::from(keep % 16), max));
});
