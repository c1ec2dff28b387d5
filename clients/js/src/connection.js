// The connection life cycle both clients share: open a transport, log in
// (OP_AUTH + OP_HELLO), keep the connection alive, and reconnect with
// backoff when it is lost. The service clients (chatd.js, statusd.js)
// extend it with their commands and with what they restore after a
// reconnect.
//
// States (the `state` property, and the `state` event on each change):
//
//   disconnected --connect()--> connecting --login done--> connected
//        ^                        |   ^                        |
//        |   disconnect(), or a   |   | lost: backoff, retry   |
//        +--- fatal login error --+   +------------------------+
//
// "connected" means logged in: chatd answered OP_HELLO with a client id,
// statusd finished the login dump. No timer polls: everything happens on a
// transport callback or on one of three timers (connect timeout, reconnect
// backoff, keepalive), all from the injectable `timers`.

import { encode, decodeMessage, StreamDecoder, ProtocolError, C2S, S2C, ERR, errorName, errorCloses } from './codec.js';
import { Emitter } from './emitter.js';
import { webSocketTransport } from './transport.js';
import { tokenUserId } from './ids.js';

/** Defaults of the options every client takes (milliseconds). */
export const DEFAULTS = Object.freeze({
  /** First reconnect delay; each failed attempt doubles it, up to the max. */
  minReconnectDelayMs: 500,
  maxReconnectDelayMs: 20000,
  /** Opening and logging in must finish within this. */
  connectTimeoutMs: 15000,
  /** Send OP_KEEPALIVE this often; the server closes a connection silent for 90 s. */
  keepaliveIntervalMs: 30000,
  /** No byte received this long after a keepalive: the connection is dead. */
  keepaliveTimeoutMs: 10000,
});

/**
 * An error the server reported (OP_ERROR), or one the client raises before
 * sending (`NOT_CONNECTED`, `NOT_JOINED`, ...). `code` is the error's name
 * (`'NOT_MEMBER'`, ...); `errorCode`, `opcode` and `id` are the OP_ERROR
 * fields when the server sent it.
 */
export class ChatdError extends Error {
  constructor(code, message, { errorCode, opcode, id } = {}) {
    super(message ?? code);
    this.name = 'ChatdError';
    this.code = code;
    this.errorCode = errorCode;
    this.opcode = opcode;
    this.id = id;
  }

  /** The error of an OP_ERROR command. */
  static fromServer(service, cmd) {
    const name = errorName(cmd.code);
    return new ChatdError(name, `${service}: ${name} (opcode ${cmd.opcode}, id ${cmd.id})`, {
      errorCode: cmd.code,
      opcode: cmd.opcode,
      id: cmd.id.toString(),
    });
  }
}

/** Login errors that a retry with the same settings cannot fix. */
const FATAL = new Set([ERR.BAD_VERSION]);

export class BaseClient extends Emitter {
  /**
   * @param {string} service  CHATD or STATUSD
   * @param {object} opts see index.d.ts (ClientOptions)
   */
  constructor(service, opts = {}) {
    super();
    if (typeof opts.url !== 'string') throw new TypeError('url is required');
    if (typeof opts.token !== 'string' && typeof opts.token !== 'function') {
      throw new TypeError('token must be a string or a function returning one (or a promise of one)');
    }
    if (/^(tcp|tls):/.test(opts.url) && !opts.transport) {
      throw new TypeError(`${opts.url}: pass transport: tcpTransport() (from 'chatd-client/tcp') for TCP`);
    }
    this.service = service;
    this.url = opts.url;
    this._token = opts.token;
    /** The user id the token names (its `sub`), for display; the server decides. Null until known. */
    this.userid = typeof opts.token === 'string' ? tokenUserId(opts.token) : null;
    this._transport = opts.transport ?? webSocketTransport();
    this._reconnect = opts.reconnect ?? true;
    const o = {};
    for (const k of Object.keys(DEFAULTS)) {
      const v = opts[k] ?? DEFAULTS[k];
      if (!(typeof v === 'number' && v > 0)) throw new RangeError(`${k} must be a positive number`);
      o[k] = v;
    }
    this._opts = o;
    const timers = opts.timers ?? globalThis;
    this._setTimeout = timers.setTimeout.bind(timers);
    this._clearTimeout = timers.clearTimeout.bind(timers);
    this._random = opts.random ?? Math.random;

    /** @type {'disconnected'|'connecting'|'connected'} */
    this.state = 'disconnected';
    /** Failed attempts since the last login (drives the backoff). */
    this._attempt = 0;
    /** Bumped whenever a connection is abandoned, so its late callbacks are ignored. */
    this._gen = 0;
    this._conn = null;
    this._decoder = null;
    this._timers = { connect: null, retry: null, keepalive: null, pong: null };
    /** Why the client last stopped (for ready()). */
    this._stopError = null;
  }

  /** Starts connecting (and reconnecting as needed). No-op unless disconnected. */
  connect() {
    if (this.state !== 'disconnected') return;
    this._attempt = 0;
    this._setState('connecting', 'connect');
    this._open();
  }

  /** Closes the connection and stops reconnecting. */
  disconnect(reason = 'client') {
    if (this.state === 'disconnected') return;
    this._drop();
    this._stop(reason, undefined);
  }

  /**
   * Resolves once connected (at once if already); rejects on a terminal
   * disconnect, or at once when the client is disconnected (call connect()
   * first).
   */
  ready() {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'disconnected') {
      return Promise.reject(this._stopError ?? new ChatdError('DISCONNECTED', `${this.service}: not connecting`));
    }
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('connected', () => {
          offs.forEach((f) => f());
          resolve();
        }),
        this.on('disconnected', (ev) => {
          offs.forEach((f) => f());
          reject(ev.error ?? new ChatdError('DISCONNECTED', `disconnected: ${ev.reason}`));
        }),
      ];
    });
  }

  // ---- for the service clients ----

  /** The OP_HELLO this service sends after OP_AUTH. */
  _helloCommand() {
    throw new Error('abstract');
  }

  /** A decoded server command other than OP_KEEPALIVE and OP_ERROR. */
  _handle(_cmd) {
    throw new Error('abstract');
  }

  /** An OP_ERROR after which the connection stays open. */
  _serverError(err) {
    this.emit('error', { error: err });
  }

  /** The connection was lost or closed (state is no longer connected). */
  _connectionLost() {}

  /** The client stopped for good (disconnected state). */
  _stopped() {}

  /** Encodes and sends commands now; throws NOT_CONNECTED unless logged in. */
  _send(...cmds) {
    if (this.state !== 'connected' || !this._conn) {
      throw new ChatdError('NOT_CONNECTED', `${this.service}: not connected`);
    }
    this._write(cmds);
  }

  /** The login is done: the service client calls this once per connection. */
  _loggedIn(info) {
    this._clear('connect');
    this._attempt = 0;
    this._setState('connected', 'login');
    this._armKeepalive();
    this.emit('connected', info);
  }

  /** Ends the connection because the server broke the protocol. */
  _protocolError(message) {
    this._fail(new ProtocolError(message));
  }

  // ---- internals ----

  _write(cmds) {
    const parts = cmds.map((c) => encode(this.service, C2S, c));
    let bytes = parts[0];
    if (parts.length > 1) {
      bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        bytes.set(p, at);
        at += p.length;
      }
    }
    this._conn.send(bytes);
  }

  _setState(state, reason) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.emit('state', { state, previous, reason });
  }

  async _open() {
    const gen = ++this._gen;
    this._arm('connect', this._opts.connectTimeoutMs, () => this._fail(new ChatdError('TIMEOUT', 'connect timeout')));
    let token;
    try {
      token = typeof this._token === 'function' ? await this._token() : this._token;
      if (typeof token !== 'string' || token.length === 0) throw new TypeError('token provider gave no token');
    } catch (e) {
      if (gen === this._gen) this._fail(e);
      return;
    }
    if (gen !== this._gen) return;
    this.userid = tokenUserId(token) ?? this.userid;
    const handlers = {
      open: () => {
        if (gen !== this._gen) return;
        // AUTH and HELLO pipelined in one write (section 2 allows it).
        this._write([{ op: 'auth', token }, this._helloCommand()]);
      },
      data: (bytes, error) => {
        if (gen !== this._gen) return;
        if (error) return this._fail(new ProtocolError(error.message));
        this._received(bytes);
      },
      close: (info) => {
        if (gen !== this._gen) return;
        const why = info.error ?? new ChatdError('CLOSED', `connection closed${info.code ? ` (${info.code}${info.reason ? ` ${info.reason}` : ''})` : ''}`);
        this._lost(why);
      },
    };
    try {
      this._conn = this._transport(this.url, handlers);
    } catch (e) {
      // A URL or constructor the transport refuses will never work.
      this._drop();
      this._stop('transport', e);
      return;
    }
    this._decoder = this._conn.framing === 'stream' ? new StreamDecoder(this.service, S2C) : null;
  }

  _received(bytes) {
    // Any byte proves the connection alive.
    this._clear('pong');
    let cmds;
    try {
      cmds = this._decoder ? this._decoder.push(bytes) : decodeMessage(this.service, S2C, bytes);
    } catch (e) {
      return this._fail(e);
    }
    const gen = this._gen;
    for (const cmd of cmds) {
      if (gen !== this._gen) return; // a command before this one ended the connection
      if (cmd.op === 'keepalive') continue;
      if (cmd.op === 'error') {
        this._error(cmd);
        continue;
      }
      this._handle(cmd);
    }
  }

  _error(cmd) {
    const err = ChatdError.fromServer(this.service, cmd);
    if (!errorCloses(cmd.code)) return this._serverError(err);
    // The server closes after this one; close our side now.
    const loggingIn = this.state !== 'connected';
    const staticToken = typeof this._token === 'string';
    if (FATAL.has(cmd.code) || (loggingIn && cmd.code === ERR.AUTH_FAILED && staticToken)) {
      this.emit('error', { error: err });
      this._drop();
      this._stop('server', err);
      return;
    }
    this._fail(err);
  }

  /** This connection failed: close it and go on as after a loss. */
  _fail(error) {
    if (this.state === 'disconnected') return;
    this._drop();
    this._lost(error);
  }

  /** Closes the current transport, if any, and ignores its later callbacks. */
  _drop() {
    this._gen++;
    for (const k of Object.keys(this._timers)) this._clear(k);
    const conn = this._conn;
    this._conn = null;
    this._decoder = null;
    conn?.close();
  }

  _lost(error) {
    this._drop();
    this.emit('error', { error });
    this._connectionLost(error);
    if (!this._reconnect) return this._stop('lost', error);
    const delayMs = this._backoff(this._attempt++);
    this._setState('connecting', 'lost');
    this.emit('connecting', { error, attempt: this._attempt, delayMs });
    this._arm('retry', delayMs, () => this._open());
  }

  _stop(reason, error) {
    this._stopError = error ?? null;
    this._setState('disconnected', reason);
    this._stopped();
    this.emit('disconnected', { reason, error });
  }

  /** Delay before attempt `n` (0-based): exponential, capped, "equal jitter". */
  _backoff(n) {
    const { minReconnectDelayMs: min, maxReconnectDelayMs: max } = this._opts;
    const d = Math.min(max, min * 2 ** Math.min(n, 30));
    return Math.round(d / 2 + (this._random() * d) / 2);
  }

  _armKeepalive() {
    this._arm('keepalive', this._opts.keepaliveIntervalMs, () => {
      if (!this._conn) return;
      this._write([{ op: 'keepalive' }]);
      if (!this._timers.pong) {
        this._arm('pong', this._opts.keepaliveTimeoutMs, () =>
          this._fail(new ChatdError('TIMEOUT', 'no answer to OP_KEEPALIVE')),
        );
      }
      this._armKeepalive();
    });
  }

  _arm(name, ms, fn) {
    this._clear(name);
    this._timers[name] = this._setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, ms);
  }

  _clear(name) {
    if (this._timers[name] !== null) {
      this._clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }
}
