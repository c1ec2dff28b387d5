// End-to-end: the client library against the real chatd binary over real
// loopback sockets, once per transport: raw TCP (any chatd) and WebSocket
// (a chatd with --ws-listen; Node 22+, or Node 20 run with
// --experimental-websocket). Tests of a transport or feature the binary or
// Node lacks are skipped with the reason. Every wait is bounded (WAIT_MS).
//
//     node --test test/e2e.test.js        # CHATD_BIN=path/to/chatd to pick the binary

import { test, test as nodeTest, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChatdClient, PresenceClient, PRESENCE } from '../index.js';
import { tcpTransport } from '../tcp.js';
import { startServer, serverSupport, waitUntil, next, selfSignedCert, WAIT_MS } from './support/server.js';

const support = serverSupport();
const noServer = support.ok ? false : support.why;
const noWs =
  noServer ||
  (!support.ws && 'this chatd has no --ws-listen (WebSocket is not in this build yet)') ||
  (typeof globalThis.WebSocket !== 'function' && 'this Node has no global WebSocket (Node 20: run with --experimental-websocket)');
const noTls = noServer || (!support.tls && 'this chatd has no --tls-cert (TLS is not in this build yet)');
if (noServer) console.log(`# e2e skipped: ${noServer}`);
else {
  if (noWs) console.log(`# WebSocket e2e skipped: ${noWs}`);
  if (noTls) console.log(`# TLS e2e skipped: ${noTls}`);
}

const FAST = { minReconnectDelayMs: 50, maxReconnectDelayMs: 400 };

/** How each transport reaches a running server. */
const TRANSPORTS = {
  tcp: { skip: noServer, url: (s, service) => s.tcpUrl(service), opts: () => ({ transport: tcpTransport() }) },
  ws: { skip: noWs, url: (s, service) => s.wsUrl(service), opts: () => ({}) },
};

// One server for the tests below (with WebSocket when the binary has it).
let server;
let nextRoom = 100;
before(async () => {
  if (!noServer) server = await startServer({ ws: !noWs });
});
after(async () => {
  await server?.stop();
});

/** Clients made in a test, disconnected after it. */
let made = [];
function track(c) {
  made.push(c);
  return c;
}
async function cleanup() {
  for (const c of made) c.disconnect();
  made = [];
}

async function chat(t, userid, extra = {}) {
  const tr = TRANSPORTS[t];
  return track(new ChatdClient({ url: tr.url(server, 'chatd'), token: await server.token(userid), ...tr.opts(), ...extra }));
}

async function pres(t, userid, extra = {}) {
  const tr = TRANSPORTS[t];
  return track(new PresenceClient({ url: tr.url(server, 'statusd'), token: await server.token(userid), ...tr.opts(), ...extra }));
}

async function up(...clients) {
  for (const c of clients) c.connect();
  await Promise.all(clients.map((c) => withTimeout(c.ready(), `${c.service} login`)));
}

function withTimeout(p, what, ms = WAIT_MS) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

for (const [t, tr] of Object.entries(TRANSPORTS)) {
  describe(`over ${t}`, () => {
    after(cleanup);
    // Skips are set per test so that the runner's summary counts them.
    const test = (name, fn) => nodeTest(name, { skip: tr.skip }, fn);

    test('login gives a client id; the three addressings reach the room, one user, one device', async () => {
      const room = String(nextRoom++);
      await server.putRoom(room, [1, 2, 3]);
      const a = await chat(t, 1);
      const b1 = await chat(t, 2);
      const b2 = await chat(t, 2);
      const c = await chat(t, 3);
      const all = [a, b1, b2, c];
      await up(...all);
      assert.equal(new Set(all.map((x) => x.clientid)).size, 4, 'distinct client ids');
      await Promise.all(all.map((x) => x.join(room)));

      const inbox = all.map(() => []);
      all.forEach((x, i) => x.on('message', (m) => inbox[i].push(m)));
      // The last message goes to everyone, so its arrival means every
      // earlier one has arrived (one sender, one room: in order).
      a.send(room, 'to user 2', { userid: '2', msgtype: 2 });
      a.send(room, 'to b2', { userid: '2', clientid: b2.clientid, msgtype: 3 });
      a.send(room, 'to all', { msgtype: 1 });
      await Promise.all([b1, b2, c].map((x) => next(x, 'message', (m) => m.msgtype === 1)));

      const seen = (i) => inbox[i].map((m) => `${m.msgtype}:${m.text}:${m.userid}:${m.clientid === a.clientid}`);
      assert.deepEqual(seen(0), []);
      assert.deepEqual(seen(1), ['2:to user 2:1:true', '1:to all:1:true']);
      assert.deepEqual(seen(2), ['2:to user 2:1:true', '3:to b2:1:true', '1:to all:1:true']);
      assert.deepEqual(seen(3), ['1:to all:1:true']);
      assert.equal(inbox[3][0].chatid, room);
    });

    test('a binary payload of 60 KiB arrives byte for byte', async () => {
      const room = String(nextRoom++);
      await server.putRoom(room, [1, 2]);
      const a = await chat(t, 1);
      const b = await chat(t, 2);
      await up(a, b);
      await a.join(room);
      await b.join(room);
      const data = Uint8Array.from({ length: 60 * 1024 }, (_, i) => (i * 7) & 0xff);
      const got = next(b, 'message');
      a.send(room, data, { msgtype: 200 });
      const m = await got;
      assert.equal(m.msgtype, 200);
      assert.deepEqual(m.data, data);
    });

    test('joining a room the user is not in is NOT_MEMBER, and the connection goes on', async () => {
      const room = String(nextRoom++);
      await server.putRoom(room, [1]);
      const b = await chat(t, 2);
      await up(b);
      await assert.rejects(b.join(room), (e) => e.code === 'NOT_MEMBER' && e.id === room);
      assert.equal(b.state, 'connected');
      await server.api('PUT', `/v1/rooms/${room}/members/2`);
      assert.equal((await b.join(room)).joined, true);
    });

    test('the in-call flag is 1 while two users heartbeat, 0 after one hangs up; the admin API agrees', async () => {
      const room = String(nextRoom++);
      await server.putRoom(room, [1, 2]);
      const a = await chat(t, 1, { heartbeatIntervalMs: 2000 });
      const b = await chat(t, 2, { heartbeatIntervalMs: 2000 });
      await up(a, b);
      await a.join(room);
      await b.join(room);
      const on = next(b, 'incall', (e) => e.chatid === room && e.inCall);
      a.setInCall(room, true);
      b.setInCall(room, true);
      await on;
      const r = await server.room(room);
      assert.equal(r.in_call, true);
      assert.deepEqual([...r.call_users].sort(), ['1', '2']);
      const off = next(a, 'incall', (e) => e.chatid === room && !e.inCall);
      b.setInCall(room, false);
      await off;
      assert.equal((await server.room(room)).in_call, false);
    });

    test('presence: the live map shows who is online, and follows changes', async () => {
      const room = String(nextRoom++);
      const [u1, u2] = [1000 + nextRoom, 2000 + nextRoom];
      await server.putRoom(room, [u1, u2]);
      const p1 = await pres(t, u1);
      await up(p1);
      assert.equal(p1.get(u2), 0);
      const p2 = await pres(t, u2, { presence: PRESENCE.AWAY });
      const seen = next(p1, 'presence', (e) => e.userid === String(u2));
      await up(p2);
      assert.deepEqual(await seen, { userid: String(u2), presence: PRESENCE.AWAY, previous: 0 });
      assert.equal(p2.online.get(String(u1)), PRESENCE.ONLINE);
      const changed = next(p1, 'presence', (e) => e.userid === String(u2) && e.presence === PRESENCE.CHATTY);
      p2.setPresence(PRESENCE.CHATTY);
      await changed;
      const gone = next(p1, 'presence', (e) => e.userid === String(u2) && e.presence === 0);
      p2.disconnect();
      await gone;
      assert.equal(p1.online.has(String(u2)), false);
    });
  });
}

describe('WebSocket and TCP clients mixed', () => {
  after(cleanup);

  test('a WebSocket client and a TCP client of one room see each other as if on one transport', { skip: noWs }, async () => {
    const room = String(nextRoom++);
    const [u1, u2] = [3000 + nextRoom, 4000 + nextRoom];
    await server.putRoom(room, [u1, u2]);
    const w = await chat('ws', u1);
    const c = await chat('tcp', u2);
    const pw = await pres('ws', u1);
    const pc = await pres('tcp', u2);
    await up(w, c, pw, pc);
    await waitUntil(() => pw.get(u2) === PRESENCE.ONLINE && pc.get(u1) === PRESENCE.ONLINE, 'presence both ways');
    await w.join(room);
    await c.join(room);
    const toC = next(c, 'message');
    w.send(room, 'from ws');
    assert.equal((await toC).text, 'from ws');
    const toW = next(w, 'message');
    c.send(room, 'from tcp', { userid: String(u1), clientid: w.clientid });
    assert.equal((await toW).text, 'from tcp');
    const on = next(w, 'incall', (e) => e.inCall);
    w.setInCall(room, true);
    c.setInCall(room, true);
    await on;
    assert.equal((await server.room(room)).in_call, true);
  });
});

describe('server restart', () => {
  test('after SIGTERM and a restart the clients reconnect, re-join, re-announce the call and presence', { skip: noServer }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-js-restart-'));
    const ws = !noWs;
    const t = ws ? 'ws' : 'tcp';
    const tr = TRANSPORTS[t];
    let s = await startServer({ ws, dataDir: path.join(dir, 'data') });
    const clients = [];
    try {
      await s.putRoom(7, [1, 2]);
      const mk = async (Cls, service, user, extra = {}) => {
        const c = new Cls({ url: tr.url(s, service), token: await s.token(user), ...tr.opts(), ...FAST, ...extra });
        clients.push(c);
        return c;
      };
      const a = await mk(ChatdClient, 'chatd', 1, { heartbeatIntervalMs: 2000 });
      const b = await mk(ChatdClient, 'chatd', 2, { heartbeatIntervalMs: 2000 });
      const pa = await mk(PresenceClient, 'statusd', 1, { presence: PRESENCE.CHATTY });
      const pb = await mk(PresenceClient, 'statusd', 2);
      await up(a, b, pa, pb);
      await a.join(7);
      await b.join(7);
      a.setInCall(7, true);
      b.setInCall(7, true);
      await next(a, 'incall', (e) => e.inCall);
      await waitUntil(() => pb.get(1) === PRESENCE.CHATTY, 'presence of user 1');

      const lost = next(a, 'connecting', (e) => e.error?.code === 'SHUTTING_DOWN');
      const addrs = s.addrs;
      await s.stop();
      await lost;
      s = await startServer({ ws, dataDir: path.join(dir, 'data'), listen: addrs });

      // Each client logs in again, re-joins room 7 and re-sends OP_IN_CALL 1;
      // the statusd clients re-announce their presence.
      await Promise.all([a, b, pa, pb].map((c) => next(c, 'connected', () => true, 2 * WAIT_MS)));
      await waitUntil(async () => (await s.room(7))?.in_call === true, 'in_call after the restart');
      assert.equal(a.room(7).joined, true);
      await waitUntil(() => a.room(7).inCall === true, 'the flag as client a sees it');
      await waitUntil(() => pb.get(1) === PRESENCE.CHATTY, 'presence re-announced');
    } finally {
      for (const c of clients) c.disconnect();
      await s.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('TLS', () => {
  test('tls:// (TCP) and wss:// clients log in and talk through a server with --tls-cert', { skip: noTls }, async (tt) => {
    const pair = selfSignedCert();
    if (!pair) return tt.skip('no openssl to make a certificate');
    const s = await startServer({ ws: !noWs, args: ['--tls-cert', pair.cert, '--tls-key', pair.key] });
    const clients = [];
    try {
      // The admin API is https now, signed by our own CA (adminReq).
      const tokenOf = (user) => adminToken(s, pair, user);
      await adminPut(s, pair, '/v1/rooms/9', { members: ['1', '2'] });
      const tls = tcpTransport({ tlsOptions: { ca: pair.certPem } });
      const a = new ChatdClient({ url: s.tcpUrl('chatd'), token: await tokenOf(1), transport: tls });
      const b = new ChatdClient({ url: s.tcpUrl('chatd'), token: await tokenOf(2), transport: tls });
      clients.push(a, b);
      await up(a, b);
      assert.match(s.tcpUrl('chatd'), /^tls:/);
      await a.join(9);
      await b.join(9);
      const got = next(b, 'message');
      a.send(9, 'over tls');
      assert.equal((await got).text, 'over tls');

      if (!noWs) {
        // Node's WebSocket takes extra CAs only at process start: a child.
        const script = fileURLToPath(new URL('./support/wss-check.js', import.meta.url));
        const { stdout } = await run(process.execPath, [...wsFlags(), script, s.wsUrl('chatd'), s.wsUrl('statusd'), await tokenOf(1), await tokenOf(2)], {
          env: { ...process.env, NODE_EXTRA_CA_CERTS: pair.cert },
        });
        assert.match(stdout, /^wss ok/m);
      }
    } finally {
      for (const c of clients) c.disconnect();
      await s.stop();
    }
  });
});

// ---- TLS helpers: the admin API is https there, with our own CA ----

function adminReq(s, pair, method, p, body) {
  return new Promise((resolve, reject) => {
    import('node:https').then(({ request }) => {
      const token = fs.readFileSync(path.join(s.dataDir, 'admin.token'), 'utf8').trim();
      const req = request(
        `${s.adminUrl}${p}`,
        { method, ca: pair.certPem, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } },
        (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode, text }));
        },
      );
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    }, reject);
  });
}

async function adminPut(s, pair, p, body) {
  const r = await adminReq(s, pair, 'PUT', p, body);
  assert.equal(r.status, 204, r.text);
}

async function adminToken(s, pair, user) {
  const r = await adminReq(s, pair, 'POST', '/v1/tokens', { userid: String(user), ttl_secs: 3600 });
  assert.equal(r.status, 200, r.text);
  return JSON.parse(r.text).token;
}

function wsFlags() {
  return process.execArgv.filter((a) => a === '--experimental-websocket');
}

function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { ...opts, timeout: 2 * WAIT_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stdout}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}
