// The chatd web demo: log in with a token, join rooms, chat, see who is
// online and each room's in-call flag, and call another device of a room
// over WebRTC with chatd carrying the signalling (call.js).
//
// Settings come from the form, prefilled from the URL's fragment (or query
// string): #chatd=WS_URL&statusd=WS_URL&token=JWT&room=ID&name=NAME
// &autoconnect=1&autoanswer=1. The fragment is never sent to a server.
//
// What the page shows is also in data-* attributes (see README.md), so a
// test can assert on it.

import { ChatdClient, PresenceClient } from '../js/index.js';
import { Call, MSG } from './call.js';

const $ = (id) => document.getElementById(id);
const PRESENCE_NAMES = ['offline', 'do not disturb', 'away', 'online', 'chatty'];

const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
// A random id per page load: tells apart this page's successive client ids.
// (crypto.randomUUID exists only in secure contexts; getRandomValues everywhere.)
const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
const device = randomId();
const deviceName = params.get('name') || `device ${device.slice(0, 4)}`;

let chat = null;
let pres = null;
let current = null; // the room shown
/** @type {Map<string, Map<string, {device: string, name: string, userid: string, clientid: number}>>} room -> device -> who */
const devices = new Map();
const messages = [];
/** @type {Call|null} */
let call = null;

for (const [key, input] of [['chatd', 'chatd-url'], ['statusd', 'statusd-url'], ['token', 'token']]) {
  if (params.has(key)) $(input).value = params.get(key);
}
if (params.has('room')) $('join-room').value = params.get('room');

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  connect();
});
$('disconnect').addEventListener('click', () => disconnect());
$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  join($('join-room').value.trim());
});
$('send-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  if (!current || !text) return;
  try {
    chat.send(current, text, { msgtype: MSG.TEXT });
    addMessage({ chatid: current, userid: chat.userid ?? '?', clientid: chat.clientid, text, mine: true });
    $('text').value = '';
  } catch (e) {
    log(`send: ${e.message}`);
  }
});
$('answer').addEventListener('click', () => call?.answer().catch((e) => log(`answer: ${e.message}`)));
$('hangup').addEventListener('click', () => hangUp('hangup'));
$('dc-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('dc-text').value;
  try {
    call.sendText(text);
    addItem($('dc-log'), `me: ${text}`, { from: 'me' });
    $('dc-text').value = '';
  } catch (e) {
    log(`data channel: ${e.message}`);
  }
});
window.addEventListener('pagehide', () => {
  hangUp('left');
  for (const chatid of devices.keys()) trySend(chatid, MSG.DEVICE_BYE, { device });
});

if (params.get('autoconnect') === '1' && $('token').value) connect();

// ---- connection ----

function connect() {
  disconnect();
  const token = $('token').value.trim();
  chat = new ChatdClient({ url: $('chatd-url').value.trim(), token });
  chat.on('state', ({ state }) => showState('chatd', state));
  chat.on('connected', ({ clientid }) => {
    $('me').dataset.userid = chat.userid ?? '';
    $('me').dataset.clientid = String(clientid);
    $('me').textContent = `you: user ${chat.userid ?? '?'}, client ${clientid}`;
  });
  chat.on('error', ({ error }) => log(`chatd: ${error.message}`));
  chat.on('join', ({ chatid }) => {
    // Every (re)join: our client id may be new, so say hello again.
    devices.set(chatid, new Map());
    trySend(chatid, MSG.DEVICE_HELLO, { device, name: deviceName });
    if (!current) current = chatid;
    render();
  });
  chat.on('leave', ({ chatid, reason }) => {
    log(`left room ${chatid} (${reason})`);
    if (call?.chatid === chatid) hangUp('left');
    devices.delete(chatid);
    if (current === chatid) current = chat.rooms.keys().next().value ?? null;
    render();
  });
  chat.on('incall', () => render());
  chat.on('message', onMessage);
  chat.connect();

  const statusUrl = $('statusd-url').value.trim();
  if (statusUrl) {
    pres = new PresenceClient({ url: statusUrl, token });
    pres.on('state', ({ state }) => showState('statusd', state));
    pres.on('error', ({ error }) => log(`statusd: ${error.message}`));
    pres.on('presence', () => renderOnline());
    pres.connect();
  }
  $('connect').disabled = true;
  $('disconnect').disabled = false;
  const room = $('join-room').value.trim();
  if (room) join(room);
}

function disconnect() {
  hangUp('left');
  chat?.disconnect();
  pres?.disconnect();
  chat = pres = null;
  current = null;
  devices.clear();
  $('connect').disabled = false;
  $('disconnect').disabled = true;
  render();
  renderOnline();
}

function join(chatid) {
  if (!chat || !chatid) return;
  chat
    .join(chatid)
    .then((room) => {
      current = room.chatid;
      render();
    })
    .catch((e) => log(`join ${chatid}: ${e.code ?? e.message}`));
}

// ---- messages and signalling ----

function trySend(chatid, type, body, to = {}) {
  try {
    chat?.send(chatid, typeof body === 'string' ? body : JSON.stringify(body), { ...to, msgtype: type });
  } catch (e) {
    log(`send: ${e.message}`);
  }
}

function onMessage(m) {
  if (m.msgtype === MSG.TEXT) {
    addMessage({ chatid: m.chatid, userid: m.userid, clientid: m.clientid, text: m.text });
    return;
  }
  let body;
  try {
    body = JSON.parse(m.text);
  } catch {
    return log(`unreadable message type ${m.msgtype} from ${m.userid}/${m.clientid}`);
  }
  const from = { userid: m.userid, clientid: m.clientid };
  switch (m.msgtype) {
    case MSG.DEVICE_HELLO:
    case MSG.DEVICE_HERE: {
      const room = devices.get(m.chatid);
      if (!room || typeof body.device !== 'string') return;
      room.set(body.device, { device: body.device, name: String(body.name ?? ''), ...from });
      if (m.msgtype === MSG.DEVICE_HELLO) trySend(m.chatid, MSG.DEVICE_HERE, { device, name: deviceName }, from);
      render();
      return;
    }
    case MSG.DEVICE_BYE:
      devices.get(m.chatid)?.delete(body.device);
      render();
      return;
    case MSG.CALL_OFFER:
      if (call && call.state !== 'ended') {
        trySend(m.chatid, MSG.CALL_HANGUP, { call: body.call, reason: 'busy' }, from);
        return;
      }
      call = newCall('callee', body.call, m.chatid, from);
      call.offered(body.sdp);
      onCallChange(call);
      if (params.get('autoanswer') === '1') call.answer().catch((e) => log(`answer: ${e.message}`));
      return;
    default:
      if (!call || body.call !== call.id || from.userid !== call.peer.userid || from.clientid !== call.peer.clientid) return;
      if (m.msgtype === MSG.CALL_ANSWER) call.answered(body.sdp).catch((e) => log(`answer: ${e.message}`));
      else if (m.msgtype === MSG.CALL_ICE) call.candidate(body.candidate).catch((e) => log(`ice: ${e.message}`));
      else if (m.msgtype === MSG.CALL_HANGUP) call.end(body.reason ?? 'hangup', false);
  }
}

// ---- calls ----

function newCall(role, id, chatid, peer) {
  return new Call({
    role,
    id,
    chatid,
    peer,
    signal: (type, body) => trySend(chatid, type, body, peer),
    onChange: onCallChange,
    getMedia: () => navigator.mediaDevices?.getUserMedia({ audio: true }) ?? Promise.resolve(null),
  });
}

function startCall(chatid, peer) {
  if (call && call.state !== 'ended') return;
  call = newCall('caller', randomId(), chatid, peer);
  onCallChange(call);
  call.start().catch((e) => {
    log(`call: ${e.message}`);
    call.end('failed', true);
  });
}

function hangUp(reason) {
  if (call && call.state !== 'ended') call.end(reason, true);
}

/** The call's state shown, and the room told: OP_IN_CALL heartbeats while connected. */
function onCallChange(c) {
  if (c !== call) return;
  try {
    const room = chat?.room(c.chatid);
    const inCall = c.state === 'connected';
    if (room && room.inCallSelf !== inCall) chat.setInCall(c.chatid, inCall);
  } catch (e) {
    log(`in-call: ${e.message}`);
  }
  const el = $('call');
  el.dataset.state = c.state;
  el.dataset.peerUserid = c.peer.userid;
  el.dataset.peerClientid = String(c.peer.clientid);
  $('call-state').textContent =
    c.state === 'ended' ? `ended (${c.endReason})` : `${c.state} with user ${c.peer.userid}, client ${c.peer.clientid}`;
  $('answer').hidden = c.state !== 'ringing';
  $('hangup').hidden = c.state === 'ended';
  $('media').dataset.media = c.media;
  $('media').textContent = c.media === 'audio' ? 'sending audio' : 'no audio (data only)';
  if (c.remoteStream && $('remote-audio').srcObject !== c.remoteStream) $('remote-audio').srcObject = c.remoteStream;
  $('dc').dataset.state = c.channelState;
  $('dc').textContent = c.channelState;
  $('dc-send').disabled = c.channelState !== 'open';
  const logEl = $('dc-log');
  const shown = logEl.querySelectorAll('li[data-from="peer"]').length;
  for (const text of c.received.slice(shown)) addItem(logEl, `peer: ${text}`, { from: 'peer' });
}

// ---- rendering ----

function showState(service, state) {
  $('conn').dataset[service] = state;
  $(`${service}-state`).textContent = state;
}

function render() {
  const rooms = $('rooms');
  rooms.replaceChildren();
  for (const [chatid, r] of chat?.rooms ?? []) {
    const li = addItem(rooms, `room ${chatid} ${flagText(r.inCall)}`, {
      chatid,
      joined: String(r.joined),
      incall: r.inCall === null ? '' : r.inCall ? '1' : '0',
    });
    li.classList.toggle('current', chatid === current);
    li.append(button('Open', () => ((current = chatid), render())), button('Leave', () => chat.leave(chatid)));
  }
  const r = current && chat?.room(current);
  $('current-room').dataset.chatid = current ?? '';
  $('current-room').textContent = current ?? '(none)';
  $('room-flag').dataset.incall = !r || r.inCall === null ? '' : r.inCall ? '1' : '0';
  $('room-flag').textContent = r ? flagText(r.inCall) : '';
  $('messages').replaceChildren();
  for (const m of messages.filter((x) => x.chatid === current)) {
    addItem($('messages'), `${m.mine ? 'me' : `user ${m.userid} (${m.clientid})`}: ${m.text}`, {
      chatid: m.chatid,
      userid: m.userid,
      clientid: String(m.clientid),
    });
  }
  const list = $('devices');
  list.replaceChildren();
  for (const d of devices.get(current)?.values() ?? []) {
    const li = addItem(list, `${d.name}: user ${d.userid}, client ${d.clientid} `, {
      userid: d.userid,
      clientid: String(d.clientid),
    });
    const b = button('Call', () => startCall(current, { userid: d.userid, clientid: d.clientid }));
    b.className = 'call';
    li.append(b);
  }
}

function renderOnline() {
  const list = $('online');
  list.replaceChildren();
  const entries = [...(pres?.online ?? [])].sort((a, b) => (BigInt(a[0]) < BigInt(b[0]) ? -1 : 1));
  for (const [userid, p] of entries) {
    addItem(list, `user ${userid}: ${PRESENCE_NAMES[p] ?? p}`, { userid, presence: String(p) });
  }
}

function flagText(inCall) {
  return inCall === null ? '(joining)' : inCall ? 'IN CALL' : 'no call';
}

function addMessage(m) {
  messages.push(m);
  if (m.chatid === current) render();
}

function addItem(list, text, data = {}) {
  const li = document.createElement('li');
  li.textContent = text;
  Object.assign(li.dataset, data);
  list.append(li);
  return li;
}

function button(text, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.addEventListener('click', onClick);
  return b;
}

function log(text) {
  addItem($('log'), `${new Date().toLocaleTimeString()} ${text}`);
}

// For debugging from the console.
window.chatdDemo = { get chat() { return chat; }, get pres() { return pres; }, get call() { return call; } };
