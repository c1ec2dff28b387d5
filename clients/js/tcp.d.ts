import type { Transport } from './index.js';
import type { ConnectionOptions } from 'node:tls';

/** The raw TCP transport (Node only): tcp://host:port, or tls://host:port with `tlsOptions` for tls.connect. */
export function tcpTransport(opts?: { tlsOptions?: ConnectionOptions }): Transport;
