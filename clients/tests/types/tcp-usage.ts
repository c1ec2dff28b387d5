import { ChatdClient } from '../../js/index.js';
import { tcpTransport } from '../../js/tcp.js';

const c = new ChatdClient({ url: 'tcp://127.0.0.1:7400', token: 'jwt', transport: tcpTransport({ tlsOptions: { ca: 'PEM' } }) });
c.connect();
