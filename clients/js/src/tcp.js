// The raw TCP (and TLS) transport, for Node only: the same command stream
// as a WebSocket, over the services' TCP listeners (section 1), or over
// TLS when the server runs with --tls-cert/--tls-key (section 9).
//
// URLs: `tcp://host:port` or `tls://host:port`. With `tls`, `tlsOptions`
// go to `tls.connect` (e.g. `{ ca }` for a private CA, `servername`).

import net from 'node:net';
import tls from 'node:tls';

/**
 * The TCP transport.
 * @param {{ tlsOptions?: import('node:tls').ConnectionOptions }} [opts]
 */
export function tcpTransport({ tlsOptions = {} } = {}) {
  return function openTcp(url, handlers) {
    const u = new URL(url);
    if (u.protocol !== 'tcp:' && u.protocol !== 'tls:') {
      throw new TypeError(`tcp transport needs a tcp:// or tls:// URL, not ${url}`);
    }
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = Number(u.port);
    let closed = false;
    const finish = (info) => {
      if (closed) return;
      closed = true;
      handlers.close(info);
    };
    const sock =
      u.protocol === 'tls:'
        ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ...tlsOptions }, () =>
            handlers.open(),
          )
        : net.connect({ host, port }, () => handlers.open());
    sock.setNoDelay(true);
    sock.on('data', (chunk) => handlers.data(chunk));
    let error;
    sock.on('error', (e) => {
      error = e;
    });
    sock.on('close', () => finish({ code: 0, reason: error ? error.message : 'closed', error }));
    return {
      framing: 'stream',
      send(bytes) {
        sock.write(bytes);
      },
      close() {
        closed = true;
        sock.destroy();
      },
    };
  };
}
