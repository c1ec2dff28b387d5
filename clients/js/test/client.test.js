// The client state machines (login, rooms, messages, calls, presence,
// keepalive, reconnect with backoff) against the in-memory fake server on
// virtual time: deterministic, no sockets, no real waiting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatdClient, PresenceClient, ChatdError, ProtocolError, PRESENCE } from '../index.js';
import { encode, CHATD, S2C } from '../src/codec.js';
import { FakeServer, fakeToken } from './support/fake-server.js';
import { FakeClock, settle } from './support/clock.js';

const CHAT_URL = 'ws://fake/chatd';
const PRES_URL = 'ws://fake/statusd';

function setup(members = { 7: ['1', '2', '3'] }, framing = 'message') {
  const server = new FakeServer({ members });
  const clock = new FakeClock();
  const common = { transport: server.transport(framing), timers: clock, random: () => 0.5 };
  const chat = (user, opts = {}) => new ChatdClient({ url: CHAT_URL, token: fakeToken(user), ...common, ...opts });
  const pres = (user, opts = {}) => new PresenceClient({ url: PRES_URL, token: fakeToken(user), ...common, ...opts });
  return { server, clock, chat, pres };
}

/** Collects every event of `type` from `emitter`. */
function record(emitter, type) {
  const list = [];
  emitter.on(type, (ev) => list.push(ev));
  return list;
}

async function connected(...clients) {
  for (const c of clients) c.connect();
  await Promise.all(clients.map((c) => c.ready()));
}

for (const framing of ['message', 'stream']) {
  test(`login sends OP_AUTH then OP_HELLO and ends connected with a client id (${framing} framing)`, async () => {
    const { server, chat } = setup(undefined, framing);
    const a = chat('1');
    const states = record(a, 'state');
    a.connect();
    assert.equal(a.state, 'connecting');
    const ev = await a.once('connected');
    assert.equal(a.state, 'connected');
    assert.equal(ev.clientid, 1);
    assert.equal(a.clientid, 1);
    assert.equal(a.userid, '1');
    assert.deepEqual(
      server.conns[0].received.map((c) => c.op),
      ['auth', 'hello'],
    );
    assert.deepEqual(
      states.map((s) => s.state),
      ['connecting', 'connected'],
    );
  });
}

test('join resolves with the room and its flag; a non-member join rejects with NOT_MEMBER', async () => {
  const { chat } = setup({ 7: ['1'] });
  const a = chat('1');
  await connected(a);
  const joins = record(a, 'join');
  assert.deepEqual(await a.join('7'), { chatid: '7', joined: true, inCall: false, inCallSelf: false });
  assert.deepEqual(joins, [{ chatid: '7', inCall: false }]);
  await assert.rejects(a.join(8n), (e) => e instanceof ChatdError && e.code === 'NOT_MEMBER' && e.id === '8');
  assert.deepEqual([...a.rooms.keys()], ['7']);
});

test('a join asked for before connecting is sent after login', async () => {
  const { chat } = setup();
  const a = chat('1');
  const joined = a.join('7');
  a.connect();
  assert.equal((await joined).joined, true);
});

test('the three RTMSG addressings reach the room, one user, or one device, never the sender', async () => {
  const { chat } = setup();
  const a = chat('1');
  const b1 = chat('2');
  const b2 = chat('2');
  const c = chat('3');
  const all = [a, b1, b2, c];
  await connected(...all);
  await Promise.all(all.map((x) => x.join('7')));
  const inbox = all.map((x) => record(x, 'message'));

  a.send('7', 'to everyone', { msgtype: 1 });
  a.send('7', 'to user 2', { userid: '2', msgtype: 2 });
  a.send('7', new Uint8Array([0, 255]), { userid: 2n, clientid: b2.clientid, msgtype: 3 });
  await settle();

  const seen = (i) => inbox[i].map((m) => [m.msgtype, m.userid, m.clientid]);
  const from = ['1', a.clientid];
  assert.deepEqual(seen(0), [], 'the sender gets nothing back');
  assert.deepEqual(seen(1), [[1, ...from], [2, ...from]]);
  assert.deepEqual(seen(2), [[1, ...from], [2, ...from], [3, ...from]]);
  assert.deepEqual(seen(3), [[1, ...from]]);
  assert.equal(inbox[3][0].text, 'to everyone');
  assert.deepEqual(inbox[2][2].data, new Uint8Array([0, 255]));
  assert.equal(inbox[2][2].chatid, '7');
});

test('send refuses what the server would refuse, before sending', async () => {
  const { server, chat } = setup();
  const a = chat('1');
  assert.throws(() => a.send('7', 'x'), (e) => e.code === 'NOT_CONNECTED');
  await connected(a);
  assert.throws(() => a.send('7', 'x'), (e) => e.code === 'NOT_JOINED');
  await a.join('7');
  assert.throws(() => a.send('7', 'x', { clientid: 5 }), (e) => e.code === 'BAD_ADDRESS');
  assert.throws(() => a.send('7', 'x', { msgtype: 256 }), RangeError);
  assert.throws(() => a.send('0x7', 'x'), TypeError);
  assert.equal(server.conns[0].received.filter((c) => c.op === 'rtmsg').length, 0);
});

test('in-call: heartbeats repeat while in the call, the flag follows two users, and stops after setInCall(false)', async () => {
  const { server, clock, chat } = setup();
  const a = chat('1', { heartbeatIntervalMs: 3000 });
  const b = chat('2', { heartbeatIntervalMs: 3000 });
  await connected(a, b);
  await a.join('7');
  await b.join('7');
  const flags = record(b, 'incall');
  a.setInCall('7', true);
  await settle();
  assert.deepEqual(flags, [], 'one user is not a call');
  b.setInCall('7', true);
  await settle();
  assert.deepEqual(flags, [{ chatid: '7', inCall: true }]);
  assert.equal(b.room('7').inCall, true);

  const beats = () => server.conns[0].received.filter((c) => c.op === 'in_call' && c.status === 1).length;
  assert.equal(beats(), 1);
  await clock.advance(9000);
  assert.equal(beats(), 4, 'one heartbeat every 3 s');

  a.setInCall('7', false);
  await settle();
  assert.deepEqual(flags.at(-1), { chatid: '7', inCall: false });
  await clock.advance(9000);
  assert.equal(beats(), 4, 'no heartbeat after leaving the call');
  assert.deepEqual(server.conns[0].received.at(-1), { op: 'in_call', chatid: 7n, status: 0 });
});

test('a lost connection reconnects after a jittered backoff, re-joins its rooms and re-announces its call', async () => {
  const { server, clock, chat } = setup();
  const a = chat('1', { minReconnectDelayMs: 1000 });
  const b = chat('2');
  await connected(a, b);
  await a.join('7');
  await b.join('7');
  a.setInCall('7', true);
  b.setInCall('7', true);
  await settle();
  assert.equal(server.flag('7'), 1);

  const connecting = record(a, 'connecting');
  const joins = record(a, 'join');
  server.drop(server.live(CHATD).find((c) => c.user === '1'));
  await settle();
  assert.equal(a.state, 'connecting');
  assert.equal(a.room('7').joined, false);
  assert.equal(a.room('7').inCall, null);
  assert.equal(server.flag('7'), 0, 'the server ended the call of the lost connection');
  // random() = 0.5: half the delay plus a quarter of it.
  assert.equal(connecting.length, 1);
  assert.equal(connecting[0].delayMs, 750);
  assert.ok(connecting[0].error instanceof ChatdError);

  await clock.advance(749);
  assert.equal(a.state, 'connecting', 'not before the delay');
  await clock.advance(1);
  assert.equal(a.state, 'connected');
  assert.equal(a.clientid, 3, 'a new connection gets a new client id');
  assert.deepEqual(joins, [{ chatid: '7', inCall: false }]);
  assert.equal(server.flag('7'), 1, 'OP_IN_CALL 1 re-sent after the re-join');
  assert.equal(a.room('7').inCall, true);
});

test('backoff doubles per failed attempt up to the maximum, with jitter in [d/2, d]', async () => {
  for (const [rnd, want] of [
    [0, [500, 1000, 2000, 2500, 2500]],
    [1, [1000, 2000, 4000, 5000, 5000]],
  ]) {
    const { server, clock, chat } = setup();
    server.refuse = true;
    const a = chat('1', { minReconnectDelayMs: 1000, maxReconnectDelayMs: 5000, random: () => rnd });
    const connecting = record(a, 'connecting');
    a.connect();
    await settle();
    for (let i = 0; i < 4; i++) await clock.advance(connecting.at(-1).delayMs);
    assert.deepEqual(
      connecting.map((c) => c.delayMs),
      want,
    );
    // Success resets the backoff.
    server.refuse = false;
    await clock.advance(connecting.at(-1).delayMs);
    assert.equal(a.state, 'connected');
    server.drop(server.live(CHATD)[0]);
    await settle();
    assert.equal(connecting.at(-1).delayMs, want[0]);
    a.disconnect();
  }
});

test('a token provider is asked again on every attempt', async () => {
  const { server, clock, chat } = setup();
  let calls = 0;
  const a = chat('1', { token: async () => fakeToken('1', { valid: ++calls > 1 }) });
  const errors = record(a, 'error');
  a.connect();
  await settle();
  assert.equal(a.state, 'connecting');
  assert.equal(errors[0].error.code, 'AUTH_FAILED');
  await clock.advance(500);
  assert.equal(a.state, 'connected');
  assert.equal(calls, 2);
  assert.equal(server.live(CHATD).length, 1);
});

test('a static token the server refuses ends in disconnected, without retrying', async () => {
  const { server, clock, chat } = setup();
  const a = chat('1', { token: fakeToken('1', { valid: false }) });
  a.connect();
  await assert.rejects(a.ready(), (e) => e.code === 'AUTH_FAILED');
  assert.equal(a.state, 'disconnected');
  await clock.advance(60000);
  assert.equal(server.conns.length, 1);
  assert.deepEqual(clock.pending(), []);
});

test('keepalives go out every interval; a server that stops answering is left and reconnected', async () => {
  const { server, clock, chat } = setup();
  const a = chat('1', { keepaliveIntervalMs: 30000, keepaliveTimeoutMs: 10000 });
  await connected(a);
  await clock.advance(60000);
  assert.equal(server.conns[0].received.filter((c) => c.op === 'keepalive').length, 2);
  assert.equal(a.state, 'connected', 'answered keepalives keep it up');

  server.muteKeepalive = true;
  const errors = record(a, 'error');
  await clock.advance(30000 + 9999);
  assert.equal(a.state, 'connected');
  await clock.advance(1);
  assert.equal(a.state, 'connecting');
  assert.match(errors[0].error.message, /OP_KEEPALIVE/);
  assert.equal(server.conns[0].closed, true, 'the dead connection is closed');
});

test('garbage from the server is a protocol error: the client closes and reconnects', async () => {
  const { server, clock, chat } = setup();
  const a = chat('1');
  await connected(a);
  const errors = record(a, 'error');
  server.conns[0].peer.send(Uint8Array.of(0x42));
  await settle();
  assert.ok(errors[0].error instanceof ProtocolError);
  assert.equal(server.conns[0].closed, true);
  await clock.advance(500);
  assert.equal(a.state, 'connected');
});

test('over WebSocket framing a server message that ends inside a command is a protocol error', async () => {
  const { server, chat } = setup();
  const a = chat('1');
  await connected(a);
  const errors = record(a, 'error');
  const join = encode(CHATD, S2C, { op: 'join', chatid: 7n });
  server.conns[0].peer.send(join.subarray(0, 5));
  await settle();
  assert.match(errors[0].error.message, /ends inside a command/);
  assert.equal(a.state, 'connecting');
});

test('a closing OP_ERROR (SHUTTING_DOWN) is reported and followed by a reconnect', async () => {
  const { server, clock, chat } = setup();
  const a = chat('1');
  await connected(a);
  const errors = record(a, 'error');
  server._fatal(server.conns[0], 10, 0);
  await settle();
  assert.equal(errors[0].error.code, 'SHUTTING_DOWN');
  assert.equal(a.state, 'connecting');
  await clock.advance(500);
  assert.equal(a.state, 'connected');
});

test('leave is answered; a removal by the server is a leave the client does not undo', async () => {
  const { server, clock, chat } = setup({ 7: ['1'], 8: ['1'] });
  const a = chat('1');
  await connected(a);
  await a.join('7');
  await a.join('8');
  const leaves = record(a, 'leave');
  await a.leave('7');
  assert.deepEqual(leaves, [{ chatid: '7', reason: 'LEFT' }]);
  server.removeMember('8', '1');
  await settle();
  assert.deepEqual(leaves.at(-1), { chatid: '8', reason: 'REMOVED' });
  assert.deepEqual([...a.rooms.keys()], []);
  server.drop(server.conns[0]);
  await clock.advance(500);
  assert.equal(a.state, 'connected');
  assert.deepEqual(
    server.live(CHATD)[0].received.filter((c) => c.op === 'join'),
    [],
    'no room re-joined',
  );
});

test('disconnect() closes the connection and stops every timer', async () => {
  const { server, clock, chat } = setup();
  const a = chat('1');
  await connected(a);
  await a.join('7');
  a.setInCall('7', true);
  const ended = a.once('disconnected');
  a.disconnect();
  assert.equal((await ended).reason, 'client');
  assert.equal(a.state, 'disconnected');
  assert.equal(server.conns[0].closed, true);
  assert.deepEqual(clock.pending(), []);
  // connect() again restores the wanted rooms and the call.
  a.connect();
  await a.ready();
  await settle();
  assert.equal(a.room('7').joined, true);
  assert.equal(server.live(CHATD)[0].inCall.has('7'), true);
});

test('presence: the login dump fills the live map, updates follow, the own value comes as userid 0', async () => {
  const { chat, pres } = setup({ 7: ['1', '2', '3'] });
  void chat;
  const p2 = pres('2', { presence: PRESENCE.AWAY });
  await connected(p2);
  const p1 = pres('1');
  await connected(p1);
  assert.deepEqual(p1.online, new Map([['2', PRESENCE.AWAY]]));
  assert.equal(p1.presence, PRESENCE.ONLINE);

  const events = record(p1, 'presence');
  p2.setPresence(PRESENCE.CHATTY);
  await settle();
  assert.deepEqual(events, [{ userid: '2', presence: 4, previous: 2 }]);
  assert.equal(p1.get(2n), 4);
  assert.equal(p2.presence, 4);

  const own = record(p1, 'self');
  p1.setPresence(PRESENCE.AWAY, { auto: true });
  await settle();
  assert.deepEqual(own, [{ presence: PRESENCE.AWAY }]);

  p2.disconnect();
  await settle();
  assert.deepEqual(events.at(-1), { userid: '2', presence: 0, previous: 4 });
  assert.equal(p1.online.size, 0);
});

test('presence after a reconnect: the new dump is applied as a diff, and this client re-announces its value', async () => {
  const { server, clock, pres } = setup({ 7: ['1', '2', '3'] });
  const p1 = pres('1');
  const p2 = pres('2');
  const p3 = pres('3', { presence: PRESENCE.DND });
  await connected(p1, p2, p3);
  p1.setPresence(PRESENCE.CHATTY, { auto: true });
  await settle();
  assert.deepEqual(p1.online, new Map([['2', 3], ['3', 1]]));

  const events = record(p1, 'presence');
  server.drop(server.live('statusd').find((c) => c.user === '1'));
  await settle();
  // While p1 is away, user 3 leaves and user 2 changes.
  p3.disconnect();
  p2.setPresence(PRESENCE.AWAY);
  await settle();
  assert.deepEqual(events, [], 'no event while reconnecting: the map keeps the last view');
  await clock.advance(500);
  assert.equal(p1.state, 'connected');
  assert.deepEqual(p1.online, new Map([['2', 2]]));
  assert.deepEqual(events, [
    { userid: '3', presence: 0, previous: 1 },
    { userid: '2', presence: 2, previous: 3 },
  ]);
  const hello = server.live('statusd').find((c) => c.user === '1').received[1];
  assert.deepEqual(hello, { op: 'hello', version: 1, presence: 0x80 | PRESENCE.CHATTY, reserved: 0 });
  assert.equal(server.presenceOf('1'), PRESENCE.CHATTY);
});

test('presence after a terminal disconnect: everyone goes to 0, with events', async () => {
  const { pres } = setup({ 7: ['1', '2'] });
  const p1 = pres('1');
  const p2 = pres('2');
  await connected(p2, p1);
  const events = record(p1, 'presence');
  p1.disconnect();
  assert.deepEqual(events, [{ userid: '2', presence: 0, previous: 3 }]);
  assert.equal(p1.online.size, 0);
  assert.equal(p1.presence, 0);
});

test('options are checked when the client is made', () => {
  assert.throws(() => new ChatdClient({ token: 't' }), /url/);
  assert.throws(() => new ChatdClient({ url: CHAT_URL }), /token/);
  assert.throws(() => new ChatdClient({ url: 'tcp://127.0.0.1:7400', token: 't' }), /tcpTransport/);
  assert.throws(() => new ChatdClient({ url: CHAT_URL, token: 't', heartbeatIntervalMs: 0 }), RangeError);
  assert.throws(() => new PresenceClient({ url: PRES_URL, token: 't', presence: 128 }), RangeError);
});

test('without a WebSocket constructor the client says how to get one', async () => {
  const saved = globalThis.WebSocket;
  try {
    delete globalThis.WebSocket;
    const a = new ChatdClient({ url: CHAT_URL, token: fakeToken('1') });
    a.connect();
    await assert.rejects(a.ready(), /WebSocket constructor/);
    assert.equal(a.state, 'disconnected');
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});
