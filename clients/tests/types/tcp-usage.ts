import { ChatdClient } from 'chatd-client';
import { tcpTransport } from 'chatd-client/tcp';

const c = new ChatdClient({ url: 'tcp://127.0.0.1:7400', token: 'jwt', transport: tcpTransport({ tlsOptions: { ca: 'PEM' } }) });
c.connect();
