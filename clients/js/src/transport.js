// Transports: how a client reaches a service. A transport is a function
//
//     (url, handlers) => { send(bytes), close(), framing }
//
// called once per connection attempt. It opens the connection and calls
// `handlers.open()` once it is usable, `handlers.data(bytes)` for every
// message or chunk received (`handlers.data(null, error)` for something
// that is not the protocol's bytes, like a WebSocket text message), and
// `handlers.close({ code, reason, error })` once when the connection is
// gone, a failed open included, unless the client called `close()` first.
// `framing` tells the client how received bytes are cut:
//
// - 'message': every call of `data` holds whole commands (WebSocket,
//   section 8), and a truncated command is a protocol error;
// - 'stream': chunks of a byte stream (TCP), commands may be split.
//
// This file holds the WebSocket transport (browsers, Node 22+, or Node 20
// with --experimental-websocket, or any constructor with the WHATWG
// WebSocket interface, injected). The raw TCP transport is Node-only and
// lives in tcp.js so that browsers never import `node:net`.

/**
 * The WebSocket transport.
 * @param {{ WebSocket?: any }} [opts] the constructor to use (default:
 *   the global `WebSocket`).
 */
export function webSocketTransport({ WebSocket: Ctor } = {}) {
  return function openWebSocket(url, handlers) {
    const WS = Ctor ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError(
        'no WebSocket constructor: pass one as { WebSocket } (Node 20 needs --experimental-websocket or the tcp transport)',
      );
    }
    // chatd offers no subprotocol (section 8): ask for none.
    const ws = new WS(url);
    ws.binaryType = 'arraybuffer';
    let closed = false;
    const finish = (info) => {
      if (closed) return;
      closed = true;
      handlers.close(info);
    };
    ws.onopen = () => handlers.open();
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        // The server sends binary messages only.
        handlers.data(null, new TypeError('text message from the server'));
        return;
      }
      handlers.data(new Uint8Array(ev.data));
    };
    ws.onerror = () => {
      // The close event follows with the code; browsers give no detail here.
    };
    ws.onclose = (ev) => finish({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    return {
      framing: 'message',
      send(bytes) {
        ws.send(bytes);
      },
      close() {
        closed = true;
        try {
          ws.close(1000);
        } catch {
          // Already closing.
        }
      },
    };
  };
}
