#!/usr/bin/env node
// A tiny static file server for the demo page (no dependencies). It serves
// the clients/ folder, so the page at /web/ can import the library from
// /js/. Loopback only by default.
//
//     node clients/web/serve.js [--port 8080] [--host 127.0.0.1]
//
// Also used by the browser tests: import { serveStatic } and listen.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};

/** An http.Server serving the files under `root` (GET and HEAD only). */
export function serveStatic(root = ROOT) {
  return http.createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    let rel;
    try {
      rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (rel === '/') {
      res.writeHead(302, { location: '/web/' }).end();
      return;
    }
    if (rel.endsWith('/')) rel += 'index.html';
    const file = path.join(root, path.normalize(rel));
    // Nothing outside root, and nothing hidden (.git, node_modules' dotfiles).
    if (!file.startsWith(root + path.sep) || rel.split('/').some((p) => p.startsWith('.'))) {
      res.writeHead(404).end();
      return;
    }
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      res.end(req.method === 'HEAD' ? undefined : data);
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  const host = arg('--host', '127.0.0.1');
  const server = serveStatic();
  server.listen(Number(arg('--port', '8080')), host, () => {
    const { port } = server.address();
    console.log(`demo page at http://${host}:${port}/web/`);
  });
}
