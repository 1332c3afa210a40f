//! Browser demo of sbattn: stick-breaking attention on the visitor's GPU through WebGPU,
//! checked against the f64 reference compiled into the same wasm.
//!
//! The page (`www/main.js`) calls [`Demo::create`], then [`Demo::run`] for the sized run and
//! [`Demo::text`] for the live text view. Every result is a plain JS object.
//!
//! The attention weights drawn come from the GPU too: with `v_j` the one-hot vector `e_j` (head
//! dim padded with zeros to `max(D, T)`, scale kept at `1/sqrt(D)`), `o_i = sum_j A_ij e_j` is row
//! `i` of `A`. That needs `T <= MAX_HEAD_DIM`, so only the first 256 tokens are drawn; causality
//! makes that corner of `A` exact.

use std::rc::Rc;

use js_sys::{Array, Float32Array, Object, Promise, Reflect};
use sbattn::{
    readback_later, reference, round_to, to_bytes, Attention, Dtype, Forward, HostInput, HostRemainder, Layout,
    Mask, Path, Shape, TensorRef, MAX_HEAD_DIM,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use wgpu::util::DeviceExt;

/// Timed repetitions after the warm-up run; the fastest is reported.
const TIMED_RUNS: usize = 3;

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

/// Deterministic values with mean 0 and variance about 1 (sum of four uniforms, xorshift64*).
fn gaussian_ish(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    // Four uniforms on [0, 1) sum to mean 2, variance 1/3.
    (0..n).map(|_| ((uniform() + uniform() + uniform() + uniform()) - 2.0) * 3f32.sqrt()).collect()
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
        let n = reference::visible(i as u32, mask) as usize;
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

/// Stick-breaking weights `A` (`w x w`) and `rem` of one head on the GPU (see the crate doc),
/// with the largest difference from the f64 reference weights.
async fn gpu_weights(
    attn: &Attention,
    qh: &[f32],
    kh: &[f32],
    w: usize,
    d: usize,
    scale: f32,
    mask: Mask,
) -> Result<(Vec<f32>, Vec<f32>, f64), JsValue> {
    let dp = d.max(w);
    let pad = |x: &[f32]| -> Vec<f32> {
        let mut out = vec![0.0f32; w * dp];
        for i in 0..w {
            out[i * dp..][..d].copy_from_slice(&x[i * d..][..d]);
        }
        out
    };
    let (q, k) = (pad(qh), pad(kh));
    let mut v = vec![0.0f32; w * dp];
    for j in 0..w {
        v[j * dp + j] = 1.0;
    }
    let shape = Shape::new(1, w as u32, 1, dp as u32);
    let input = HostInput {
        mask,
        scale: Some(scale),
        remainder: HostRemainder::Return,
        path: Path::Auto,
        ..HostInput::new(shape, &q, &k, &v)
    };
    let out = attn.run_host(&input).await.map_err(err)?;
    let a: Vec<f32> = (0..w).flat_map(|i| out.o[i * dp..][..w].to_vec()).collect();
    let want = reference::weights(&shape, Layout::Bthd, &q, &k, mask, Some(scale), 0, 0).map_err(err)?;
    let max = a.iter().zip(&want).map(|(&g, &r)| (g as f64 - r).abs()).fold(0.0, f64::max);
    Ok((a, out.rem.unwrap_or_default(), max))
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
        let path = |dtype| match self.attn.plan(dtype, 64, Path::Auto) {
            Ok(v) => JsValue::from_str(&format!("{:?}", v.path)),
            Err(e) => JsValue::from_str(&format!("unavailable: {e}")),
        };
        object(vec![
            ("adapter", JsValue::from_str(&caps.adapter.name)),
            ("backend", JsValue::from_str(&format!("{:?}", caps.adapter.backend))),
            ("deviceType", JsValue::from_str(&format!("{:?}", caps.adapter.device_type))),
            ("f16", caps.f16().into()),
            ("timestamps", caps.features.contains(wgpu::Features::TIMESTAMP_QUERY).into()),
            ("subgroupsOnDevice", caps.features.contains(wgpu::Features::SUBGROUP).into()),
            ("subgroupSizes", JsValue::from_str(&format!("{}..{}", caps.adapter.subgroup_min_size, caps.adapter.subgroup_max_size))),
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
    let shape = Shape::new(1, p.t, p.heads, p.d).with_kv_heads(p.kv_heads);
    shape.validate().map_err(err)?;
    if p.head >= p.heads {
        return Err(err(format!("head {} is not below heads = {}", p.head, p.heads)));
    }
    let variant = attn.plan(dtype, p.d, Path::Auto).map_err(err)?;
    let (nq, nkv) = ((p.t * p.heads * p.d) as usize, (p.t * p.kv_heads * p.d) as usize);
    let seed = p.seed as u64 * 3;
    let q = round_to(&gaussian_ish(nq, seed), dtype);
    let k = round_to(&gaussian_ish(nkv, seed + 1), dtype);
    let v = round_to(&gaussian_ish(nkv, seed + 2), dtype);

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
    let call = Forward {
        mask,
        ..Forward::new(
            shape,
            dtype,
            TensorRef::bthd(&qb, p.t, p.heads, p.d),
            TensorRef::bthd(&kb, p.t, p.kv_heads, p.d),
            TensorRef::bthd(&vb, p.t, p.kv_heads, p.d),
            TensorRef::bthd(&ob, p.t, p.heads, p.d),
        )
    };
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
        timer.as_ref().map(|t| t.stamp(&mut enc, true));
        attn.forward(&mut enc, &call).map_err(err)?;
        timer.as_ref().map(|t| t.stamp(&mut enc, false));
        let stamps = timer.as_ref().map(|t| t.resolve(dev, &mut enc));
        if run + 1 == TIMED_RUNS {
            o_read = Some(readback_later(dev, &mut enc, &ob, o_bytes));
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
    let want = reference::forward(&shape, Layout::Bthd, &q, &k, &v, mask, None, &HostRemainder::Discard).map_err(err)?;
    let cpu_ms = now_ms() - t0;
    let (max_err, worst, rel_rms) = compare(&o, &want.o, p.f16);

    let (qh, kh) = head_slices(&p, &q, &k);
    let w = (p.t as usize).min(MAX_HEAD_DIM as usize);
    let scale = 1.0 / (p.d as f32).sqrt();
    let (sb, rem, weights_err) = gpu_weights(attn, &qh[..w * p.d as usize], &kh[..w * p.d as usize], w, p.d as usize, scale, mask).await?;
    let soft = softmax_weights(&qh, &kh, w, p.d as usize, scale as f64, mask);

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
        readback_later(dev, enc, &self.resolve, 16)
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
    let x = gaussian_ish(EMBED, key.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x5851_F42D);
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
    let chars: Vec<char> = text.chars().take(MAX_HEAD_DIM as usize).collect();
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
    let (weights, rem, max_err) = gpu_weights(attn, &q, &k, t, d, 1.0, Mask::Strict).await?;
    Ok(object(vec![
        ("tokens", tokens.into()),
        ("weights", f32s(&weights)),
        ("rem", f32s(&rem)),
        ("maxErr", max_err.into()),
        ("ms", (now_ms() - t0).into()),
        ("truncated", (text.chars().count() > t).into()),
    ]))
}
