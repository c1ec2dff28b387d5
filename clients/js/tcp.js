// chatd-client/tcp: the raw TCP / TLS transport (Node only).
export { tcpTransport } from './src/tcp.js';
