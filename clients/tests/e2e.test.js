// The browser test, end to end: the real chatd binary (with its
// WebSocket listener), two demo pages in a real headless Chromium, and one
// TCP client of the library, all in room 7:
//
// - they exchange messages and see each other's presence;
// - page A calls page B's device: a WebRTC data channel opens, signalled
//   through chatd with OP_RTMSG to one device (the TCP client, in the same
//   room, never sees the signalling);
// - the room's flag goes to 1 while both are in the call (on both pages,
//   for the TCP client, and in the admin API's GET /v1/rooms/7) and back to
//   0 after the hang-up.
//
// Skipped, with the reason, without Chromium or a chatd that has
// --ws-listen. CHATD_BIN picks the binary (default target/debug/chatd).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ChatdClient, PresenceClient } from 'chatd-client';
import { tcpTransport } from 'chatd-client/tcp';
import { startServer, serverSupport, waitUntil } from '../js/test/support/server.js';
import { launch, startStatic, pageUrl, shows, chromiumPath, watchErrors, WAIT_MS } from './support.js';

const support = serverSupport();
const chromium = chromiumPath();
const skip =
  (!chromium.path && chromium.why) ||
  (!support.ok && support.why) ||
  (!support.ws && 'this chatd has no --ws-listen (WebSocket is not in this build yet)');
if (skip) console.log(`# browser e2e skipped: ${skip}`);

const TEXT = 0x01; // the demo's chat text msgtype (web/call.js MSG.TEXT)

let server;
let browser;
let site;
before(async () => {
  if (skip) return;
  server = await startServer({ ws: true });
  browser = await launch();
  site = await startStatic();
});
after(async () => {
  await browser?.close();
  await site?.close();
  await server?.stop();
});

async function openPage(userid, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = watchErrors(page, name);
  await page.goto(
    pageUrl(site.url, {
      chatd: server.wsUrl('chatd'),
      statusd: server.wsUrl('statusd'),
      token: await server.token(userid),
      room: '7',
      name,
      autoconnect: '1',
    }),
  );
  return { page, errors };
}

test('two pages and a TCP client: messages, presence, a WebRTC call signalled through chatd, and the in-call flag', { skip, timeout: 6 * WAIT_MS }, async () => {
  await server.putRoom(7, [1, 2, 3]);

  // The TCP client: user 3, chatd and statusd over raw TCP.
  const tcp = new ChatdClient({ url: server.tcpUrl('chatd'), token: await server.token(3), transport: tcpTransport() });
  const tcpPres = new PresenceClient({ url: server.tcpUrl('statusd'), token: await server.token(3), transport: tcpTransport() });
  const tcpGot = [];
  const tcpFlags = [];
  tcp.on('message', (m) => tcpGot.push(m));
  tcp.on('incall', (e) => tcpFlags.push(e.inCall));
  tcp.connect();
  tcpPres.connect();
  await tcp.ready();
  await tcpPres.ready();
  await tcp.join(7);

  const a = await openPage(1, 'A');
  const b = await openPage(2, 'B');
  const pages = [a.page, b.page];
  let passed = false;
  try {
    for (const p of pages) {
      await shows(p, '#conn[data-chatd="connected"][data-statusd="connected"]', 'page logged in over WebSocket');
      await shows(p, '#rooms li[data-chatid="7"][data-incall="0"]', 'room 7 joined, no call');
    }

    // Presence: everyone sees everyone else online, across transports.
    await shows(a.page, '#online li[data-userid="2"][data-presence="3"]', 'A sees user 2');
    await shows(a.page, '#online li[data-userid="3"][data-presence="3"]', 'A sees the TCP user 3');
    await shows(b.page, '#online li[data-userid="1"][data-presence="3"]', 'B sees user 1');
    await waitUntil(() => tcpPres.get(1) === 3 && tcpPres.get(2) === 3, 'the TCP client sees users 1 and 2 online');

    // Messages: TCP -> both pages; page A -> page B and the TCP client.
    tcp.send(7, 'hello from tcp', { msgtype: TEXT });
    for (const p of pages) await shows(p, '#messages li[data-userid="3"]', 'the TCP message on the page');
    assert.match(await b.page.locator('#messages li[data-userid="3"]').innerText(), /hello from tcp/);
    await a.page.fill('#text', 'hello from A');
    await a.page.click('#send');
    await shows(b.page, '#messages li[data-userid="1"]', 'A\'s message on B');
    await waitUntil(() => tcpGot.some((m) => m.msgtype === TEXT && m.text === 'hello from A' && m.userid === '1'), 'A\'s message at the TCP client');

    // A calls B's device (found through the room-wide DEVICE_HELLO); B answers.
    const bClient = await b.page.locator('#me').getAttribute('data-clientid');
    const device = `#devices li[data-userid="2"][data-clientid="${bClient}"]`;
    await shows(a.page, device, 'A sees B\'s device');
    await a.page.click(`${device} button.call`);
    await shows(b.page, '#call[data-state="ringing"][data-peer-userid="1"]', 'B rings');
    await b.page.click('#answer');
    for (const p of pages) {
      await shows(p, '#call[data-state="connected"]', 'call connected');
      await shows(p, '#dc[data-state="open"]', 'data channel open');
    }
    await a.page.fill('#dc-text', 'ping over webrtc');
    await a.page.click('#dc-send');
    await shows(b.page, '#dc-log li[data-from="peer"]', 'B got the data channel text');
    assert.equal(await b.page.locator('#dc-log li[data-from="peer"]').innerText(), 'peer: ping over webrtc');

    // The flag is 1 while both are in the call: pages, TCP client, server.
    for (const p of pages) await shows(p, '#room-flag[data-incall="1"]', 'flag 1 on the page');
    await waitUntil(() => tcp.room(7).inCall === true, 'flag 1 at the TCP client');
    const during = await server.room(7);
    assert.equal(during.in_call, true);
    assert.deepEqual([...during.call_users].sort(), ['1', '2']);

    // Signalling went to one device, so the TCP client in the room saw none.
    assert.deepEqual(
      tcpGot.filter((m) => m.msgtype >= 0x20 && m.msgtype <= 0x23),
      [],
      'no offer, answer, ICE or hang-up reached the TCP client',
    );

    // Hang up: the call ends on both pages and the flag goes back to 0.
    await a.page.click('#hangup');
    for (const p of pages) {
      await shows(p, '#call[data-state="ended"]', 'call ended');
      await shows(p, '#room-flag[data-incall="0"]', 'flag 0 after the hang-up');
    }
    await waitUntil(() => tcp.room(7).inCall === false, 'flag 0 at the TCP client');
    assert.equal((await server.room(7)).in_call, false);
    assert.deepEqual(tcpFlags, [false, true, false], 'the TCP client saw join (0), call (1), hang-up (0)');
    passed = true;
  } finally {
    for (const p of pages) await p.context().close();
    tcp.disconnect();
    tcpPres.disconnect();
    if (!passed) console.log(`# page errors:\n${[...a.errors, ...b.errors].join('\n')}\n# server log:\n${server.log()}`);
  }
  assert.deepEqual([...a.errors, ...b.errors], [], 'no page errors');
});
