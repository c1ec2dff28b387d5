// The codec: layouts byte for byte, round trips of every command in both
// directions, strict decoding, and the stream decoder at every split point.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encode,
  decode,
  decodeMessage,
  StreamDecoder,
  ProtocolError,
  CHATD,
  STATUSD,
  C2S,
  S2C,
  ERR,
  errorCloses,
  errorName,
  MAX_TOKEN_LEN,
  MAX_MSGLEN,
} from '../src/codec.js';

const U64_MAX = (1n << 64n) - 1n;
const bytes = (...b) => Uint8Array.from(b);

test('OP_JOIN is the opcode and a little-endian u64', () => {
  assert.deepEqual(encode(CHATD, C2S, { op: 'join', chatid: 0x0102030405060708n }), bytes(1, 8, 7, 6, 5, 4, 3, 2, 1));
});

test('OP_AUTH carries a little-endian u16 length and the UTF-8 token', () => {
  assert.deepEqual(encode(CHATD, C2S, { op: 'auth', token: 'aé' }), bytes(6, 3, 0, 0x61, 0xc3, 0xa9));
});

test('OP_HELLO of each service has its own layout', () => {
  assert.deepEqual(encode(CHATD, C2S, { op: 'hello', version: 1 }), bytes(3, 1, 0, 0, 0));
  assert.deepEqual(encode(STATUSD, C2S, { op: 'hello', version: 1, presence: 0x83 }), bytes(1, 1, 0, 0x83, 0));
  assert.deepEqual(encode(STATUSD, C2S, { op: 'setpres', presence: 2 }), bytes(2, 2));
});

test('OP_RTMSG has a 25-byte header with a 24-bit little-endian msglen', () => {
  const data = new Uint8Array(0x011170).fill(0xab);
  const out = encode(CHATD, C2S, { op: 'rtmsg', chatid: 7n, userid: 2n, clientid: 0x01020304, msgtype: 9, data });
  assert.equal(out.length, 25 + data.length);
  assert.deepEqual(out.subarray(0, 25), bytes(4, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 9, 0x70, 0x11, 0x01));
  assert.equal(out[25], 0xab);
});

test('u64 ids above 2^53 survive a round trip exactly', () => {
  for (const id of [1n, 2n ** 53n + 1n, U64_MAX]) {
    const { cmd } = decode(CHATD, S2C, encode(CHATD, S2C, { op: 'join', chatid: id }));
    assert.equal(cmd.chatid, id);
  }
});

// One example of every command of every service and direction.
const EXAMPLES = {
  [CHATD]: {
    [C2S]: [
      { op: 'keepalive' },
      { op: 'join', chatid: 7n },
      { op: 'leave', chatid: U64_MAX },
      { op: 'hello', version: 1, reserved: 0 },
      { op: 'rtmsg', chatid: 7n, userid: 2n, clientid: 9, msgtype: 255, data: bytes(1, 2, 3) },
      { op: 'in_call', chatid: 7n, status: 1 },
      { op: 'auth', token: 'x'.repeat(MAX_TOKEN_LEN) },
    ],
    [S2C]: [
      { op: 'keepalive' },
      { op: 'join', chatid: 7n },
      { op: 'leave', chatid: 7n },
      { op: 'hello', clientid: 0xffffffff },
      { op: 'rtmsg', chatid: 7n, userid: 1n, clientid: 3, msgtype: 0, data: bytes() },
      { op: 'in_call', chatid: 7n, status: 0 },
      { op: 'error', code: ERR.NOT_MEMBER, opcode: 1, id: 7n },
    ],
  },
  [STATUSD]: {
    [C2S]: [
      { op: 'keepalive' },
      { op: 'hello', version: 1, presence: 0x82, reserved: 0 },
      { op: 'setpres', presence: 3 },
      { op: 'auth', token: 't' },
    ],
    [S2C]: [
      { op: 'keepalive' },
      { op: 'pres', userid: 0n, presence: 3 },
      { op: 'pres', userid: U64_MAX, presence: 127 },
      { op: 'error', code: ERR.SHUTTING_DOWN, opcode: 0, id: 0n },
    ],
  },
};

for (const [service, dirs] of Object.entries(EXAMPLES)) {
  for (const [dir, cmds] of Object.entries(dirs)) {
    test(`${service} ${dir}: every command decodes to what was encoded`, () => {
      for (const cmd of cmds) {
        const wire = encode(service, dir, cmd);
        const r = decode(service, dir, wire);
        assert.deepEqual(r, { cmd, used: wire.length });
      }
    });

    test(`${service} ${dir}: every proper prefix of a command needs more bytes`, () => {
      for (const cmd of cmds) {
        const wire = encode(service, dir, cmd);
        for (let n = 0; n < wire.length; n++) assert.equal(decode(service, dir, wire.subarray(0, n)), null, `${cmd.op} cut at ${n}`);
      }
    });

    test(`${service} ${dir}: the stream decoder gives the same commands at every split point`, () => {
      const wire = concat(cmds.map((c) => encode(service, dir, c)));
      for (let split = 0; split <= wire.length; split++) {
        const d = new StreamDecoder(service, dir);
        const got = [...d.push(wire.subarray(0, split)), ...d.push(wire.subarray(split))];
        assert.deepEqual(got, cmds, `split at ${split}`);
        assert.equal(d.pending.length, 0);
      }
    });

    test(`${service} ${dir}: a message of several whole commands decodes to all of them`, () => {
      const wire = concat(cmds.map((c) => encode(service, dir, c)));
      assert.deepEqual(decodeMessage(service, dir, wire), cmds);
    });
  }
}

test('the stream decoder fed one byte at a time yields each command when its last byte comes', () => {
  const cmds = EXAMPLES[CHATD][S2C];
  const wire = concat(cmds.map((c) => encode(CHATD, S2C, c)));
  const d = new StreamDecoder(CHATD, S2C);
  const got = [];
  for (let i = 0; i < wire.length; i++) got.push(...d.push(wire.subarray(i, i + 1)));
  assert.deepEqual(got, cmds);
});

test('decoded payloads are copies: reusing the input buffer does not change them', () => {
  const wire = encode(CHATD, S2C, { op: 'rtmsg', chatid: 7n, userid: 1n, clientid: 1, msgtype: 1, data: bytes(5, 6) });
  const { cmd } = decode(CHATD, S2C, wire);
  wire.fill(0);
  assert.deepEqual(cmd.data, bytes(5, 6));
});

test('an unknown opcode is a protocol error at its first byte', () => {
  // 0x04 is OP_RTMSG on chatd but unknown on statusd; 0x08 is nobody's.
  assert.throws(() => decode(STATUSD, S2C, bytes(4)), ProtocolError);
  assert.throws(() => decode(CHATD, S2C, bytes(8)), ProtocolError);
  // The client never receives client-to-server commands.
  assert.throws(() => decode(CHATD, S2C, bytes(6, 1, 0, 0x61)), ProtocolError);
  const d = new StreamDecoder(CHATD, S2C);
  assert.throws(() => d.push(bytes(0, 0, 0x42)), ProtocolError);
});

test('an OP_IN_CALL status other than 0 or 1 is a protocol error', () => {
  const wire = encode(CHATD, S2C, { op: 'in_call', chatid: 7n, status: 1 });
  wire[9] = 2;
  assert.throws(() => decode(CHATD, S2C, wire), /not 0 or 1/);
});

test('a message that ends inside a command, or is empty, is a protocol error', () => {
  const wire = encode(CHATD, S2C, { op: 'join', chatid: 7n });
  const two = concat([wire, wire.subarray(0, 4)]);
  assert.throws(() => decodeMessage(CHATD, S2C, two), /ends inside a command/);
  assert.throws(() => decodeMessage(CHATD, S2C, bytes()), /empty/);
});

test('a token length of 0 or above 4096 is refused on both sides', () => {
  assert.throws(() => encode(CHATD, C2S, { op: 'auth', token: '' }), RangeError);
  assert.throws(() => encode(CHATD, C2S, { op: 'auth', token: 'x'.repeat(MAX_TOKEN_LEN + 1) }), RangeError);
  assert.throws(() => decode(CHATD, C2S, bytes(6, 0, 0)), ProtocolError);
  assert.throws(() => decode(CHATD, C2S, bytes(6, 0x01, 0x10)), ProtocolError);
});

test('values out of their field range are refused before encoding', () => {
  assert.throws(() => encode(CHATD, C2S, { op: 'join', chatid: U64_MAX + 1n }), RangeError);
  assert.throws(() => encode(CHATD, C2S, { op: 'join', chatid: 7 }), RangeError, 'a number is not a BigInt');
  assert.throws(() => encode(CHATD, C2S, { op: 'in_call', chatid: 7n, status: 2 }), RangeError);
  assert.throws(() => encode(STATUSD, C2S, { op: 'setpres', presence: 256 }), RangeError);
  assert.throws(() => encode(CHATD, C2S, { op: 'rtmsg', chatid: 7n, data: new Uint8Array(MAX_MSGLEN + 1) }), RangeError);
  assert.throws(() => encode(CHATD, C2S, { op: 'pres' }), TypeError);
});

test('error codes: names, and which ones close the connection', () => {
  assert.equal(errorName(ERR.NOT_MEMBER), 'NOT_MEMBER');
  assert.equal(errorName(200), 'UNKNOWN_200');
  for (const open of [ERR.NOT_MEMBER, ERR.NOT_JOINED, ERR.BAD_ADDRESS, ERR.TOO_MANY_ROOMS, ERR.RATE_LIMITED]) {
    assert.equal(errorCloses(open), false, errorName(open));
  }
  for (const closed of [1, 2, 3, 6, 8, 9, 10, 11, 200]) assert.equal(errorCloses(closed), true, errorName(closed));
});

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
