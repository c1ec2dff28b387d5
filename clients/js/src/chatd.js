// The chatd client: rooms, real-time messages, the in-call flag (protocol
// section 4), on top of BaseClient's connection life cycle.
//
// The rooms a client wants joined are its own state (`rooms`): join() and
// leave() change it, and every (re)connection replays it: each wanted room
// is joined again, and a room whose call this client is in gets its
// OP_IN_CALL 1 again as soon as the join is answered. The heartbeat timer
// repeats OP_IN_CALL 1 for those rooms every `heartbeatIntervalMs`.

import { CHATD, OP, PROTOCOL_VERSION, ERR, toBytes, bytesToText, MAX_MSGLEN } from './codec.js';
import { BaseClient, ChatdError } from './connection.js';
import { toId, idString, toClientId } from './ids.js';

/** OP_IN_CALL heartbeat period: the protocol asks for every 2-5 s. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 3000;

/** A real-time message received (OP_RTMSG from the server). */
export class RtMessage {
  constructor(cmd) {
    /** Room id (decimal string). */
    this.chatid = idString(cmd.chatid);
    /** Sender's user id (decimal string). */
    this.userid = idString(cmd.userid);
    /** Sender's client id (number). */
    this.clientid = cmd.clientid;
    /** Application-defined type byte, as sent. */
    this.msgtype = cmd.msgtype;
    /** Payload bytes, as sent. */
    this.data = cmd.data;
  }

  /** The payload as UTF-8 text. */
  get text() {
    return bytesToText(this.data);
  }
}

/**
 * What the client knows of one room it wants joined.
 * @typedef {object} RoomState
 * @property {string} chatid
 * @property {boolean} joined  the server confirmed the join on this connection
 * @property {boolean|null} inCall  the room's flag (null until joined)
 * @property {boolean} inCallSelf  this client says it is in the room's call
 */

export class ChatdClient extends BaseClient {
  /**
   * @param {object} opts ClientOptions plus `heartbeatIntervalMs`.
   */
  constructor(opts = {}) {
    super(CHATD, opts);
    const hb = opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    if (!(typeof hb === 'number' && hb > 0)) throw new RangeError('heartbeatIntervalMs must be a positive number');
    this._heartbeatMs = hb;
    /** Client id of the current connection (null while not connected). */
    this.clientid = null;
    /** @type {Map<string, RoomState & {id: bigint, waiters: Array}>} rooms wanted joined */
    this._rooms = new Map();
    /** @type {Map<string, Array>} leave() calls waiting for OP_LEAVE */
    this._leaving = new Map();
    this._heartbeat = null;
  }

  /** The rooms this client wants joined, with what it knows of each. */
  get rooms() {
    return new Map([...this._rooms].map(([k, r]) => [k, roomView(r)]));
  }

  /** What the client knows of one room, or undefined if not wanted. */
  room(chatid) {
    const r = this._rooms.get(idString(toId(chatid, 'chatid')));
    return r && roomView(r);
  }

  /**
   * Joins a room (kept across reconnects until leave()). Resolves with the
   * room once the server answered OP_JOIN and the room's flag (now or
   * after the next login);
   * rejects with ChatdError NOT_MEMBER or TOO_MANY_ROOMS, or LEFT when
   * leave() comes first.
   * @returns {Promise<RoomState>}
   */
  join(chatid) {
    const id = toId(chatid, 'chatid');
    const key = idString(id);
    let r = this._rooms.get(key);
    if (r?.joined) return Promise.resolve(roomView(r));
    const p = new Promise((resolve, reject) => {
      if (!r) {
        r = { chatid: key, id, joined: false, awaitingFlag: false, inCall: null, inCallSelf: false, waiters: [] };
        this._rooms.set(key, r);
        if (this.state === 'connected') this._send({ op: 'join', chatid: id });
      }
      r.waiters.push({ resolve, reject });
    });
    return p;
  }

  /**
   * Leaves a room (and its call). Resolves when the server answered
   * OP_LEAVE, or at once when not connected.
   * @returns {Promise<void>}
   */
  leave(chatid) {
    const id = toId(chatid, 'chatid');
    const key = idString(id);
    const r = this._rooms.get(key);
    if (r) {
      this._rooms.delete(key);
      settle(r.waiters, 'reject', new ChatdError('LEFT', `left room ${key}`));
      this._syncHeartbeat();
    }
    if (this.state !== 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      let list = this._leaving.get(key);
      if (!list) this._leaving.set(key, (list = []));
      list.push({ resolve, reject });
      this._send({ op: 'leave', chatid: id });
    });
  }

  /**
   * Sends a real-time message to a joined room. Addressing (section 4.3):
   * no `userid`: every device in the room; `userid` alone: every device of
   * that user; `userid` and `clientid`: that one device.
   * @param {string|bigint|number} chatid
   * @param {string|Uint8Array|ArrayBuffer|ArrayBufferView} data  a string goes as UTF-8
   * @param {{userid?: string|bigint|number, clientid?: number, msgtype?: number}} [to]
   */
  send(chatid, data, { userid, clientid, msgtype = 0 } = {}) {
    const id = toId(chatid, 'chatid');
    const r = this._rooms.get(idString(id));
    if (this.state !== 'connected') throw new ChatdError('NOT_CONNECTED', 'chatd: not connected');
    if (!r?.joined) throw new ChatdError('NOT_JOINED', `room ${idString(id)} is not joined`);
    if (clientid !== undefined && clientid !== 0 && (userid === undefined || userid === 0 || userid === '0' || userid === 0n)) {
      // The server would answer BAD_ADDRESS; say it before sending.
      throw new ChatdError('BAD_ADDRESS', 'a clientid needs its userid');
    }
    const bytes = toBytes(data);
    if (bytes.length > MAX_MSGLEN) throw new RangeError(`message longer than ${MAX_MSGLEN} bytes`);
    if (!Number.isInteger(msgtype) || msgtype < 0 || msgtype > 255) throw new RangeError('msgtype must be 0..255');
    this._send({
      op: 'rtmsg',
      chatid: id,
      userid: userid === undefined ? 0n : toId(userid, 'userid', { allowZero: true }),
      clientid: clientid === undefined ? 0 : toClientId(clientid, 'clientid', { allowZero: true }),
      msgtype,
      data: bytes,
    });
  }

  /**
   * Says this client is (true) or is no longer (false) in the room's call.
   * While true, OP_IN_CALL 1 is repeated every heartbeat interval and
   * re-sent after every reconnect; false sends OP_IN_CALL 0 once. The room
   * must be wanted joined (join() called).
   */
  setInCall(chatid, inCall) {
    const key = idString(toId(chatid, 'chatid'));
    const r = this._rooms.get(key);
    if (!r) throw new ChatdError('NOT_JOINED', `room ${key} is not joined`);
    const on = Boolean(inCall);
    const changed = r.inCallSelf !== on;
    r.inCallSelf = on;
    if (r.joined && this.state === 'connected' && (on || changed)) {
      this._send({ op: 'in_call', chatid: r.id, status: on ? 1 : 0 });
    }
    this._syncHeartbeat();
  }

  // ---- BaseClient hooks ----

  _helloCommand() {
    return { op: 'hello', version: PROTOCOL_VERSION, reserved: 0 };
  }

  _handle(cmd) {
    if (this.state !== 'connected') {
      // Before login only OP_HELLO (our client id) can come.
      if (cmd.op !== 'hello') return this._protocolError(`chatd sent ${cmd.op} before OP_HELLO`);
      this.clientid = cmd.clientid;
      this._loggedIn({ clientid: cmd.clientid });
      // Restore the rooms (the state may have changed in a listener).
      if (this.state === 'connected') {
        const joins = [...this._rooms.values()].map((r) => ({ op: 'join', chatid: r.id }));
        if (joins.length) this._send(...joins);
      }
      return;
    }
    switch (cmd.op) {
      case 'hello':
        return this._protocolError('second OP_HELLO from chatd');
      case 'join':
        return this._joined(cmd.chatid);
      case 'leave':
        return this._left(cmd.chatid);
      case 'in_call':
        return this._flag(cmd.chatid, cmd.status);
      case 'rtmsg':
        return this.emit('message', new RtMessage(cmd));
    }
  }

  _serverError(err) {
    const key = err.id;
    const r = this._rooms.get(key);
    if (r && err.opcode === OP.JOIN && (err.errorCode === ERR.NOT_MEMBER || err.errorCode === ERR.TOO_MANY_ROOMS)) {
      // The join failed: stop wanting the room.
      this._rooms.delete(key);
      this._syncHeartbeat();
      if (r.waiters.length) settle(r.waiters, 'reject', err);
      else this.emit('leave', { chatid: key, reason: err.code, error: err });
      return;
    }
    this.emit('error', { error: err });
  }

  _connectionLost() {
    this.clientid = null;
    if (this._heartbeat !== null) {
      this._clearTimeout(this._heartbeat);
      this._heartbeat = null;
    }
    for (const r of this._rooms.values()) {
      r.joined = false;
      r.awaitingFlag = false;
      r.inCall = null;
    }
    // Leaves in flight are done: this connection's rooms are gone with it.
    for (const list of this._leaving.values()) settle(list, 'resolve');
    this._leaving.clear();
  }

  _stopped() {
    this._connectionLost();
  }

  // ---- internals ----

  _joined(chatid) {
    const r = this._rooms.get(idString(chatid));
    if (!r) return; // left before the answer came
    // The room's flag follows at once (section 4.2); the join is complete then.
    r.awaitingFlag = true;
  }

  _flag(chatid, status) {
    const r = this._rooms.get(idString(chatid));
    if (!r) return; // a room left meanwhile
    r.inCall = status === 1;
    if (r.awaitingFlag) {
      r.awaitingFlag = false;
      const first = !r.joined;
      r.joined = true;
      if (r.inCallSelf) this._send({ op: 'in_call', chatid: r.id, status: 1 });
      this._syncHeartbeat();
      settle(r.waiters, 'resolve', roomView(r));
      if (first) this.emit('join', { chatid: r.chatid, inCall: r.inCall });
    }
    this.emit('incall', { chatid: r.chatid, inCall: r.inCall });
  }

  _left(chatid) {
    const key = idString(chatid);
    const list = this._leaving.get(key);
    if (list?.length) {
      // The answer to our leave(); leaves are answered in order.
      list.shift().resolve();
      if (!list.length) this._leaving.delete(key);
      this.emit('leave', { chatid: key, reason: 'LEFT' });
      return;
    }
    const r = this._rooms.get(key);
    if (!r) return;
    // Unasked: the user stopped being a member (section 4.2).
    this._rooms.delete(key);
    this._syncHeartbeat();
    const err = new ChatdError('REMOVED', `removed from room ${key}`);
    settle(r.waiters, 'reject', err);
    this.emit('leave', { chatid: key, reason: 'REMOVED' });
  }

  /** Runs the heartbeat timer while some joined room's call includes this client. */
  _syncHeartbeat() {
    const need = this.state === 'connected' && [...this._rooms.values()].some((r) => r.inCallSelf && r.joined);
    if (need && this._heartbeat === null) {
      const tick = () => {
        this._heartbeat = null;
        if (this.state !== 'connected') return;
        const beats = [...this._rooms.values()]
          .filter((r) => r.inCallSelf && r.joined)
          .map((r) => ({ op: 'in_call', chatid: r.id, status: 1 }));
        if (!beats.length) return;
        this._send(...beats);
        this._heartbeat = this._setTimeout(tick, this._heartbeatMs);
      };
      this._heartbeat = this._setTimeout(tick, this._heartbeatMs);
    } else if (!need && this._heartbeat !== null) {
      this._clearTimeout(this._heartbeat);
      this._heartbeat = null;
    }
  }
}

function roomView(r) {
  return { chatid: r.chatid, joined: r.joined, inCall: r.inCall, inCallSelf: r.inCallSelf };
}

function settle(waiters, how, value) {
  const list = waiters.splice(0);
  for (const w of list) w[how](value);
}
