// Run by e2e.test.js in a child process whose NODE_EXTRA_CA_CERTS holds a
// test CA (Node's WebSocket reads extra CAs only at start): two wss://
// chatd clients of room 9 exchange a message, a wss:// statusd client
// logs in. Prints "wss ok" and exits 0, or throws.
//
//     node wss-check.js CHATD_URL STATUSD_URL TOKEN_USER1 TOKEN_USER2

import { ChatdClient, PresenceClient } from '../../index.js';

const [chatdUrl, statusdUrl, t1, t2] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.error('wss check timed out');
  process.exit(1);
}, 10000);

const a = new ChatdClient({ url: chatdUrl, token: t1, reconnect: false });
const b = new ChatdClient({ url: chatdUrl, token: t2, reconnect: false });
const p = new PresenceClient({ url: statusdUrl, token: t1, reconnect: false });
for (const c of [a, b, p]) c.connect();
await Promise.all([a.ready(), b.ready(), p.ready()]);
await a.join(9);
await b.join(9);
const got = b.once('message');
a.send(9, 'over wss');
const m = await got;
if (m.text !== 'over wss') throw new Error(`got ${m.text}`);
for (const c of [a, b, p]) c.disconnect();
clearTimeout(deadline);
console.log('wss ok');
