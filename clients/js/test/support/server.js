// Starts the real chatd binary for end-to-end tests, as the Rust tests do
// (tests/common/mod.rs): every listener on a free loopback port, a fresh
// temp data dir, the bound addresses read from the "NAME listening on
// ADDR" lines, the admin token read from <data-dir>/admin.token.
//
// The binary is $CHATD_BIN, else target/debug/chatd of this repository.
// `serverSupport()` tells which 1.1 features it has (from `chatd --help`)
// so that tests of a feature the binary lacks skip with a clear message.

import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Longest wait for anything the server should do (as the Rust tests' WAIT). */
export const WAIT_MS = 10000;

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

/** The chatd binary the tests run. */
export function chatdBin() {
  return process.env.CHATD_BIN || path.join(REPO, 'target/debug/chatd');
}

/**
 * What the binary supports: `{ ok, why, ws, tls }`. `ok` false (with
 * `why`) when there is no runnable binary.
 */
export function serverSupport() {
  supported ??= probe();
  return supported;
}

/** What `serverSupport` found (asked once per process). */
let supported;

function probe() {
  const bin = chatdBin();
  let help;
  try {
    help = execFileSync(bin, ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    return { ok: false, why: `no runnable chatd at ${bin} (${e.code ?? e.message}); build it (cargo build) or set CHATD_BIN` };
  }
  return { ok: true, ws: help.includes('--ws-listen'), tls: help.includes('--tls-cert') };
}

/** Polls `fn` until it returns a truthy value; fails after `ms`. */
export async function waitUntil(fn, what, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The next `type` event of a client passing `filter`, within WAIT_MS. */
export function next(emitter, type, filter = () => true, ms = WAIT_MS) {
  return emitter.once(type, filter, { signal: AbortSignal.timeout(ms) }).catch((e) => {
    throw new Error(`no ${type} event within ${ms} ms (${e.message})`);
  });
}

/**
 * Starts a server.
 * @param {{ws?: boolean, args?: string[], dataDir?: string, listen?: object}} [opts]
 *   `ws`: also listen for WebSocket (the binary must support it);
 *   `listen`: fixed addresses by name (to restart on the same ports).
 */
export async function startServer({ ws = false, args = [], dataDir, listen = {} } = {}) {
  const tmp = dataDir ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-js-'));
  const dir = dataDir ?? path.join(tmp, 'data');
  // A binary with a WebSocket listener always gets a free port for it, so
  // that no two test servers share its default port.
  const names = ['chatd', 'statusd', 'admin', ...(ws || serverSupport().ws ? ['ws'] : [])];
  const argv = [];
  for (const n of names) argv.push(`--${n}-listen`, listen[n] ?? '127.0.0.1:0');
  argv.push('--shards', '2', '--no-pin', '--data-dir', dir, ...args);
  const env = { ...process.env };
  delete env.CHATD_JWT_SECRET;
  delete env.CHATD_ADMIN_TOKEN;
  const child = spawn(chatdBin(), argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => {
    log += d;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const addrs = {};
  const lines = createInterface({ input: child.stdout });
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server not listening within ${WAIT_MS} ms:\n${log}`)), WAIT_MS);
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code ?? signal}):\n${log}`));
      });
      lines.on('line', (line) => {
        const m = /^(\w+) listening on (\S+)$/.exec(line);
        if (m) addrs[m[1]] = m[2];
        if (names.every((n) => addrs[n])) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  const scheme = args.includes('--tls-cert') ? 'https' : 'http';
  const adminToken = fs.readFileSync(path.join(dir, 'admin.token'), 'utf8').trim();
  const server = {
    addrs,
    dataDir: dir,
    adminUrl: `${scheme}://${addrs.admin}`,
    /** ws:// (or wss://) URL of a service, e.g. wsUrl('chatd'). */
    wsUrl: (service) => `${scheme === 'https' ? 'wss' : 'ws'}://${addrs.ws}/${service}`,
    /** tcp:// (or tls://) URL of a service. */
    tcpUrl: (service) => `${scheme === 'https' ? 'tls' : 'tcp'}://${addrs[service]}`,
    log: () => log,
    /** One admin request; returns { status, body } (body parsed when JSON). */
    async api(method, p, body) {
      const res = await fetch(server.adminUrl + p, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        // not JSON
      }
      return { status: res.status, body: parsed };
    },
    async putRoom(chatid, members) {
      const r = await server.api('PUT', `/v1/rooms/${chatid}`, { members: members.map(String) });
      if (r.status !== 204) throw new Error(`PUT room ${chatid}: ${r.status} ${JSON.stringify(r.body)}`);
    },
    async token(userid) {
      const r = await server.api('POST', '/v1/tokens', { userid: String(userid), ttl_secs: 3600 });
      if (r.status !== 200) throw new Error(`POST token: ${r.status}`);
      return r.body.token;
    },
    async room(chatid) {
      return (await server.api('GET', `/v1/rooms/${chatid}`)).body;
    },
    /** SIGTERM, and wait for the exit (SIGKILL after WAIT_MS). */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
        await exited;
        clearTimeout(t);
      }
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * A self-signed certificate for 127.0.0.1 and localhost, made with the
 * openssl command in a temp dir: `{ cert, key, certPem }` (paths and PEM),
 * or null when openssl is missing.
 */
export function selfSignedCert() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-js-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert],
      { stdio: 'ignore' },
    );
  } catch {
    return null;
  }
  return { cert, key, certPem: fs.readFileSync(cert, 'utf8') };
}
