//! WebSocket tests: the handshake parser and its answers, the frame decoder
//! (every rule and its close status, streams cut at every point, payloads
//! handed over as soon as they arrive and without copies), the encoders,
//! an independent implementation (tungstenite, client role, in memory)
//! talking to both, and a bounded fuzz run over random and mutated input.

mod decode;
mod encode;
mod fuzz;
mod handshake;
mod interop;

use bytes::BytesMut;

use super::{Close, Decoder, Error};

/// One client frame as a client sends it: masked with `key`.
fn client_frame(fin: bool, op: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | op];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A connection's inbound side as the driver runs it: each read appends
/// to one buffer, the decoder turns it into command bytes, and the command
/// decoder then takes all of them but the last `keep` (a command not yet
/// complete stays in the buffer for the next read).
struct Reader {
    dec: Decoder,
    buf: BytesMut,
    /// Every command byte the command decoder took, in order.
    taken: Vec<u8>,
    /// The Ping payloads reported, in order.
    pings: Vec<Vec<u8>>,
    close: Option<Close>,
    error: Option<Error>,
}

impl Reader {
    fn new(max_message_len: usize) -> Reader {
        Reader {
            dec: Decoder::new(max_message_len),
            buf: BytesMut::new(),
            taken: Vec::new(),
            pings: Vec::new(),
            close: None,
            error: None,
        }
    }

    /// One read of `bytes`, then the command decoder's turn.
    fn read(&mut self, bytes: &[u8], keep: usize) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        match self.dec.decode(&mut self.buf, start) {
            Ok(inbound) => {
                if let Some(p) = inbound.ping {
                    self.pings.push(p.as_slice().to_vec());
                }
                if let Some(c) = inbound.close {
                    assert!(self.close.is_none(), "a second Close was reported");
                    self.close = Some(c);
                }
            }
            Err(e) => {
                assert!(
                    self.error.is_none_or(|old| old == e),
                    "a failed decoder changed its error"
                );
                self.error = Some(e);
            }
        }
        let take = self.buf.len().saturating_sub(keep);
        self.taken.extend_from_slice(&self.buf.split_to(take));
    }

    /// The whole command stream: what was taken and what is still kept.
    fn stream(&self) -> Vec<u8> {
        let mut s = self.taken.clone();
        s.extend_from_slice(&self.buf);
        s
    }
}

/// Decodes `wire` in reads ending at each of `ends` (sorted, clamped) and
/// then at its end, keeping `keep` command bytes back after each read.
fn read_in_pieces(wire: &[u8], ends: &[usize], keep: usize, max: usize) -> Reader {
    let mut r = Reader::new(max);
    let mut at = 0;
    for &end in ends.iter().chain([&wire.len()]) {
        let end = end.clamp(at, wire.len());
        r.read(&wire[at..end], keep);
        at = end;
    }
    r
}
