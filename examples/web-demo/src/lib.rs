//! Browser demo of sbattn: stick-breaking attention on the visitor's GPU through WebGPU,
//! checked against the f64 reference compiled into the same wasm.
//!
//! The page (`www/main.js`) calls [`Demo::create`], then [`Demo::run`] for the sized run and
//! [`Demo::text`] for the live text view. Every result is a plain JS object.
//!
//! The attention weights drawn come from the GPU too: `Attention::weights_host`, the library's
//! weights kernel (one workgroup of 256 invocations per query row, the shared-memory scan, no
//! subgroups: what wgpu's WebGPU backend can run), checked against `reference::weights`. That
//! kernel takes at most `MAX_WEIGHTS_SEQ_LEN` (4096) tokens, and `A` (`T^2` f32) must fit the
//! device's largest storage binding and buffer, so longer runs draw the first [`weights_limit`]
//! tokens; causality makes that corner of `A` exact.

use std::rc::Rc;

use js_sys::{Array, Float32Array, Object, Promise, Reflect};
use sbattn::{
    reference, round_to, to_bytes, Attention, Dtype, Forward, HostInput, KernelPath, Mask, Readback, Shape, TensorRef,
    MAX_WEIGHTS_SEQ_LEN,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use wgpu::util::DeviceExt;

/// Timed repetitions after the warm-up run; the fastest is reported.
const TIMED_RUNS: usize = 3;

/// Characters the text view takes (the page's textarea has the same `maxlength`): a display
/// choice, one token span each, well within [`weights_limit`].
const TEXT_TOKENS: usize = 256;

/// Stick-breaking attention on this page's WebGPU device.
#[wasm_bindgen]
pub struct Demo {
    attn: Rc<Attention>,
}

/// The sizes and options of one run, as the page sends them.
#[wasm_bindgen]
#[derive(Clone, Copy, Debug)]
pub struct RunParams {
    /// Sequence length.
    pub t: u32,
    /// Head dim.
    pub d: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads (divides `heads`).
    pub kv_heads: u32,
    /// Store q, k, v, o as f16.
    pub f16: bool,
    /// Row `i` also sees key `i`.
    pub attend_current: bool,
    /// The head whose weights are drawn.
    pub head: u32,
    /// Seed of the random q, k, v.
    pub seed: u32,
}

#[wasm_bindgen]
impl RunParams {
    /// Parameters with the page's defaults.
    #[wasm_bindgen(constructor)]
    pub fn new() -> RunParams {
        RunParams { t: 128, d: 64, heads: 4, kv_heads: 4, f16: false, attend_current: false, head: 0, seed: 1 }
    }
}

impl Default for RunParams {
    fn default() -> Self {
        Self::new()
    }
}

fn err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`, milliseconds.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn now_ms() -> f64;
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// A JS object from `(key, value)` pairs.
fn object(fields: Vec<(&str, JsValue)>) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &JsValue::from_str(k), &v);
    }
    o.into()
}

fn f32s(data: &[f32]) -> JsValue {
    Float32Array::from(data).into()
}

/// Resolves once the queue has finished everything submitted so far.
async fn work_done(queue: &wgpu::Queue) {
    let mut setup = |resolve: js_sys::Function, _reject: js_sys::Function| {
        queue.on_submitted_work_done(move || {
            let _ = resolve.call0(&JsValue::NULL);
        });
    };
    let _ = JsFuture::from(Promise::new(&mut setup)).await;
}

/// Per-element tolerance of the tests (`tests/forward.rs`): `r |w| + 2e-5 (1 + |w|)`, `r` half
/// an f16 ulp for f16 output. Returns (max |err|, worst err / tol, relative RMS).
fn compare(got: &[f32], want: &[f64], f16: bool) -> (f64, f64, f64) {
    let r = if f16 { 2f64.powi(-11) } else { 0.0 };
    let (mut max, mut worst, mut se, mut sw) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let e = if g.is_finite() { (g as f64 - w).abs() } else { f64::INFINITY };
        max = max.max(e);
        worst = worst.max(e / (r * w.abs() + 2e-5 * (1.0 + w.abs())));
        se += e * e;
        sw += w * w;
    }
    (max, worst, (se / sw.max(f64::MIN_POSITIVE)).sqrt())
}

/// One head's queries and keys, `[T, D]` each, from `[1, T, H, D]` tensors.
fn head_slices(p: &RunParams, q: &[f32], k: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (t, d) = (p.t as usize, p.d as usize);
    let kv = (p.head / (p.heads / p.kv_heads)) as usize;
    let (h, hn, kvn) = (p.head as usize, p.heads as usize, p.kv_heads as usize);
    let mut qh = Vec::with_capacity(t * d);
    let mut kh = Vec::with_capacity(t * d);
    for i in 0..t {
        qh.extend_from_slice(&q[(i * hn + h) * d..][..d]);
        kh.extend_from_slice(&k[(i * kvn + kv) * d..][..d]);
    }
    (qh, kh)
}

/// Softmax over the visible keys of the same logits, `T x T` row-major (row 0 of the strict
/// mask sees no key: all zero).
fn softmax_weights(qh: &[f32], kh: &[f32], t: usize, d: usize, scale: f64, mask: Mask) -> Vec<f32> {
    let mut a = vec![0.0f32; t * t];
    for i in 0..t {
        let n = mask.visible(i as u32) as usize;
        let z: Vec<f64> = (0..n)
            .map(|j| scale * (0..d).map(|x| qh[i * d + x] as f64 * kh[j * d + x] as f64).sum::<f64>())
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|z| (z - m).exp()).sum();
        for (j, z) in z.iter().enumerate() {
            a[i * t + j] = ((z - m).exp() / sum) as f32;
        }
    }
    a
}

/// The most tokens whose weights this device can compute in one call: the weights kernel's
/// [`MAX_WEIGHTS_SEQ_LEN`], and `A` (`T^2` f32) within the largest storage binding and buffer.
fn weights_limit(attn: &Attention) -> usize {
    let l = &attn.capabilities().limits;
    let cells = l.max_storage_buffer_binding_size.min(l.max_buffer_size) / 4;
    let mut t = (cells as f64).sqrt() as u64;
    while t * t > cells {
        t -= 1;
    }
    (t as usize).min(MAX_WEIGHTS_SEQ_LEN as usize)
}

/// Stick-breaking weights `A` (`T x T`, row-major) and `rem` of head `head` of `input` (batch 1)
/// from the GPU's weights kernel, with the largest difference from the f64 reference weights.
async fn gpu_weights(attn: &Attention, input: &HostInput<'_>, head: u32) -> Result<(Vec<f32>, Vec<f32>, f64), JsValue> {
    let got = attn.weights_host(input, 0, head).await.map_err(err)?;
    let want = reference::weights(input, 0, head).map_err(err)?;
    let max = got.a.iter().zip(&want).map(|(&g, &r)| (g as f64 - r).abs()).fold(0.0, f64::max);
    Ok((got.a, got.rem, max))
}

#[wasm_bindgen]
impl Demo {
    /// Finds a WebGPU adapter and makes a device; rejects with a message when there is none.
    pub async fn create() -> Result<Demo, JsValue> {
        std::panic::set_hook(Box::new(|info| console_error(&info.to_string())));
        let attn = Attention::with_default_adapter().await.map_err(err)?;
        Ok(Demo { attn: Rc::new(attn) })
    }

    /// What the device offers and the path the kernel takes on it.
    pub fn info(&self) -> JsValue {
        let caps = self.attn.capabilities();
        let path = |dtype| match self.attn.forward_variant(dtype, 64, KernelPath::Auto) {
            Ok(v) => JsValue::from_str(&format!("{:?}", v.path)),
            Err(e) => JsValue::from_str(&format!("unavailable: {e}")),
        };
        object(vec![
            ("adapter", JsValue::from_str(&caps.name)),
            ("backend", JsValue::from_str(&format!("{:?}", caps.backend))),
            ("deviceType", JsValue::from_str(&format!("{:?}", caps.device_type))),
            ("f16", caps.f16().into()),
            ("timestamps", caps.features.contains(wgpu::Features::TIMESTAMP_QUERY).into()),
            ("subgroupsOnDevice", caps.features.contains(wgpu::Features::SUBGROUP).into()),
            ("subgroupSizes", JsValue::from_str(&format!("{}..{}", caps.subgroup_min_size, caps.subgroup_max_size))),
            ("pathF32", path(Dtype::F32)),
            ("pathF16", path(Dtype::F16)),
        ])
    }

    /// Runs the forward pass at the visitor's sizes, times it, checks it against the f64
    /// reference and returns one head's stick-breaking and softmax weights.
    pub fn run(&self, params: &RunParams) -> Promise {
        let attn = self.attn.clone();
        let p = *params;
        future_to_promise(async move { run(&attn, p).await })
    }

    /// The text view: each character is a token, weights of every token over the earlier ones.
    pub fn text(&self, text: String) -> Promise {
        let attn = self.attn.clone();
        future_to_promise(async move { text_view(&attn, &text).await })
    }
}

async fn run(attn: &Attention, p: RunParams) -> Result<JsValue, JsValue> {
    let dtype = if p.f16 { Dtype::F16 } else { Dtype::F32 };
    let mask = if p.attend_current { Mask::IncludeCurrent } else { Mask::Strict };
    let shape = Shape::new().with_batch(1).with_seq_len(p.t).with_heads(p.heads).with_head_dim(p.d).with_kv_heads(p.kv_heads);
    shape.validate().map_err(err)?;
    if p.head >= p.heads {
        return Err(err(format!("head {} is not below heads = {}", p.head, p.heads)));
    }
    let variant = attn.forward_variant(dtype, p.d, KernelPath::Auto).map_err(err)?;
    let (nq, nkv) = ((p.t * p.heads * p.d) as usize, (p.t * p.kv_heads * p.d) as usize);
    let seed = p.seed as u64 * 3;
    let q = round_to(&sbattn::reference::Rng::new(seed).normals(nq, 1.0), dtype);
    let k = round_to(&sbattn::reference::Rng::new(seed + 1).normals(nkv, 1.0), dtype);
    let v = round_to(&sbattn::reference::Rng::new(seed + 2).normals(nkv, 1.0), dtype);

    let dev = attn.device();
    let upload = |data: &[f32]| {
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("demo input"),
            contents: &to_bytes(data, dtype),
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let (qb, kb, vb) = (upload(&q), upload(&k), upload(&v));
    let o_bytes = nq as u64 * dtype.size();
    let ob = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("demo o"),
        size: o_bytes.next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let t = TensorRef::bthd;
    let call = Forward::new(shape, dtype, t(&qb), t(&kb), t(&vb), t(&ob)).with_mask(mask);
    let timer = Timer::new(attn);

    // Warm-up: compiles the pipeline.
    let t0 = now_ms();
    let mut enc = dev.create_command_encoder(&Default::default());
    attn.forward(&mut enc, &call).map_err(err)?;
    attn.queue().submit([enc.finish()]);
    work_done(attn.queue()).await;
    let first_ms = now_ms() - t0;

    let (mut wall_ms, mut gpu_ms) = (f64::INFINITY, None::<f64>);
    let mut o_read = None;
    for run in 0..TIMED_RUNS {
        let mut enc = dev.create_command_encoder(&Default::default());
        if let Some(t) = &timer {
            t.stamp(&mut enc, true);
        }
        attn.forward(&mut enc, &call).map_err(err)?;
        if let Some(t) = &timer {
            t.stamp(&mut enc, false);
        }
        let stamps = timer.as_ref().map(|t| t.resolve(dev, &mut enc));
        if run + 1 == TIMED_RUNS {
            o_read = Some(Readback::record(dev, &mut enc, &ob, o_bytes));
        }
        let t0 = now_ms();
        attn.queue().submit([enc.finish()]);
        work_done(attn.queue()).await;
        wall_ms = wall_ms.min(now_ms() - t0);
        if let Some(stamps) = stamps {
            let bytes = stamps.read(dev).await.map_err(err)?;
            let (a, b) = (u64::from_le_bytes(bytes[..8].try_into().unwrap()), u64::from_le_bytes(bytes[8..16].try_into().unwrap()));
            let ms = b.saturating_sub(a) as f64 * attn.queue().get_timestamp_period() as f64 / 1e6;
            gpu_ms = Some(gpu_ms.map_or(ms, |g: f64| g.min(ms)));
        }
    }
    let o = sbattn::from_bytes(&o_read.unwrap().read(dev).await.map_err(err)?, dtype);

    let t0 = now_ms();
    let want = reference::forward(&HostInput::new(shape, &q, &k, &v).with_mask(mask)).map_err(err)?;
    let cpu_ms = now_ms() - t0;
    let (max_err, worst, rel_rms) = compare(&o, &want.o, p.f16);

    // The first `w` tokens of every head ([1, T, H, D]: a prefix of each tensor), the drawn head's weights.
    let limit = weights_limit(attn);
    let w = (p.t as usize).min(limit);
    let prefix = shape.with_seq_len(w as u32);
    let (nq, nkv) = (w * (p.heads * p.d) as usize, w * (p.kv_heads * p.d) as usize);
    let first = HostInput::new(prefix, &q[..nq], &k[..nkv], &v[..nkv]).with_mask(mask);
    let (sb, rem, weights_err) = gpu_weights(attn, &first, p.head).await?;
    let (qh, kh) = head_slices(&p, &q, &k);
    let soft = softmax_weights(&qh, &kh, w, p.d as usize, 1.0 / (p.d as f64).sqrt(), mask);

    Ok(object(vec![
        ("t", p.t.into()),
        ("d", p.d.into()),
        ("heads", p.heads.into()),
        ("kvHeads", p.kv_heads.into()),
        ("dtype", JsValue::from_str(if p.f16 { "f16" } else { "f32" })),
        ("path", JsValue::from_str(&format!("{:?}", variant.path))),
        ("firstMs", first_ms.into()),
        ("wallMs", wall_ms.into()),
        ("gpuMs", gpu_ms.map_or(JsValue::NULL, JsValue::from)),
        ("cpuMs", cpu_ms.into()),
        ("gflops", (shape.forward_flops() / (gpu_ms.unwrap_or(wall_ms) * 1e6)).into()),
        ("maxErr", max_err.into()),
        ("relRms", rel_rms.into()),
        ("errOverTol", worst.into()),
        ("ok", (worst <= 1.0).into()),
        ("head", p.head.into()),
        ("drawn", (w as u32).into()),
        ("drawnLimit", (limit as u32).into()),
        ("sb", f32s(&sb)),
        ("rem", f32s(&rem)),
        ("softmax", f32s(&soft)),
        ("weightsErr", weights_err.into()),
    ]))
}

/// Timestamps around the forward pass: one empty compute pass writing at its start, one at
/// its end (WebGPU has timestamps only at pass boundaries).
struct Timer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
}

impl Timer {
    fn new(attn: &Attention) -> Option<Timer> {
        let dev = attn.device();
        dev.features().contains(wgpu::Features::TIMESTAMP_QUERY).then(|| Timer {
            set: dev.create_query_set(&wgpu::QuerySetDescriptor { label: Some("demo timer"), ty: wgpu::QueryType::Timestamp, count: 2 }),
            resolve: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("demo timer resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
        })
    }

    fn stamp(&self, enc: &mut wgpu::CommandEncoder, start: bool) {
        let writes = wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: start.then_some(0),
            end_of_pass_write_index: (!start).then_some(1),
        };
        let _ = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("demo timer"), timestamp_writes: Some(writes) });
    }

    fn resolve(&self, dev: &wgpu::Device, enc: &mut wgpu::CommandEncoder) -> sbattn::Readback {
        enc.resolve_query_set(&self.set, 0..2, &self.resolve, 0);
        Readback::record(dev, enc, &self.resolve, 16)
    }
}

/// Embedding width of the text view, plus one constant coordinate for the logit offset. Random
/// unit vectors of 64 dims have dot products of about +-0.125, so unrelated tokens stay apart.
const EMBED: usize = 64;
/// Logit of a token on an earlier copy of itself is `GAIN - OFFSET` (+6, beta 0.998); on an
/// unrelated one about `-OFFSET` (-9 +- 2, beta about 1e-4); on one of its class about -6.
const GAIN: f32 = 15.0;
const OFFSET: f32 = 9.0;

/// A unit vector from a hash of `key` (deterministic: the same character, the same vector).
fn hashed_unit(key: u64) -> Vec<f32> {
    let x = sbattn::reference::Rng::new(key.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x5851_F42D).normals(EMBED, 1.0);
    let n = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    x.into_iter().map(|v| v / n).collect()
}

/// A character's embedding: mostly its case-folded identity, partly its class (vowel,
/// consonant, digit, space, other), so a token also leans a little on earlier tokens of its
/// class.
fn embed(c: char) -> Vec<f32> {
    let lower = c.to_lowercase().next().unwrap_or(c);
    let class = match lower {
        'a' | 'e' | 'i' | 'o' | 'u' | 'y' => 1,
        c if c.is_alphabetic() => 2,
        c if c.is_numeric() => 3,
        c if c.is_whitespace() => 4,
        _ => 5,
    };
    let (id, cl) = (hashed_unit(lower as u64), hashed_unit(1 << 40 | class));
    let x: Vec<f32> = id.iter().zip(&cl).map(|(a, b)| 0.89 * a + 0.45 * b).collect();
    let n = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    x.into_iter().map(|v| v / n).collect()
}

async fn text_view(attn: &Attention, text: &str) -> Result<JsValue, JsValue> {
    let chars: Vec<char> = text.chars().take(TEXT_TOKENS).collect();
    let t = chars.len();
    let tokens: Array = chars.iter().map(|c| JsValue::from_str(&c.to_string())).collect();
    if t == 0 {
        return Ok(object(vec![("tokens", tokens.into()), ("weights", f32s(&[])), ("rem", f32s(&[]))]));
    }
    let d = EMBED + 1;
    let (mut q, mut k) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
    for &c in &chars {
        let e = embed(c);
        q.extend(e.iter().map(|x| GAIN * x));
        q.push(-OFFSET);
        k.extend(e);
        k.push(1.0);
    }
    let t0 = now_ms();
    let shape = Shape::new().with_seq_len(t as u32).with_head_dim(d as u32);
    let v = vec![0.0f32; t * d]; // unused: the weights depend on q and k only
    let input = HostInput::new(shape, &q, &k, &v).with_mask(Mask::Strict).with_scale(Some(1.0));
    let (weights, rem, max_err) = gpu_weights(attn, &input, 0).await?;
    Ok(object(vec![
        ("tokens", tokens.into()),
        ("weights", f32s(&weights)),
        ("rem", f32s(&rem)),
        ("maxErr", max_err.into()),
        ("ms", (now_ms() - t0).into()),
        ("truncated", (text.chars().count() > t).into()),
    ]))
}
