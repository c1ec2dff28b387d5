// Compiled (not run) by `npm run typecheck`, importing the package by its
// name (clients/tests depends on file:../js) so its exports map is checked
// too: the README's uses of the
// library must type-check against index.d.ts, and misuses must not.

import { ChatdClient, PresenceClient, PRESENCE, ChatdError, decode, S2C, CHATD, type RoomState } from 'chatd-client';

const token = async (): Promise<string> => 'jwt';
const chat = new ChatdClient({ url: 'ws://127.0.0.1:7402/chatd', token, heartbeatIntervalMs: 3000 });
chat.on('message', (m) => {
  const who: string = `${m.userid}/${m.clientid}`;
  const text: string = m.text;
  const bytes: Uint8Array = m.data;
  void [who, text, bytes];
});
chat.on('incall', ({ chatid, inCall }) => void [chatid.length, inCall === true]);
chat.on('connecting', ({ delayMs, error }) => void [delayMs + 1, error.message]);
chat.connect();

async function main(): Promise<void> {
  await chat.ready();
  const room: RoomState = await chat.join('7');
  const flag: boolean | null = room.inCall;
  chat.send('7', 'hi', { msgtype: 1 });
  chat.send(7n, new Uint8Array([1]), { userid: '2', clientid: 5, msgtype: 0x20 });
  chat.setInCall(7, true);
  await chat.leave('7');
  try {
    await chat.join('8');
  } catch (e) {
    if (e instanceof ChatdError) void e.code.toLowerCase();
  }
  const pres = new PresenceClient({ url: 'ws://127.0.0.1:7402/statusd', token: 'jwt', presence: PRESENCE.AWAY });
  pres.on('presence', ({ userid, presence, previous }) => void [userid.length, presence - previous]);
  pres.connect();
  const online: Map<string, number> = pres.online;
  pres.setPresence(PRESENCE.ONLINE, { auto: true });
  const r = decode(CHATD, S2C, new Uint8Array([0]));
  void [flag, online, r?.used];

  // @ts-expect-error an event the client does not have
  chat.on('presence', () => {});
  // @ts-expect-error the message's sender is a string id, not a number
  chat.on('message', (m) => void (m.userid satisfies number));
  // @ts-expect-error no url
  new ChatdClient({ token: 'jwt' });
}
void main;
