// The demo page: WebGPU detection, the sized run with its heatmaps, the live text view.
// When the first run and the first text view have finished (or failed), `window.__done` is
// true and `window.__result` holds the figures (scripts/web-e2e.mjs waits on these).

const $ = (id) => document.getElementById(id);
window.__done = false;
window.__result = null;

function banner(el, text, kind) {
  el.textContent = text;
  el.className = `banner ${kind}`;
  el.hidden = false;
}

function finish(result) {
  window.__result = result;
  window.__done = true;
}

function rows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => {
    const tr = document.createElement('tr');
    const a = document.createElement('td');
    const b = document.createElement('td');
    a.textContent = k;
    if (v instanceof Node) b.append(v); else b.textContent = v;
    tr.append(a, b);
    return tr;
  }));
}

// Viridis, five stops; weights are drawn as sqrt(w) so the long tail shows.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(x) {
  const t = Math.min(Math.max(x, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(t), STOPS.length - 2);
  const f = t - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}
const MASKED = [235, 235, 235];

// A w x w weight matrix, one pixel per cell (the canvas is scaled up by CSS, pixelated).
function heatmap(canvas, weights, w, attendCurrent, cssSize = 320) {
  canvas.width = Math.max(w, 1);
  canvas.height = Math.max(w, 1);
  canvas.style.width = canvas.style.height = `${cssSize}px`;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < w; i++) {
    for (let j = 0; j < w; j++) {
      const visible = attendCurrent ? j <= i : j < i;
      const [r, g, b] = visible ? colour(Math.sqrt(weights[i * w + j])) : MASKED;
      const p = 4 * (i * w + j);
      img.data[p] = r; img.data[p + 1] = g; img.data[p + 2] = b; img.data[p + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? 'n/a' : Number(x).toPrecision(digits));

async function main() {
  const status = $('status');
  if (!('gpu' in navigator)) {
    banner(status, 'WebGPU is not available in this browser (navigator.gpu is missing). Use a browser with ' +
      'WebGPU enabled: Chrome or Edge 113+ (on Linux Chromium needs --enable-unsafe-webgpu or ' +
      '--enable-features=Vulkan), Safari 26+, or Firefox 141+ on Windows. The page needs a secure context ' +
      '(https:// or http://localhost / 127.0.0.1).', 'error');
    return finish({ error: 'no-webgpu' });
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    banner(status, 'This browser has WebGPU, but it offers no GPU adapter (blocklisted driver, or WebGPU ' +
      'disabled). On Linux, try Chromium with --enable-unsafe-webgpu.', 'error');
    return finish({ error: 'no-adapter' });
  }
  const ai = adapter.info || {};
  banner(status, 'Loading the WebAssembly module…', 'info');

  let demo, Demo, RunParams;
  try {
    const m = await import('./pkg/sbattn_web_demo.js');
    await m.default();
    ({ Demo, RunParams } = m);
    demo = await Demo.create();
  } catch (e) {
    banner(status, `Could not start: ${e}`, 'error');
    return finish({ error: String(e) });
  }
  const info = demo.info();
  status.hidden = true;
  $('main').hidden = false;
  rows($('device'), [
    ['adapter', [ai.vendor, ai.architecture, ai.description].filter(Boolean).join(' / ') || info.adapter || '(not disclosed)'],
    ['type', `${info.deviceType}${ai.isFallbackAdapter ? ' (fallback adapter: software)' : ''}`],
    ['wgpu backend', info.backend],
    ['kernel path', `${info.pathF32}${info.subgroupsOnDevice ? '' : ' (wgpu 30 cannot request subgroups in the browser, so the shared-memory scan runs)'}`],
    ['shader-f16', info.f16 ? `yes (f16 path: ${info.pathF16})` : 'no: f16 runs are unavailable on this adapter'],
    ['timestamp queries', info.timestamps ? 'yes' : 'no (times are submit-to-done wall clock)'],
    ['subgroup sizes', info.subgroupSizes],
  ]);
  if (!info.f16) {
    const opt = $('dtype').querySelector('option[value=f16]');
    opt.disabled = true;
    opt.textContent = 'f16 (not on this adapter)';
  }
  const scale = document.createElement('span');
  scale.style.cssText = `display:inline-block;width:160px;height:.8em;vertical-align:middle;` +
    `background:linear-gradient(90deg,${STOPS.map((c) => `rgb(${c})`).join(',')})`;
  $('scale').replaceChildren('0 ', scale, ' 1; grey: masked');

  // URL parameters preset the form: ?t=200&d=48&heads=2&kv=1&dtype=f32&head=1&seed=3&cur=1
  const url = new URLSearchParams(location.search);
  for (const [k, id] of [['t', 't'], ['d', 'd'], ['heads', 'heads'], ['kv', 'kv'], ['dtype', 'dtype'], ['head', 'head'], ['seed', 'seed']]) {
    if (url.has(k)) $(id).value = url.get(k);
  }
  if (url.has('cur')) $('cur').checked = url.get('cur') === '1';

  let summary = {};
  async function runOnce() {
    $('runerr').hidden = true;
    $('go').disabled = true;
    const p = new RunParams();
    p.t = +$('t').value; p.d = +$('d').value; p.heads = +$('heads').value; p.kv_heads = +$('kv').value;
    p.f16 = $('dtype').value === 'f16'; p.head = +$('head').value; p.seed = +$('seed').value;
    p.attend_current = $('cur').checked;
    const attendCurrent = p.attend_current;
    try {
      const r = await demo.run(p);
      const verdict = document.createElement('span');
      verdict.className = r.ok ? 'ok' : 'bad';
      verdict.textContent = r.ok ? 'matches the reference' : 'DOES NOT match the reference';
      rows($('result'), [
        ['problem', `B=1, T=${r.t}, H=${r.heads}, Hkv=${r.kvHeads}, D=${r.d}, ${r.dtype}, ${attendCurrent ? 'j ≤ i' : 'j < i'}`],
        ['path', r.path],
        ['GPU time', r.gpuMs !== null ? `${fmt(r.gpuMs)} ms (timestamps, best of 3; ${fmt(r.gflops)} GFLOP/s)` : 'n/a'],
        ['submit → done', `${fmt(r.wallMs)} ms (best of 3); first run incl. pipeline compile ${fmt(r.firstMs)} ms`],
        ['CPU reference (f64, wasm)', `${fmt(r.cpuMs)} ms`],
        ['max |o − reference|', `${fmt(r.maxErr)} (relative RMS ${fmt(r.relRms)}; worst error / tolerance ${fmt(r.errOverTol)})`],
        ['check', verdict],
        ['weights drawn', `head ${r.head}, ${r.drawn < r.t ? `first ${r.drawn} of ${r.t} tokens (the GPU weights ` +
          `kernel takes at most ${r.drawnLimit} on this device)` : `all ${r.t} tokens`}, from the weights kernel; ` +
          `max |A_gpu − A_ref| = ${fmt(r.weightsErr)}`],
      ]);
      heatmap($('sb'), r.sb, r.drawn, attendCurrent);
      heatmap($('softmax'), r.softmax, r.drawn, attendCurrent);
      summary = {
        ok: r.ok, maxErr: r.maxErr, relRms: r.relRms, errOverTol: r.errOverTol, path: r.path,
        gpuMs: r.gpuMs, wallMs: r.wallMs, cpuMs: r.cpuMs, t: r.t, d: r.d, heads: r.heads,
        kvHeads: r.kvHeads, dtype: r.dtype, drawn: r.drawn, weightsErr: r.weightsErr,
      };
    } catch (e) {
      banner($('runerr'), `Run failed: ${e}`, 'error');
      summary = { error: String(e) };
    } finally {
      $('go').disabled = false;
    }
    return summary;
  }

  // The text view: one run at a time; the latest text wins.
  // The selected token follows the end of the text until the visitor clicks another one.
  let text = null, busy = false, selected = -1, followLast = true, textSummary = {};
  async function textOnce() {
    if (busy) return;
    busy = true;
    try {
      while (text !== $('text').value) {
        text = $('text').value;
        const r = await demo.text(text);
        drawText(r);
        textSummary = { textMaxErr: r.maxErr ?? 0, textTokens: r.tokens.length };
      }
    } catch (e) {
      $('textinfo').textContent = `Text view failed: ${e}`;
      textSummary = { textError: String(e) };
    } finally {
      busy = false;
    }
  }
  let last = null;
  function drawText(r) {
    last = r;
    const t = r.tokens.length;
    if (followLast || selected >= t) selected = t - 1;
    const spans = r.tokens.map((c, j) => {
      const s = document.createElement('span');
      s.textContent = c === ' ' ? '\u00a0' : c;
      s.onclick = () => { selected = j; followLast = j === t - 1; drawText(last); };
      return s;
    });
    if (t > 0) {
      const row = r.weights.subarray(selected * t, selected * t + t);
      spans.forEach((s, j) => {
        if (j < selected) {
          const [cr, cg, cb] = colour(Math.sqrt(row[j]));
          s.style.background = `rgba(${cr},${cg},${cb},${Math.min(1, 0.15 + Math.sqrt(row[j]))})`;
          s.style.color = row[j] > 0.3 ? '#fff' : '';
          s.title = `weight ${row[j].toFixed(4)}`;
        }
      });
      spans[selected].classList.add('sel');
      const top = [...row.slice(0, selected)].map((w, j) => [w, j]).sort((a, b) => b[0] - a[0]).slice(0, 3)
        .filter(([w]) => w > 0.01).map(([w, j]) => `'${r.tokens[j]}'@${j}: ${w.toFixed(3)}`);
      $('textinfo').textContent = `token '${r.tokens[selected]}' #${selected}: rem = ${r.rem[selected].toFixed(3)}` +
        `${top.length ? `; attends to ${top.join(', ')}` : ''}. ${t} tokens on the GPU in ${fmt(r.ms)} ms; ` +
        `max |A − reference| = ${fmt(r.maxErr)}${r.truncated ? ' (first 256 characters)' : ''}.`;
    } else {
      $('textinfo').textContent = 'Type something.';
    }
    $('tokens').replaceChildren(...spans);
    heatmap($('textmap'), r.weights, t, false, 256);
  }

  $('form').addEventListener('submit', (e) => { e.preventDefault(); runOnce(); });
  let timer = null;
  $('text').addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(textOnce, 120); });

  const first = await runOnce();
  await textOnce();
  finish({ ...first, ...textSummary, adapter: $('device').rows[0].cells[1].textContent });
}

main().catch((e) => {
  banner($('status'), `Unexpected error: ${e}`, 'error');
  finish({ error: String(e) });
});
