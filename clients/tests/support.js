// What the browser tests share: Debian's Chromium started by playwright-core
// (no browser download: CHROMIUM or /usr/bin/chromium), the static server
// of the demo page, and bounded waits on what a page shows.

import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { serveStatic } from '../web/serve.js';

/** Longest wait for anything a page or the server should do. */
export const WAIT_MS = 20000;

/** The Chromium binary, or null with the reason. */
export function chromiumPath() {
  const p = process.env.CHROMIUM || '/usr/bin/chromium';
  return fs.existsSync(p) ? { path: p } : { path: null, why: `no Chromium at ${p} (apt-get install chromium, or set CHROMIUM)` };
}

/**
 * Flags for a headless Chromium on a machine without network: nothing
 * reaches out (background networking, component updates, sync, QUIC; this
 * machine refuses such connections), media devices are fake and allowed
 * without a prompt, WebRTC shows host candidates as IP addresses instead
 * of mDNS names (no mDNS offline), and may use the loopback interface
 * (without it, a host whose only address is 127.0.0.1 gathers no
 * candidate at all and the call fails).
 */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--allow-loopback-in-peer-connection',
];

/** Starts Chromium (playwright-core gives it a new empty user-data-dir). */
export async function launch() {
  const { path } = chromiumPath();
  return chromium.launch({ executablePath: path, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
}

/** Serves clients/ on a free loopback port; returns { url, close }. */
export async function startStatic() {
  const server = serveStatic();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/web/`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** The demo page URL with its settings in the fragment. */
export function pageUrl(base, settings) {
  return `${base}#${new URLSearchParams(settings)}`;
}

/** Waits until `selector` exists in the page (attached, visible or not). */
export async function shows(page, selector, what = selector) {
  try {
    await page.waitForSelector(selector, { state: 'attached', timeout: WAIT_MS });
  } catch (e) {
    const log = await page.locator('#log').innerText().catch(() => '');
    throw new Error(`${what}: not shown within ${WAIT_MS} ms (${e.message.split('\n')[0]})\npage log:\n${log}`);
  }
}

/** Collects the page's console errors and uncaught exceptions (for failure messages). */
export function watchErrors(page, name) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`${name}: ${m.text()}`);
  });
  return errors;
}
