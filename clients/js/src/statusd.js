// The statusd client: presence (protocol section 5), on top of
// BaseClient's connection life cycle.
//
// It keeps a live map of who is online (`online`: user id -> presence, for
// every user this user may see whose presence is not 0). The login dump of
// each connection is collected aside and applied at its end (the server's
// `OP_PRES 0 own`) as one diff against the map, so after a reconnect the
// map goes from the old view to the new one without passing through
// "everyone offline", and `presence` events fire only for real changes.
// On a terminal disconnect every user goes to 0 (with events): nothing is
// known any more.
//
// Re-announcing: every login sends in OP_HELLO the value this client last
// set (setPresence, or the `presence` option), with its "automatic" bit.

import { STATUSD, PROTOCOL_VERSION } from './codec.js';
import { BaseClient } from './connection.js';
import { idString, toId } from './ids.js';

/** Example presence values (section 5.1: 1..127 are the application's). */
export const PRESENCE = Object.freeze({ OFFLINE: 0, DND: 1, AWAY: 2, ONLINE: 3, CHATTY: 4 });

/** The MSB of a client-sent presence: set automatically (idle timer). */
export const PRESENCE_AUTO = 0x80;

function checkPresence(p) {
  if (!Number.isInteger(p) || p < 0 || p > 127) throw new RangeError('presence must be an integer 0..127');
  return p;
}

export class PresenceClient extends BaseClient {
  /**
   * @param {object} opts ClientOptions plus `presence` (0..127, default
   *   ONLINE) and `auto` (default false).
   */
  constructor(opts = {}) {
    super(STATUSD, opts);
    this._announce = checkPresence(opts.presence ?? PRESENCE.ONLINE) | (opts.auto ? PRESENCE_AUTO : 0);
    /** @type {Map<string, number>} user id -> presence, non-zero entries only */
    this._online = new Map();
    /** The dump being received (null once the login is done). */
    this._dump = null;
    /** This user's presence as the server last said (0 until logged in). */
    this.presence = 0;
  }

  /** A copy of the live map: user id (decimal string) -> presence (1..127). */
  get online() {
    return new Map(this._online);
  }

  /** The presence of a user as last received (0 when unknown or offline). */
  get(userid) {
    return this._online.get(idString(toId(userid, 'userid'))) ?? 0;
  }

  /**
   * Sets this client's presence (section 5.2): `auto` false (the user
   * chose it) sets every device of the user; `auto` true (an idle timer)
   * only this one. The server answers with the resulting presence
   * (`self` event). Kept and re-announced after a reconnect; when not
   * connected, only kept.
   */
  setPresence(presence, { auto = false } = {}) {
    this._announce = checkPresence(presence) | (auto ? PRESENCE_AUTO : 0);
    if (this.state === 'connected') this._send({ op: 'setpres', presence: this._announce });
  }

  // ---- BaseClient hooks ----

  _helloCommand() {
    this._dump = new Map();
    return { op: 'hello', version: PROTOCOL_VERSION, presence: this._announce, reserved: 0 };
  }

  _handle(cmd) {
    // statusd sends only OP_PRES (besides keepalive and errors).
    const presence = cmd.presence & 0x7f;
    if (cmd.userid === 0n) {
      this.presence = presence;
      if (this.state !== 'connected') {
        if (this._dump === null) return this._protocolError('OP_PRES before OP_HELLO was sent');
        const dump = this._dump;
        this._dump = null;
        this._apply(dump);
        this._loggedIn({ presence });
      } else {
        this.emit('self', { presence });
      }
      return;
    }
    const key = idString(cmd.userid);
    if (this.state !== 'connected') {
      if (this._dump === null) return this._protocolError('OP_PRES before OP_HELLO was sent');
      if (presence === 0) this._dump.delete(key);
      else this._dump.set(key, presence);
      return;
    }
    this._set(key, presence);
  }

  _connectionLost() {
    this._dump = null;
  }

  _stopped() {
    this._dump = null;
    this._apply(new Map());
    this.presence = 0;
  }

  // ---- internals ----

  /** Makes the live map equal `next`, with an event per change. */
  _apply(next) {
    for (const key of [...this._online.keys()]) if (!next.has(key)) this._set(key, 0);
    for (const [key, p] of next) this._set(key, p);
  }

  _set(key, presence) {
    const previous = this._online.get(key) ?? 0;
    if (previous === presence) return;
    if (presence === 0) this._online.delete(key);
    else this._online.set(key, presence);
    this.emit('presence', { userid: key, presence, previous });
  }
}
