// chatd-client: a dependency-free client of chatd and statusd for browsers
// and Node. Types: index.d.ts. The raw TCP transport (Node only) is in
// 'chatd-client/tcp' so that this entry point never imports node:*.

export { ChatdClient, RtMessage, DEFAULT_HEARTBEAT_INTERVAL_MS } from './src/chatd.js';
export { PresenceClient, PRESENCE, PRESENCE_AUTO } from './src/statusd.js';
export { ChatdError, DEFAULTS } from './src/connection.js';
export { webSocketTransport } from './src/transport.js';
export { Emitter } from './src/emitter.js';
export { tokenUserId } from './src/ids.js';
export {
  PROTOCOL_VERSION,
  CHATD,
  STATUSD,
  C2S,
  S2C,
  OP,
  SOP,
  ERR,
  errorName,
  errorCloses,
  encode,
  decode,
  decodeMessage,
  StreamDecoder,
  ProtocolError,
  MAX_MSGLEN,
  MAX_TOKEN_LEN,
} from './src/codec.js';
