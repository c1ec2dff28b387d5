//! A stream decodes to the same commands, and stops with the same error,
//! whether it arrives whole or in two reads split at a fuzzer-chosen point:
//! what a connection reader sees must not depend on how TCP cut the bytes.
#![no_main]

use chatd_proto::chatd::{decode_event, decode_request};
use chatd_proto::{DecodeError, Limits};
use libfuzzer_sys::fuzz_target;

type Decoded<T> = Result<Option<(T, usize)>, DecodeError>;

/// Decodes `stream` as a reader would when its bytes arrive in reads ending
/// at each of `ends` and then at the end. Returns the commands, the error
/// that stopped decoding (if any) and how many bytes were consumed.
fn decode_reads<'a, T>(
    stream: &'a [u8],
    ends: &[usize],
    decode: impl Fn(&'a [u8]) -> Decoded<T>,
) -> (Vec<T>, Option<DecodeError>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in ends.iter().chain([&stream.len()]) {
        let end = end.clamp(start, stream.len());
        loop {
            match decode(&stream[start..end]) {
                Ok(Some((cmd, used))) => {
                    assert!(used > 0 && used <= end - start);
                    out.push(cmd);
                    start += used;
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e), start),
            }
        }
    }
    (out, None, start)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b, limit], stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let cut = usize::from(u16::from_le_bytes([a, b])) % (stream.len() + 1);
    let limits = Limits {
        max_rtmsg_len: u32::from(limit) * 4,
    };

    let whole = decode_reads(stream, &[], |s| decode_request(s, &limits));
    let split = decode_reads(stream, &[cut], |s| decode_request(s, &limits));
    assert_eq!(whole, split);

    let whole = decode_reads(stream, &[], |s| decode_event(s, &limits));
    let split = decode_reads(stream, &[cut], |s| decode_event(s, &limits));
    assert_eq!(whole, split);
});
