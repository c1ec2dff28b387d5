// The wire codec of both services (protocol sections 1-5), sans-IO.
//
// It owns the byte layouts and nothing else: no sockets, no clock, no state
// between calls except the StreamDecoder's unread bytes. One table of
// layouts (LAYOUTS) drives every encoder and decoder, in both directions,
// so each command is described once: the client encodes client-to-server
// commands and decodes server-to-client ones; the in-memory test server
// does the opposite with the same code.
//
// Ids: `userid` and `chatid` are u64 and travel as BigInt inside the codec
// (decoded commands hold BigInt; encoders take BigInt). The public client
// API converts them to decimal strings (ids.js). `clientid` is u32 and a
// plain number.
//
// Decoding has three outcomes, as in the server's codec: a whole command
// and the bytes it used; `null` ("need more bytes", the normal state of a
// stream reader); or a thrown ProtocolError (the bytes can never become a
// valid command: unknown opcode, a field value the layout forbids).

/** Protocol version this client speaks (OP_HELLO). */
export const PROTOCOL_VERSION = 1;

/** The two services. */
export const CHATD = 'chatd';
export const STATUSD = 'statusd';

/** Directions of a command. */
export const C2S = 'c2s';
export const S2C = 's2c';

/** Opcodes of chatd (section 4) and the shared ones (section 3). */
export const OP = Object.freeze({
  KEEPALIVE: 0x00,
  JOIN: 0x01,
  LEAVE: 0x02,
  HELLO: 0x03,
  RTMSG: 0x04,
  IN_CALL: 0x05,
  AUTH: 0x06,
  ERROR: 0x07,
});

/** Opcodes of statusd (section 5) and the shared ones. */
export const SOP = Object.freeze({
  KEEPALIVE: 0x00,
  HELLO: 0x01,
  SETPRES: 0x02,
  PRES: 0x03,
  AUTH: 0x06,
  ERROR: 0x07,
});

/** OP_ERROR codes (section 3, and chatd's extensions 11-13). */
export const ERR = Object.freeze({
  BAD_COMMAND: 1,
  AUTH_FAILED: 2,
  NOT_AUTHENTICATED: 3,
  NOT_MEMBER: 4,
  NOT_JOINED: 5,
  TOO_LARGE: 6,
  BAD_ADDRESS: 7,
  SLOW_CONSUMER: 8,
  BAD_VERSION: 9,
  SHUTTING_DOWN: 10,
  TOO_MANY_CONNECTIONS: 11,
  TOO_MANY_ROOMS: 12,
  RATE_LIMITED: 13,
});

const ERR_NAMES = new Map(Object.entries(ERR).map(([k, v]) => [v, k]));

/** The name of an error code, or `UNKNOWN_<code>`. */
export function errorName(code) {
  return ERR_NAMES.get(code) ?? `UNKNOWN_${code}`;
}

/**
 * Error codes after which the server keeps the connection open. Every other
 * code, including one this client does not know, closes it (the project's
 * protocol.md: "treat a code it does not know as closing").
 */
const OPEN_AFTER = new Set([
  ERR.NOT_MEMBER,
  ERR.NOT_JOINED,
  ERR.BAD_ADDRESS,
  ERR.TOO_MANY_ROOMS,
  ERR.RATE_LIMITED,
]);

/** Whether the server closes the connection after this OP_ERROR code. */
export function errorCloses(code) {
  return !OPEN_AFTER.has(code);
}

/** Largest token OP_AUTH may carry (section 2). */
export const MAX_TOKEN_LEN = 4096;
/** Largest msglen the 3-byte field can hold; the server's limit may be lower. */
export const MAX_MSGLEN = 0xffffff;
/** Bytes of an OP_RTMSG before its msgdata. */
export const RTMSG_HEADER_LEN = 25;

/** The bytes can never become a valid command. */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

// Field kinds: fixed-size little-endian integers, and two variable parts
// preceded by their length: `str16` (token_len(2) + UTF-8 token) and
// `bytes24` (msglen(3) + msgdata). `bit` is a u8 that must be 0 or 1
// (OP_IN_CALL status: any other value is BAD_COMMAND on the server, so a
// strict client refuses it too).
const SIZE = { u8: 1, bit: 1, u16: 2, u32: 4, u64: 8 };

// LAYOUTS[service][direction][opcode] = { name, fields: [[field, kind]...] }
const ID = (f) => [f, 'u64'];
const LAYOUTS = {
  [CHATD]: {
    [C2S]: {
      [OP.KEEPALIVE]: { name: 'keepalive', fields: [] },
      [OP.JOIN]: { name: 'join', fields: [ID('chatid')] },
      [OP.LEAVE]: { name: 'leave', fields: [ID('chatid')] },
      [OP.HELLO]: { name: 'hello', fields: [['version', 'u16'], ['reserved', 'u16']] },
      [OP.RTMSG]: {
        name: 'rtmsg',
        fields: [ID('chatid'), ID('userid'), ['clientid', 'u32'], ['msgtype', 'u8'], ['data', 'bytes24']],
      },
      [OP.IN_CALL]: { name: 'in_call', fields: [ID('chatid'), ['status', 'bit']] },
      [OP.AUTH]: { name: 'auth', fields: [['token', 'str16']] },
    },
    [S2C]: {
      [OP.KEEPALIVE]: { name: 'keepalive', fields: [] },
      [OP.JOIN]: { name: 'join', fields: [ID('chatid')] },
      [OP.LEAVE]: { name: 'leave', fields: [ID('chatid')] },
      [OP.HELLO]: { name: 'hello', fields: [['clientid', 'u32']] },
      [OP.RTMSG]: {
        name: 'rtmsg',
        fields: [ID('chatid'), ID('userid'), ['clientid', 'u32'], ['msgtype', 'u8'], ['data', 'bytes24']],
      },
      [OP.IN_CALL]: { name: 'in_call', fields: [ID('chatid'), ['status', 'bit']] },
      [OP.ERROR]: { name: 'error', fields: [['code', 'u8'], ['opcode', 'u8'], ID('id')] },
    },
  },
  [STATUSD]: {
    [C2S]: {
      [SOP.KEEPALIVE]: { name: 'keepalive', fields: [] },
      [SOP.HELLO]: {
        name: 'hello',
        fields: [['version', 'u16'], ['presence', 'u8'], ['reserved', 'u8']],
      },
      [SOP.SETPRES]: { name: 'setpres', fields: [['presence', 'u8']] },
      [SOP.AUTH]: { name: 'auth', fields: [['token', 'str16']] },
    },
    [S2C]: {
      [SOP.KEEPALIVE]: { name: 'keepalive', fields: [] },
      [SOP.PRES]: { name: 'pres', fields: [ID('userid'), ['presence', 'u8']] },
      [SOP.ERROR]: { name: 'error', fields: [['code', 'u8'], ['opcode', 'u8'], ID('id')] },
    },
  },
};

// name -> opcode, per service and direction, for the encoders.
const OPCODES = {};
for (const [service, dirs] of Object.entries(LAYOUTS)) {
  OPCODES[service] = {};
  for (const [dir, ops] of Object.entries(dirs)) {
    OPCODES[service][dir] = new Map(Object.entries(ops).map(([op, l]) => [l.name, Number(op)]));
  }
}

function layoutsOf(service, dir) {
  const l = LAYOUTS[service]?.[dir];
  if (!l) throw new TypeError(`unknown service/direction ${service}/${dir}`);
  return l;
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** Bytes of a value given as Uint8Array, ArrayBuffer, a view, or a string (UTF-8). */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (typeof data === 'string') return utf8Encoder.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('data must be a string, Uint8Array, ArrayBuffer or ArrayBufferView');
}

/** The UTF-8 text of bytes (invalid sequences become U+FFFD). */
export function bytesToText(bytes) {
  return utf8Decoder.decode(bytes);
}

const U64_MAX = (1n << 64n) - 1n;

function checkInt(name, kind, v) {
  if (kind === 'u64') {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
      throw new RangeError(`${name} must be a BigInt in 0..2^64-1`);
    }
    return;
  }
  const max = kind === 'bit' ? 1 : 2 ** (8 * SIZE[kind]) - 1;
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`${name} must be an integer in 0..${max}`);
  }
}

/**
 * Encodes one command of `service` in direction `dir` (C2S or S2C).
 * `cmd` is `{ op: name, ...fields }`, e.g. `{ op: 'join', chatid: 7n }`.
 * Omitted integer fields are 0 (the `reserved` ones). Throws TypeError or
 * RangeError for a command that cannot be encoded (unknown name, a value
 * out of its field's range, a token or msgdata too long).
 * @returns {Uint8Array}
 */
export function encode(service, dir, cmd) {
  const opcode = OPCODES[service]?.[dir]?.get(cmd.op);
  if (opcode === undefined) throw new TypeError(`no ${service} ${dir} command named ${cmd.op}`);
  const { fields } = layoutsOf(service, dir)[opcode];
  // First pass: size and validation; variable parts are converted once.
  let size = 1;
  const vars = new Map();
  for (const [name, kind] of fields) {
    if (kind === 'str16') {
      const b = toBytes(cmd[name] ?? '');
      if (b.length === 0 || b.length > MAX_TOKEN_LEN) {
        throw new RangeError(`${name} must be 1..${MAX_TOKEN_LEN} bytes`);
      }
      vars.set(name, b);
      size += 2 + b.length;
    } else if (kind === 'bytes24') {
      const b = toBytes(cmd[name] ?? new Uint8Array(0));
      if (b.length > MAX_MSGLEN) throw new RangeError(`${name} must be at most ${MAX_MSGLEN} bytes`);
      vars.set(name, b);
      size += 3 + b.length;
    } else {
      checkInt(name, kind, cmd[name] ?? (kind === 'u64' ? 0n : 0));
      size += SIZE[kind];
    }
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = opcode;
  let at = 1;
  for (const [name, kind] of fields) {
    switch (kind) {
      case 'u8':
      case 'bit':
        out[at] = cmd[name] ?? 0;
        at += 1;
        break;
      case 'u16':
        view.setUint16(at, cmd[name] ?? 0, true);
        at += 2;
        break;
      case 'u32':
        view.setUint32(at, cmd[name] ?? 0, true);
        at += 4;
        break;
      case 'u64':
        view.setBigUint64(at, cmd[name] ?? 0n, true);
        at += 8;
        break;
      case 'str16': {
        const b = vars.get(name);
        view.setUint16(at, b.length, true);
        out.set(b, at + 2);
        at += 2 + b.length;
        break;
      }
      case 'bytes24': {
        const b = vars.get(name);
        writeU24(out, at, b.length);
        out.set(b, at + 3);
        at += 3 + b.length;
        break;
      }
    }
  }
  return out;
}

// A copy of bytes[from..to] as a plain Uint8Array (Node's Buffer#slice
// would return a view sharing the caller's memory).
function copyOf(bytes, from, to) {
  return new Uint8Array(bytes.subarray(from, to));
}

function writeU24(out, at, v) {
  out[at] = v & 0xff;
  out[at + 1] = (v >>> 8) & 0xff;
  out[at + 2] = (v >>> 16) & 0xff;
}

function readU24(bytes, at) {
  return bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16);
}

/**
 * Decodes the command that starts at `bytes[offset]`.
 * @returns {{cmd: object, used: number} | null} the command and the bytes
 *   it took, or null when `bytes` end before the command does.
 * @throws {ProtocolError} for an unknown opcode or a forbidden field value,
 *   as soon as the offending byte is present.
 */
export function decode(service, dir, bytes, offset = 0) {
  if (offset >= bytes.length) return null;
  const opcode = bytes[offset];
  const layout = layoutsOf(service, dir)[opcode];
  if (!layout) {
    throw new ProtocolError(`unknown ${service} opcode 0x${opcode.toString(16).padStart(2, '0')}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cmd = { op: layout.name };
  let at = offset + 1;
  for (const [name, kind] of layout.fields) {
    if (kind === 'str16' || kind === 'bytes24') {
      const lenSize = kind === 'str16' ? 2 : 3;
      if (at + lenSize > bytes.length) return null;
      const len = kind === 'str16' ? view.getUint16(at, true) : readU24(bytes, at);
      at += lenSize;
      if (kind === 'str16' && (len === 0 || len > MAX_TOKEN_LEN)) {
        throw new ProtocolError(`${layout.name}: ${name} length ${len} outside 1..${MAX_TOKEN_LEN}`);
      }
      if (at + len > bytes.length) return null;
      // A copy: the caller may reuse or drop its buffer.
      const b = copyOf(bytes, at, at + len);
      cmd[name] = kind === 'str16' ? bytesToText(b) : b;
      at += len;
      continue;
    }
    const n = SIZE[kind];
    if (at + n > bytes.length) return null;
    switch (kind) {
      case 'u8':
        cmd[name] = bytes[at];
        break;
      case 'bit':
        cmd[name] = bytes[at];
        if (cmd[name] > 1) throw new ProtocolError(`${layout.name}: ${name} ${cmd[name]} is not 0 or 1`);
        break;
      case 'u16':
        cmd[name] = view.getUint16(at, true);
        break;
      case 'u32':
        cmd[name] = view.getUint32(at, true);
        break;
      case 'u64':
        cmd[name] = view.getBigUint64(at, true);
        break;
    }
    at += n;
  }
  return { cmd, used: at - offset };
}

/**
 * Decodes a message that must hold whole commands only: a WebSocket
 * message from the server (section 8: "every binary message holds one or
 * more whole commands, never part of one").
 * @returns {object[]} the commands, in order (at least one).
 * @throws {ProtocolError} for an empty message, a truncated last command,
 *   or any command decode() refuses.
 */
export function decodeMessage(service, dir, bytes) {
  if (bytes.length === 0) throw new ProtocolError('empty message');
  const cmds = [];
  let at = 0;
  while (at < bytes.length) {
    const r = decode(service, dir, bytes, at);
    if (r === null) throw new ProtocolError(`message ends inside a command (${bytes.length - at} bytes left)`);
    cmds.push(r.cmd);
    at += r.used;
  }
  return cmds;
}

/**
 * Decoder of a byte stream (TCP): commands may be split across chunks and
 * a chunk may hold several. Keeps the unread tail between calls.
 */
export class StreamDecoder {
  constructor(service, dir) {
    layoutsOf(service, dir);
    this.service = service;
    this.dir = dir;
    /** @type {Uint8Array} bytes received and not yet decoded */
    this.pending = new Uint8Array(0);
  }

  /**
   * Adds a chunk and returns every command now complete, in order.
   * @throws {ProtocolError} (the stream is then unusable)
   */
  push(chunk) {
    let bytes = chunk;
    if (this.pending.length > 0) {
      bytes = new Uint8Array(this.pending.length + chunk.length);
      bytes.set(this.pending, 0);
      bytes.set(chunk, this.pending.length);
    }
    const cmds = [];
    let at = 0;
    for (;;) {
      const r = decode(this.service, this.dir, bytes, at);
      if (r === null) break;
      cmds.push(r.cmd);
      at += r.used;
    }
    // Keep a copy of the tail only: the caller owns `chunk`.
    this.pending = at === bytes.length ? new Uint8Array(0) : copyOf(bytes, at, bytes.length);
    return cmds;
  }
}
