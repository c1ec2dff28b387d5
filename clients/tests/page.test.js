// The demo page in a real headless Chromium, without the chatd binary: the
// pages' WebSocket connections are routed by Playwright to the library's
// in-memory test server (clients/js/test/support/fake-server.js). What
// this checks is the page and the browser: the WebSocket transport in
// Chromium, the UI, and a real WebRTC call (data channel, fake audio,
// host candidates on this machine) whose signalling goes through OP_RTMSG
// to one device. e2e.test.js runs the same story against the real server.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer, fakeToken } from '../js/test/support/fake-server.js';
import { launch, startStatic, pageUrl, shows, chromiumPath, watchErrors } from './support.js';

const chromium = chromiumPath();
const skip = chromium.path ? false : chromium.why;
if (skip) console.log(`# browser tests skipped: ${skip}`);

let browser;
let site;
before(async () => {
  if (skip) return;
  browser = await launch();
  site = await startStatic();
});
after(async () => {
  await browser?.close();
  await site?.close();
});

/** A page whose ws://fake/... connections reach `fake`. */
async function fakePage(fake, settings, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = watchErrors(page, name);
  await page.routeWebSocket(/^ws:\/\/fake\//, (ws) => {
    const service = new URL(ws.url()).pathname.slice(1);
    const conn = fake.attach(service, {
      send: (bytes) => ws.send(Buffer.from(bytes)),
      close: () => ws.close({ code: 1000 }),
    });
    ws.onMessage((m) => {
      if (typeof m === 'string') return fake.drop(conn);
      conn.receive(new Uint8Array(m));
    });
    ws.onClose(() => conn.gone());
  });
  await page.goto(
    pageUrl(site.url, { chatd: 'ws://fake/chatd', statusd: 'ws://fake/statusd', autoconnect: '1', name, ...settings }),
  );
  return { page, errors };
}

test('two pages chat, see each other online, call over WebRTC with OP_RTMSG signalling, and the flag follows the call', { skip }, async () => {
  const fake = new FakeServer({ members: { 7: ['1', '2'] } });
  const a = await fakePage(fake, { token: fakeToken(1), room: '7' }, 'A');
  const b = await fakePage(fake, { token: fakeToken(2), room: '7' }, 'B');
  const pages = [a.page, b.page];
  let passed = false;
  try {
    for (const p of pages) {
      await shows(p, '#conn[data-chatd="connected"][data-statusd="connected"]', 'logged in');
      await shows(p, '#rooms li[data-chatid="7"][data-incall="0"]', 'room 7 joined, no call');
    }
    // Presence: each sees the other online.
    await shows(a.page, '#online li[data-userid="2"][data-presence="3"]', 'A sees user 2 online');
    await shows(b.page, '#online li[data-userid="1"][data-presence="3"]', 'B sees user 1 online');

    // Chat text, room-wide.
    await a.page.fill('#text', 'hello from A');
    await a.page.click('#send');
    await shows(b.page, '#messages li[data-userid="1"]', 'B got A\'s message');
    assert.match(await b.page.locator('#messages li[data-userid="1"]').innerText(), /hello from A/);

    // Devices found each other through DEVICE_HELLO / DEVICE_HERE.
    const bClient = await b.page.locator('#me').getAttribute('data-clientid');
    await shows(a.page, `#devices li[data-userid="2"][data-clientid="${bClient}"]`, 'A sees B\'s device');

    // A calls B's device; B answers.
    await a.page.click(`#devices li[data-userid="2"][data-clientid="${bClient}"] button.call`);
    await shows(b.page, '#call[data-state="ringing"][data-peer-userid="1"]', 'B rings');
    await b.page.click('#answer');
    for (const p of pages) {
      await shows(p, '#call[data-state="connected"]', 'call connected');
      await shows(p, '#dc[data-state="open"]', 'data channel open');
      await shows(p, '#room-flag[data-incall="1"]', 'flag 1 during the call');
    }
    assert.equal(fake.flag('7'), 1);
    assert.equal(await a.page.locator('#media').getAttribute('data-media'), 'audio', 'fake microphone sent');

    // Text over the data channel, both ways.
    await a.page.fill('#dc-text', 'ping over webrtc');
    await a.page.click('#dc-send');
    await shows(b.page, '#dc-log li[data-from="peer"]', 'B got the data channel text');
    assert.equal(await b.page.locator('#dc-log li[data-from="peer"]').innerText(), 'peer: ping over webrtc');
    await b.page.fill('#dc-text', 'pong');
    await b.page.click('#dc-send');
    await shows(a.page, '#dc-log li[data-from="peer"]', 'A got the answer');

    // The signalling went to one device each time, never room-wide.
    const signalling = fake.conns
      .flatMap((c) => c.received)
      .filter((c) => c.op === 'rtmsg' && c.msgtype >= 0x20 && c.msgtype <= 0x23);
    assert.ok(signalling.some((c) => c.msgtype === 0x20) && signalling.some((c) => c.msgtype === 0x21));
    assert.ok(signalling.some((c) => c.msgtype === 0x22), 'ICE candidates were signalled');
    assert.ok(signalling.every((c) => c.userid !== 0n && c.clientid !== 0));

    // Hang up: both pages end the call and the flag goes back to 0.
    await a.page.click('#hangup');
    for (const p of pages) {
      await shows(p, '#call[data-state="ended"]', 'call ended');
      await shows(p, '#room-flag[data-incall="0"]', 'flag 0 after the hang-up');
    }
    assert.equal(fake.flag('7'), 0);
    passed = true;
  } finally {
    for (const p of pages) await p.context().close();
    const errors = [...a.errors, ...b.errors];
    if (!passed && errors.length) console.log(`# page errors:\n${errors.join('\n')}`);
  }
  assert.deepEqual([...a.errors, ...b.errors], [], 'no page errors');
});
