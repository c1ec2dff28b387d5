// The WebSocket transport with an injected WebSocket constructor: what it
// asks of the socket (binary as ArrayBuffer, no subprotocol), how it turns
// socket events into the client's callbacks, and that a text message from
// the server is refused as a protocol error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatdClient, ProtocolError, webSocketTransport, encode, CHATD, S2C } from '../index.js';
import { fakeToken } from './support/fake-server.js';
import { settle } from './support/clock.js';

/** Records what the transport does to it; the test plays the server. */
class FakeWebSocket {
  static made = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.made.push(this);
  }
  send(bytes) {
    this.sent.push(Uint8Array.from(bytes));
  }
  close(code) {
    this.closedWith = code;
  }
}

function serverMessage(...cmds) {
  const parts = cmds.map((c) => encode(CHATD, S2C, c));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out.buffer;
}

test('the WebSocket transport logs in with binary messages and decodes several commands per message', async () => {
  FakeWebSocket.made = [];
  const c = new ChatdClient({ url: 'ws://h/chatd', token: fakeToken(1), transport: webSocketTransport({ WebSocket: FakeWebSocket }) });
  c.connect();
  await settle();
  const ws = FakeWebSocket.made[0];
  assert.equal(ws.url, 'ws://h/chatd');
  assert.equal(ws.protocols, undefined, 'no subprotocol asked');
  assert.equal(ws.binaryType, 'arraybuffer');
  ws.onopen();
  assert.equal(ws.sent.length, 1, 'OP_AUTH and OP_HELLO in one message');
  assert.equal(ws.sent[0][0], 0x06);
  const joined = c.join(7);
  ws.onmessage({ data: serverMessage({ op: 'hello', clientid: 9 }, { op: 'join', chatid: 7n }, { op: 'in_call', chatid: 7n, status: 1 }) });
  assert.equal(c.state, 'connected');
  assert.deepEqual(await joined, { chatid: '7', joined: true, inCall: true, inCallSelf: false });
  c.disconnect();
  assert.equal(ws.closedWith, 1000);
});

test('a text message from the server is a protocol error; a close event is a lost connection', async () => {
  FakeWebSocket.made = [];
  const c = new ChatdClient({
    url: 'ws://h/chatd',
    token: fakeToken(1),
    transport: webSocketTransport({ WebSocket: FakeWebSocket }),
    minReconnectDelayMs: 60000,
  });
  const errors = [];
  c.on('error', (e) => errors.push(e.error));
  c.connect();
  await settle();
  const ws = FakeWebSocket.made[0];
  ws.onopen();
  ws.onmessage({ data: serverMessage({ op: 'hello', clientid: 9 }) });
  ws.onmessage({ data: 'hello?' });
  assert.ok(errors[0] instanceof ProtocolError);
  assert.equal(c.state, 'connecting');
  assert.equal(ws.closedWith, 1000, 'the client closed the socket');

  // The next attempt's socket closes by itself: reported with its code.
  c.disconnect();
  c.connect();
  await settle();
  const ws2 = FakeWebSocket.made[1];
  ws2.onclose({ code: 1008, reason: 'policy', wasClean: true });
  assert.match(errors.at(-1).message, /1008 policy/);
  c.disconnect();
});
