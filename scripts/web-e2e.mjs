// End-to-end test of the demo page in headless Chromium, driven through chromedriver's W3C
// WebDriver API (no npm packages; Node 18+ for fetch).
//
//   node scripts/web-e2e.mjs <site dir> <screenshot.png>
//
// Serves the site on 127.0.0.1, opens it with WebGPU on (SwiftShader here), waits for
// `window.__done`, checks that the run matched the reference (small max error) and that the
// heatmaps are drawn, and saves a screenshot. Then opens it once more with WebGPU off and
// checks that the page says so. Exits non-zero on any failure.
// Env: CHROMEDRIVER (default /usr/bin/chromedriver), CHROMIUM (default /usr/bin/chromium),
// E2E_TIMEOUT_S (default 240), E2E_QUERY (URL query for the run, default T=96 D=40 H=4 Hkv=2).

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve } from 'node:path';

const [siteArg, shotArg] = process.argv.slice(2);
if (!siteArg || !shotArg) {
  console.error('usage: node scripts/web-e2e.mjs <site dir> <screenshot.png>');
  process.exit(2);
}
const site = resolve(siteArg);
const shot = resolve(shotArg);
const chromedriver = process.env.CHROMEDRIVER || '/usr/bin/chromedriver';
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
const timeoutS = Number(process.env.E2E_TIMEOUT_S || 240);
const query = process.env.E2E_QUERY || 't=96&d=40&heads=4&kv=2&head=1&seed=7';
const log = (...a) => console.log('[e2e]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- static server -------------------------------------------------------------------------
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.png': 'image/png' };
const server = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
  let file = join(site, path);
  try {
    if (statSync(file).isDirectory()) file = join(file, 'index.html');
    const body = readFileSync(file);
    res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404).end('not found');
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const pageBase = `http://127.0.0.1:${server.address().port}/`;
log(`serving ${site} at ${pageBase}`);

// --- chromedriver --------------------------------------------------------------------------
const port = await new Promise((r) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); });
});
const driver = spawn(chromedriver, [`--port=${port}`], { stdio: ['ignore', 'ignore', 'inherit'] });
const wd = `http://127.0.0.1:${port}`;
const profiles = [];

async function call(method, path, body) {
  const r = await fetch(wd + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok || (j.value && j.value.error)) throw new Error(`${method} ${path}: ${JSON.stringify(j.value).slice(0, 500)}`);
  return j.value;
}

async function session(webgpu) {
  const profile = mkdtempSync(join(tmpdir(), 'sbattn-e2e-'));
  profiles.push(profile);
  const args = [
    '--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--disable-dev-shm-usage', '--disable-quic',
    '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--user-data-dir=${profile}`, '--window-size=1150,1900', '--hide-scrollbars',
  ];
  if (webgpu) args.push('--enable-unsafe-webgpu');
  const v = await call('POST', '/session', {
    capabilities: { alwaysMatch: { browserName: 'chrome', 'goog:chromeOptions': { binary: chromium, args } } },
  });
  return v.sessionId;
}

const script = (id, js, args = []) => call('POST', `/session/${id}/execute/sync`, { script: js, args });

async function waitDone(id) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutS * 1000) {
    if (await script(id, 'return window.__done === true;')) return (Date.now() - t0) / 1000;
    await sleep(250);
  }
  throw new Error(`window.__done not set within ${timeoutS} s`);
}

// Pixels of a canvas that are neither masked grey nor the colour of weight 0, and distinct colours.
const CANVAS_STATS = `
  const c = document.getElementById(arguments[0]);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const colours = new Set(); let lit = 0;
  for (let p = 0; p < d.length; p += 4) {
    const [r, g, b] = [d[p], d[p + 1], d[p + 2]];
    colours.add((r << 16) | (g << 8) | b);
    const grey = r === 235 && g === 235 && b === 235, zero = r === 68 && g === 1 && b === 84;
    if (!grey && !zero && d[p + 3] > 0) lit++;
  }
  return { width: c.width, height: c.height, lit, colours: colours.size, visible: c.offsetWidth > 0 };`;

const failures = [];
const expect = (cond, what) => { if (!cond) failures.push(what); log(`${cond ? 'ok  ' : 'FAIL'} ${what}`); };

let exitCode = 1;
let current = null; // the open session, for a screenshot when something fails
try {
  for (let i = 0; ; i++) {
    try { if ((await call('GET', '/status')).ready) break; } catch { /* not up yet */ }
    if (i > 100) throw new Error('chromedriver did not start');
    await sleep(100);
  }

  // 1. WebGPU on: the run, the check against the reference, the heatmaps, a screenshot.
  const id = current = await session(true);
  await call('POST', `/session/${id}/url`, { url: `${pageBase}index.html?${query}` });
  const took = await waitDone(id);
  const r = await script(id, 'return window.__result;');
  log(`page finished in ${took.toFixed(1)} s:`, JSON.stringify(r));
  const png = await call('GET', `/session/${id}/screenshot`);
  writeFileSync(shot, Buffer.from(png, 'base64'));
  log(`screenshot: ${shot}`);
  expect(r && !r.error, `no error (${r && r.error})`);
  expect(r && r.ok === true, 'the run matches the f64 reference within the test tolerance');
  expect(r && r.maxErr < 1e-4, `max |o - reference| = ${r && r.maxErr} < 1e-4`);
  expect(r && r.weightsErr < 1e-5, `max |A_gpu - A_ref| = ${r && r.weightsErr} < 1e-5`);
  expect(r && r.path === 'SharedMemory', `path ${r && r.path} is SharedMemory (no subgroups through wgpu on the web)`);
  expect(r && (r.gpuMs > 0 || r.wallMs > 0), `a GPU time is shown (${r && r.gpuMs} ms timestamps, ${r && r.wallMs} ms wall)`);
  expect(r && r.textMaxErr < 1e-5 && r.textTokens > 10, `text view ran (${r && r.textTokens} tokens, max err ${r && r.textMaxErr})`);
  for (const canvas of ['sb', 'softmax', 'textmap']) {
    const s = await script(id, CANVAS_STATS, [canvas]);
    // Stick-breaking rows decay fast: ask for at least half a lit cell per row, many colours.
    expect(s.visible && s.width > 1 && s.lit >= s.height / 2 && s.colours > 8,
      `heatmap #${canvas} drawn: ${s.width}x${s.height}, ${s.lit} lit cells, ${s.colours} colours`);
  }
  await call('DELETE', `/session/${id}`);
  current = null;

  // 2. WebGPU off: the page must say so.
  const off = await session(false);
  await call('POST', `/session/${off}/url`, { url: `${pageBase}index.html` });
  await waitDone(off);
  const ro = await script(off, 'return [window.__result, document.getElementById("status").textContent];');
  expect(ro[0] && /^no-(webgpu|adapter)$/.test(ro[0].error), `without WebGPU the page reports ${ro[0] && ro[0].error}: "${ro[1].slice(0, 80)}…"`);
  await call('DELETE', `/session/${off}`);

  exitCode = failures.length ? 1 : 0;
  log(failures.length ? `${failures.length} check(s) failed` : 'all checks passed');
} catch (e) {
  console.error('[e2e] error:', e.message);
  if (current) {
    try {
      writeFileSync(shot, Buffer.from(await call('GET', `/session/${current}/screenshot`), 'base64'));
      console.error(`[e2e] screenshot of the failure: ${shot}`);
    } catch { /* the browser is gone */ }
  }
} finally {
  driver.kill();
  server.close();
  for (const p of profiles) rmSync(p, { recursive: true, force: true });
}
process.exit(exitCode);
