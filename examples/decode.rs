//! A toy generation loop: several layers of stick-breaking attention with random weights.
//! The prompt is prefilled with [`Attention::forward`] (keys and values appended to each layer's
//! KV cache), then tokens are decoded one at a time with [`Attention::decode`]; prints the
//! prefill time, per-token latency and tokens/s.
//!
//! `cargo run --release --example decode -- [--layers 4] [--batch 2] [--prompt 64] [--tokens 32]`
//!
//! There is no vocabulary: the "next token" fed back is the last layer's normalised hidden
//! state. Projections are a naive WGSL matrix-vector kernel defined below (not part of the
//! crate); all data stays on the GPU, and the loop waits for every token as a sampler would.

use std::time::Instant;

use sbattn::{Append, Attention, Decode, Dtype, Forward, KvCache, KvCacheDesc, Mask, Remainder, Shape, TensorRef};
use wgpu::util::DeviceExt;

/// The toy model's own kernels: `linear` (y = x W, or y += x W) and an in-place RMS norm.
const TOY_WGSL: &str = r#"
struct P { rows: u32, inn: u32, out: u32, accumulate: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;       // [rows, inn]
@group(0) @binding(2) var<storage, read> w: array<f32>;       // [inn, out]
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [rows, out]

@compute @workgroup_size(64)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let r = gid.y;
    if (c >= p.out || r >= p.rows) { return; }
    var s = 0.0;
    for (var i = 0u; i < p.inn; i++) { s += x[r * p.inn + i] * w[i * p.out + c]; }
    if (p.accumulate != 0u) { s += y[r * p.out + c]; }
    y[r * p.out + c] = s;
}

// One row per invocation: y[r] /= rms(y[r]).
@compute @workgroup_size(64)
fn rmsnorm(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) { return; }
    var s = 0.0;
    for (var i = 0u; i < p.out; i++) { let v = y[r * p.out + i]; s += v * v; }
    let inv = inverseSqrt(s / f32(p.out) + 1e-6);
    for (var i = 0u; i < p.out; i++) { y[r * p.out + i] *= inv; }
}
"#;

struct Args {
    layers: u32,
    batch: u32,
    prompt: u32,
    tokens: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { layers: 4, batch: 2, prompt: 64, tokens: 32, heads: 8, kv_heads: 2, head_dim: 64 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let v: u32 = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--layers" => a.layers = v,
            "--batch" => a.batch = v,
            "--prompt" => a.prompt = v,
            "--tokens" => a.tokens = v,
            "--heads" => a.heads = v,
            "--kv-heads" => a.kv_heads = v,
            "--head-dim" => a.head_dim = v,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.layers == 0 || a.batch == 0 || a.prompt == 0 || a.tokens == 0 {
        return Err("layers, batch, prompt and tokens must be positive".into());
    }
    Ok(a)
}

/// The toy kernels and the buffers one layer owns.
struct Toy {
    device: wgpu::Device,
    layout: wgpu::BindGroupLayout,
    linear: wgpu::ComputePipeline,
    rmsnorm: wgpu::ComputePipeline,
    /// Bound as `x` and `w` by `rmsnorm` (a buffer cannot be bound read-only and writable in
    /// one dispatch).
    unused: wgpu::Buffer,
}

impl Toy {
    fn new(device: &wgpu::Device) -> Self {
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        };
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("toy"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, storage(true)),
                entry(2, storage(true)),
                entry(3, storage(false)),
            ],
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("toy"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("toy"),
            source: wgpu::ShaderSource::Wgsl(TOY_WGSL.into()),
        });
        let pipeline = |entry| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let unused = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("toy unused"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Toy { device: device.clone(), linear: pipeline("linear"), rmsnorm: pipeline("rmsnorm"), layout, unused }
    }

    /// Records `y (+)= x w` for `rows` rows of `inn` -> `out`, or the RMS norm of `y` (`out`
    /// wide) when `w` is `None` (`x` is then ignored).
    #[allow(clippy::too_many_arguments)]
    fn record(&self, enc: &mut wgpu::CommandEncoder, rows: u32, inn: u32, out: u32, acc: bool, x: &wgpu::Buffer, w: Option<&wgpu::Buffer>, y: &wgpu::Buffer) {
        let (x, w_or_x) = match w {
            Some(w) => (x, w),
            None => (&self.unused, &self.unused),
        };
        let params = [rows, inn, out, acc as u32];
        let u = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: u.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: x.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: w_or_x.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: y.as_entire_binding() },
            ],
        });
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_bind_group(0, &bg, &[]);
        match w {
            Some(_) => {
                pass.set_pipeline(&self.linear);
                pass.dispatch_workgroups(out.div_ceil(64), rows, 1);
            }
            None => {
                pass.set_pipeline(&self.rmsnorm);
                pass.dispatch_workgroups(rows.div_ceil(64), 1, 1);
            }
        }
    }
}

struct Layer {
    wq: wgpu::Buffer,
    wk: wgpu::Buffer,
    wv: wgpu::Buffer,
    wo: wgpu::Buffer,
    cache: KvCache,
}

/// Activations of one layer call, `rows` rows: queries (`qw` wide), new keys and values
/// (`kvw` wide), attention output (`qw` wide).
struct Acts {
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    o: wgpu::Buffer,
    qw: u32,
    kvw: u32,
}

impl Layer {
    /// q, k, v = x Wq, x Wk, x Wv for `rows` rows of `x` (`dm` wide).
    fn project(&self, toy: &Toy, enc: &mut wgpu::CommandEncoder, rows: u32, dm: u32, x: &wgpu::Buffer, a: &Acts) {
        toy.record(enc, rows, dm, a.qw, false, x, Some(&self.wq), &a.q);
        toy.record(enc, rows, dm, a.kvw, false, x, Some(&self.wk), &a.k);
        toy.record(enc, rows, dm, a.kvw, false, x, Some(&self.wv), &a.v);
    }

    /// x = rmsnorm(x + o Wo).
    fn residual(&self, toy: &Toy, enc: &mut wgpu::CommandEncoder, rows: u32, dm: u32, x: &wgpu::Buffer, a: &Acts) {
        toy.record(enc, rows, a.qw, dm, true, &a.o, Some(&self.wo), x);
        toy.record(enc, rows, dm, dm, false, x, None, x);
    }
}

/// The toy model: layers, their caches, and the activations of one call.
struct Model<'a> {
    attn: &'a Attention,
    toy: Toy,
    layers: Vec<Layer>,
    /// Random prompt embeddings, `[B, P, Dm]` (never written).
    prompt: wgpu::Buffer,
    /// The prompt's hidden states during prefill, `[B, P, Dm]`.
    hidden: wgpu::Buffer,
    /// The current token's hidden state, `[B, Dm]`.
    x: wgpu::Buffer,
    acts: Acts,
    a: Args,
}

impl Model<'_> {
    /// Empties the caches and runs every layer over the whole prompt, in one submit; leaves
    /// each sequence's last hidden state in `x`, the first decoded token's input.
    fn prefill(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let (a, dev) = (&self.a, self.attn.device());
        let (b, p, h, hk, d) = (a.batch, a.prompt, a.heads, a.kv_heads, a.head_dim);
        let (rows, dm, acts) = (b * p, h * d, &self.acts);
        let mut enc = dev.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.prompt, 0, &self.hidden, 0, self.prompt.size());
        for layer in &mut self.layers {
            layer.cache.set_lengths(self.attn, &mut enc, &vec![0; b as usize])?;
            layer.project(&self.toy, &mut enc, rows, dm, &self.hidden, acts);
            let t = TensorRef::bthd;
            let shape = Shape::new().with_batch(b).with_seq_len(p).with_heads(h).with_head_dim(d).with_kv_heads(hk);
            let call = Forward::new(shape, Dtype::F32, t(&acts.q), t(&acts.k), t(&acts.v), t(&acts.o)).with_remainder(Remainder::AddToValue);
            self.attn.forward(&mut enc, &call)?;
            self.attn.append(&mut enc, &mut layer.cache, &Append::new(t(&acts.k), t(&acts.v), p))?;
            layer.residual(&self.toy, &mut enc, rows, dm, &self.hidden, acts);
        }
        let row = 4 * dm as u64;
        for s in 0..b as u64 {
            enc.copy_buffer_to_buffer(&self.hidden, (s * p as u64 + p as u64 - 1) * row, &self.x, s * row, row);
        }
        self.attn.queue().submit([enc.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely())?;
        Ok(())
    }

    /// Decodes one token per sequence through every layer (one encoder, one submit) and waits
    /// for it, as a sampler reading the token would.
    fn step(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let (a, dev) = (&self.a, self.attn.device());
        let (b, h, d) = (a.batch, a.heads, a.head_dim);
        let acts = &self.acts;
        let mut enc = dev.create_command_encoder(&Default::default());
        for layer in &mut self.layers {
            layer.project(&self.toy, &mut enc, b, h * d, &self.x, acts);
            let t = TensorRef::bthd;
            self.attn.append(&mut enc, &mut layer.cache, &Append::new(t(&acts.k), t(&acts.v), 1))?;
            let call = Decode::new(&layer.cache, h, 1, t(&acts.q), t(&acts.o)).with_remainder(Remainder::AddToValue).with_mask(Mask::Strict);
            self.attn.decode(&mut enc, &call)?;
            layer.residual(&self.toy, &mut enc, b, h * d, &self.x, acts);
        }
        self.attn.queue().submit([enc.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely())?;
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse_args()?;
    let attn = Attention::with_default_adapter_blocking()?;
    let dev = attn.device();
    println!("adapter: {}", attn.capabilities().name);
    let (b, h, hk, d) = (a.batch, a.heads, a.kv_heads, a.head_dim);
    let dm = h * d; // model width
    let (qw, kvw) = (h * d, hk * d);

    let mut seed = 0x5eed_u64;
    let mut normal = move || {
        // xorshift + Box-Muller: enough for random weights
        let mut u = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (x, y) = (u(), u());
        ((-2.0 * x.ln()).sqrt() * (2.0 * std::f64::consts::PI * y).cos()) as f32
    };
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let mut weights = |inn: u32, out: u32| {
        let s = 1.0 / (inn as f32).sqrt();
        let w: Vec<f32> = (0..inn * out).map(|_| normal() * s).collect();
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::cast_slice(&w), usage: storage })
    };
    let capacity = a.prompt + a.tokens + 1; // + 1: the warm-up step
    let mut layers = Vec::new();
    for _ in 0..a.layers {
        layers.push(Layer {
            wq: weights(dm, qw),
            wk: weights(dm, kvw),
            wv: weights(dm, kvw),
            wo: weights(qw, dm),
            cache: KvCache::new(&attn, KvCacheDesc::new(b, hk, d, capacity, Dtype::F32))?,
        });
    }
    let prompt = weights(b * a.prompt, dm);
    let empty = |floats: u32| dev.create_buffer(&wgpu::BufferDescriptor { label: None, size: 4 * floats as u64, usage: storage, mapped_at_creation: false });
    let rows = b * a.prompt;
    let acts = Acts { q: empty(rows * qw), k: empty(rows * kvw), v: empty(rows * kvw), o: empty(rows * qw), qw, kvw };
    let (hidden, x) = (empty(rows * dm), empty(b * dm));
    let mut model = Model { attn: &attn, toy: Toy::new(dev), layers, prompt, hidden, x, acts, a };

    // Warm-up: the first use of each kernel compiles it (seconds on a CPU adapter).
    model.prefill()?;
    model.step()?;

    let t0 = Instant::now();
    model.prefill()?;
    let prefill = t0.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let t1 = Instant::now();
    for _ in 0..model.a.tokens {
        let ts = Instant::now();
        model.step()?;
        latencies.push(ts.elapsed().as_secs_f64() * 1e3);
    }
    let total = t1.elapsed().as_secs_f64();

    let mut enc = dev.create_command_encoder(&Default::default());
    let hidden = sbattn::Readback::record(dev, &mut enc, &model.x, 4 * (b * dm) as u64);
    attn.queue().submit([enc.finish()]);
    let hidden = sbattn::from_bytes(&pollster::block_on(hidden.read(dev))?, Dtype::F32);
    let checksum: f64 = hidden.iter().map(|v| *v as f64).sum();
    if !checksum.is_finite() {
        return Err("the hidden state is not finite".into());
    }

    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    let a = &model.a;
    println!(
        "{} layers, batch {b}, H={h} Hkv={hk} D={d}, prompt {} -> {} tokens; cache lengths {:?}",
        a.layers,
        a.prompt,
        a.tokens,
        model.layers[0].cache.lengths()
    );
    println!("prefill: {:.2} ms ({:.0} prompt tokens/s)", prefill * 1e3, (b * a.prompt) as f64 / prefill);
    println!(
        "decode: {:.1} tokens/s ({b} sequences), per-token latency median {median:.3} ms, min {:.3} ms, max {:.3} ms",
        (b * a.tokens) as f64 / total,
        latencies[0],
        latencies[latencies.len() - 1]
    );
    println!("final hidden-state checksum {checksum:.6}");
    Ok(())
}
