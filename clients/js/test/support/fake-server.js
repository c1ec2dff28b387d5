// An in-memory chatd + statusd for tests that run without the real server:
// the client state machine's unit tests (through `transport()`), and the
// browser page test that short-circuits signalling (through `attach()`,
// fed by Playwright's routeWebSocket).
//
// It is a test double, not a second server: it implements the rules the
// client relies on (login order, join/leave answers, the three RTMSG
// addressings, the in-call flag of distinct users, presence combined by
// maximum with the "automatic" bit, visibility through shared rooms, the
// login dump, closing errors) with the client's own codec, and lets tests
// break connections on purpose. End-to-end tests against the real binary
// check the real thing.
//
// Tokens are fake JWTs made by `fakeToken(userid)`: a payload with `sub`
// and the signature "ok"; any other signature is AUTH_FAILED.

import { encode, StreamDecoder, CHATD, STATUSD, C2S, S2C, ERR, OP, SOP } from '../../src/codec.js';

const b64url = (s) => Buffer.from(s).toString('base64url');

/** A token the fake server accepts for `userid` (or refuses, with valid false). */
export function fakeToken(userid, { valid = true } = {}) {
  return `${b64url('{"alg":"HS256"}')}.${b64url(JSON.stringify({ sub: String(userid), exp: 9999999999 }))}.${valid ? 'ok' : 'bad'}`;
}

function tokenUser(token) {
  const [, payload, sig] = token.split('.');
  if (sig !== 'ok') return null;
  try {
    return JSON.parse(Buffer.from(payload, 'base64url').toString()).sub;
  } catch {
    return null;
  }
}

export class FakeServer {
  /** @param {{members?: Record<string, string[]>}} [opts] room id -> member user ids */
  constructor({ members = {} } = {}) {
    /** @type {Map<string, Set<string>>} */
    this.members = new Map(Object.entries(members).map(([k, v]) => [k, new Set(v.map(String))]));
    /** Every connection, open or closed, in order of arrival. */
    this.conns = [];
    this._nextClientId = 1;
    /** When true, new connections fail to open. */
    this.refuse = false;
    /** When true, OP_KEEPALIVE is not answered (a dead server that keeps the socket). */
    this.muteKeepalive = false;
  }

  /** Open connections of a service. */
  live(service) {
    return this.conns.filter((c) => !c.closed && c.service === service);
  }

  /**
   * A client transport (see src/transport.js) reaching this server. The
   * service is the URL's last path segment (`.../chatd`, `.../statusd`).
   * @param {'message'|'stream'} framing how server bytes reach the client
   */
  transport(framing = 'message') {
    return (url, handlers) => {
      const service = serviceOf(url);
      let conn = null;
      let clientClosed = false;
      queueMicrotask(() => {
        if (clientClosed) return;
        if (this.refuse) return handlers.close({ code: 1006, reason: 'refused' });
        conn = this.attach(service, {
          send: (bytes) => queueMicrotask(() => !clientClosed && handlers.data(bytes)),
          close: () => queueMicrotask(() => !clientClosed && handlers.close({ code: 1000, reason: 'server closed' })),
        });
        handlers.open();
      });
      return {
        framing,
        send: (bytes) => {
          if (!conn || conn.closed) return;
          // A copy, cut in two when streaming: commands may be split.
          const b = Uint8Array.from(bytes);
          queueMicrotask(() => {
            if (framing === 'stream' && b.length > 1) {
              conn.receive(b.subarray(0, 1));
              conn.receive(b.subarray(1));
            } else conn.receive(b);
          });
        },
        close: () => {
          clientClosed = true;
          if (conn) this._close(conn);
        },
      };
    };
  }

  /**
   * A server-side connection of `service`: `peer.send(bytes)` delivers to
   * the client (one call per server message, whole commands), and
   * `peer.close()` closes it. Returns the connection; feed it the client's
   * bytes with `receive(bytes)` and tell it the client went with `gone()`.
   */
  attach(service, peer) {
    const conn = {
      service,
      peer,
      phase: 'auth',
      user: null,
      clientid: 0,
      rooms: new Set(),
      inCall: new Set(),
      presence: 0,
      closed: false,
      received: [],
      decoder: new StreamDecoder(service, C2S),
      receive: (bytes) => this._receive(conn, bytes),
      gone: () => this._close(conn),
    };
    this.conns.push(conn);
    return conn;
  }

  /** Breaks a connection without a word (a network loss). */
  drop(conn) {
    if (conn.closed) return;
    this._close(conn);
    conn.peer.close();
  }

  /** Removes a member: the user's connections in the room get OP_LEAVE. */
  removeMember(chatid, userid) {
    this.members.get(chatid)?.delete(userid);
    for (const c of this.live(CHATD)) {
      if (c.user === userid && c.rooms.delete(chatid)) {
        this._leaveCall(c, chatid);
        this._send(c, { op: 'leave', chatid: BigInt(chatid) });
      }
    }
  }

  /** The room's flag: at least two distinct users in its call. */
  flag(chatid) {
    const users = new Set(this.live(CHATD).filter((c) => c.inCall.has(chatid)).map((c) => c.user));
    return users.size >= 2 ? 1 : 0;
  }

  /** A user's presence: the maximum of its statusd connections. */
  presenceOf(userid) {
    return Math.max(0, ...this.live(STATUSD).filter((c) => c.user === userid && c.phase === 'ready').map((c) => c.presence));
  }

  // ---- internals ----

  _send(conn, ...cmds) {
    if (conn.closed) return;
    // One server message holding every command (section 8 allows several).
    const parts = cmds.map((c) => encode(conn.service, S2C, c));
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    conn.peer.send(bytes);
  }

  _fatal(conn, code, opcode, id = 0n) {
    this._send(conn, { op: 'error', code, opcode, id });
    this.drop(conn);
  }

  _close(conn) {
    if (conn.closed) return;
    const rooms = [...conn.inCall];
    const before = conn.service === STATUSD && conn.phase === 'ready' ? this.presenceOf(conn.user) : null;
    const flags = rooms.map((r) => this.flag(r));
    conn.closed = true;
    rooms.forEach((r, i) => this._flagChanged(r, flags[i]));
    if (before !== null) this._presenceChanged(conn.user, before);
  }

  _receive(conn, bytes) {
    if (conn.closed) return;
    let cmds;
    try {
      cmds = conn.decoder.push(bytes);
    } catch {
      return this._fatal(conn, ERR.BAD_COMMAND, bytes[0]);
    }
    for (const cmd of cmds) {
      if (conn.closed) return;
      conn.received.push(cmd);
      this._command(conn, cmd);
    }
  }

  _command(conn, cmd) {
    const hello = conn.service === CHATD ? OP.HELLO : SOP.HELLO;
    if (conn.phase === 'auth') {
      if (cmd.op !== 'auth') return this._fatal(conn, ERR.NOT_AUTHENTICATED, 0);
      conn.user = tokenUser(cmd.token);
      if (!conn.user) return this._fatal(conn, ERR.AUTH_FAILED, OP.AUTH);
      conn.phase = 'hello';
      return;
    }
    if (conn.phase === 'hello') {
      if (cmd.op !== 'hello') return this._fatal(conn, ERR.NOT_AUTHENTICATED, 0);
      if (cmd.version !== 1) return this._fatal(conn, ERR.BAD_VERSION, hello);
      if (conn.service === CHATD) {
        conn.clientid = this._nextClientId++;
        conn.phase = 'ready';
        return this._send(conn, { op: 'hello', clientid: conn.clientid });
      }
      return this._statusdLogin(conn, cmd.presence);
    }
    if (cmd.op === 'keepalive') {
      if (!this.muteKeepalive) this._send(conn, { op: 'keepalive' });
      return;
    }
    if (cmd.op === 'auth' || cmd.op === 'hello') return this._fatal(conn, ERR.BAD_COMMAND, cmd.op === 'auth' ? OP.AUTH : hello);
    if (conn.service === CHATD) return this._chatd(conn, cmd);
    if (cmd.op === 'setpres') this._setPresence(conn, cmd.presence, true);
  }

  _chatd(conn, cmd) {
    const chatid = cmd.chatid.toString();
    switch (cmd.op) {
      case 'join':
        if (!this.members.get(chatid)?.has(conn.user)) {
          return this._send(conn, { op: 'error', code: ERR.NOT_MEMBER, opcode: OP.JOIN, id: cmd.chatid });
        }
        conn.rooms.add(chatid);
        return this._send(conn, { op: 'join', chatid: cmd.chatid }, { op: 'in_call', chatid: cmd.chatid, status: this.flag(chatid) });
      case 'leave':
        if (conn.rooms.delete(chatid)) this._leaveCall(conn, chatid);
        return this._send(conn, { op: 'leave', chatid: cmd.chatid });
      case 'in_call': {
        if (!conn.rooms.has(chatid)) {
          return this._send(conn, { op: 'error', code: ERR.NOT_JOINED, opcode: OP.IN_CALL, id: cmd.chatid });
        }
        if (cmd.status === 0) return this._leaveCall(conn, chatid);
        const before = this.flag(chatid);
        conn.inCall.add(chatid);
        return this._flagChanged(chatid, before);
      }
      case 'rtmsg': {
        if (cmd.userid === 0n && cmd.clientid !== 0) {
          return this._send(conn, { op: 'error', code: ERR.BAD_ADDRESS, opcode: OP.RTMSG, id: cmd.chatid });
        }
        if (!conn.rooms.has(chatid)) {
          return this._send(conn, { op: 'error', code: ERR.NOT_JOINED, opcode: OP.RTMSG, id: cmd.chatid });
        }
        const to = this.live(CHATD).filter(
          (c) =>
            c !== conn &&
            c.rooms.has(chatid) &&
            (cmd.userid === 0n || c.user === cmd.userid.toString()) &&
            (cmd.clientid === 0 || c.clientid === cmd.clientid),
        );
        const out = { ...cmd, userid: BigInt(conn.user), clientid: conn.clientid };
        for (const c of to) this._send(c, out);
      }
    }
  }

  _leaveCall(conn, chatid) {
    const before = this.flag(chatid);
    conn.inCall.delete(chatid);
    this._flagChanged(chatid, before);
  }

  _flagChanged(chatid, before) {
    const now = this.flag(chatid);
    if (now === before) return;
    for (const c of this.live(CHATD)) {
      if (c.rooms.has(chatid)) this._send(c, { op: 'in_call', chatid: BigInt(chatid), status: now });
    }
  }

  /** Users `userid` may see: those sharing a room with it. */
  _visible(userid) {
    const out = new Set();
    for (const m of this.members.values()) if (m.has(userid)) for (const u of m) if (u !== userid) out.add(u);
    return out;
  }

  _statusdLogin(conn, raw) {
    const dump = [...this._visible(conn.user)]
      .map((u) => [u, this.presenceOf(u)])
      .filter(([, p]) => p !== 0)
      .map(([u, p]) => ({ op: 'pres', userid: BigInt(u), presence: p }));
    const before = this.presenceOf(conn.user);
    conn.phase = 'ready';
    // A new client starts at its HELLO value; top bit 0 sets every client.
    this._setPresence(conn, raw, false);
    this._send(conn, ...dump, { op: 'pres', userid: 0n, presence: this.presenceOf(conn.user) });
    this._presenceChanged(conn.user, before, conn);
  }

  _setPresence(conn, raw, answer) {
    const before = this.presenceOf(conn.user);
    const value = raw & 0x7f;
    const mine = this.live(STATUSD).filter((c) => c.user === conn.user && c.phase === 'ready');
    if (raw & 0x80) conn.presence = value;
    else for (const c of mine) c.presence = value;
    if (!answer) return;
    const now = this.presenceOf(conn.user);
    if (now === before) return this._send(conn, { op: 'pres', userid: 0n, presence: now });
    this._presenceChanged(conn.user, before);
  }

  /** Tells watchers and the user's own clients (but `except`) about a change. */
  _presenceChanged(userid, before, except = null) {
    const now = this.presenceOf(userid);
    if (now === before) return;
    const watchers = this._visible(userid);
    for (const c of this.live(STATUSD)) {
      if (c.phase !== 'ready' || c === except) continue;
      if (c.user === userid) this._send(c, { op: 'pres', userid: 0n, presence: now });
      else if (watchers.has(c.user)) this._send(c, { op: 'pres', userid: BigInt(userid), presence: now });
    }
  }
}

function serviceOf(url) {
  const last = new URL(url).pathname.split('/').filter(Boolean).pop();
  if (last !== CHATD && last !== STATUSD) throw new TypeError(`no service in ${url}`);
  return last;
}
