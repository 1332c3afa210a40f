//! Command-line benchmark of the forward kernel: sweeps shapes, dtypes, paths, early-exit
//! thresholds and input kinds, and prints a table plus JSON.
//!
//! ```text
//! cargo run --release --example bench -- --profile ci
//! cargo run --release --example bench -- --profile quick --json /tmp/quick.json
//! cargo run --release --example bench -- --help
//! ```
//!
//! # Timing
//! Where the device has `TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_ENCODERS`, each sample
//! is one encoder holding `write_timestamp`, `batch` forward calls (one compute pass each; they
//! all write the same output buffer, so wgpu puts a barrier between them and they run one after
//! the other, as in a model), and a second `write_timestamp`. All samples are submitted back to
//! back, the queries resolved and read once; a sample's time is `(end - start) *
//! timestamp_period / batch`. Elsewhere (or with `--timer wall`), each sample is one submit of
//! `batch` calls between two `device.poll(wait)`s, timed on the host: submit to completion, an
//! upper bound. Calls are recorded before the clock starts, pipelines compiled before warm-up.
//! Median and minimum are over the samples; TFLOP/s is `Shape::forward_flops() / time`.
//!
//! # Inputs
//! Never zeros, never one tiny input: `--sets` (default 2) independent input sets of `q`, `k`,
//! `v` are allocated per shape and the calls rotate through them. Values come from a
//! counter-based hash (splitmix64 + Box-Muller), so any element can be generated on any thread.
//! - `random`: `q`, `k`, `v` ~ N(0, 1) independently. With the default scale `1/sqrt(D)` the
//!   logits are ~N(0, 1): each key takes `softplus(z)` ~ 0.8 nats of stick on average, so the
//!   stick is spent after a few dozen keys (early exit helps most here).
//! - `long-range`: per head a fixed sign vector `u_h` in {-1, +1}^D; `q = a u_h + s n_q`,
//!   `k = -a u_h + s n_k` with `n ~ N(0, 1)`, `s = 0.5`, `a = sqrt(8 / sqrt(D))`; `v` ~ N(0, 1).
//!   The logits are then ~N(-8, ~0.7^2) (mean `-a^2 sqrt(D) = -8`, std `sqrt(2 a^2 s^2 + s^4)`):
//!   every key takes only ~4e-4 nats of stick (measured: mean log rem -0.043 at T = 200), so
//!   about a sixth of the stick is left at key 0 at T = 4096 (3% at T = 8192) and early exit
//!   with eps <= 1e-2 never triggers: the honest case for it.
//!
//! # Correctness
//! For each (D, dtype, path, eps, inputs) the tool also runs a small problem (B1 H2 T`--check-t`
//! D, same input generator, f16 inputs rounded for the reference) through
//! [`Attention::run_host_blocking`] and reports the max abs error of `o` and `rem` against the
//! f64 reference.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sbattn::{Attention, Dtype, Forward, HostInput, HostRemainder, Layout, Mask, Path, Shape, ShaderChecks, TensorRef};

/// The paths `--paths all` runs, by command-line name. A new path is one more line here.
const PATHS: &[(&str, Path)] = &[("subgroup", Path::Subgroup), ("shared", Path::SharedMemory), ("coop", Path::CooperativeMatrix)];

/// Mean logit of the `long-range` inputs (at the default scale).
const LONG_RANGE_MEAN_LOGIT: f32 = -8.0;
/// Noise of `q` and `k` around `+-a u_h` in the `long-range` inputs.
const LONG_RANGE_NOISE: f32 = 0.5;
/// Most timestamp queries one query set may hold (wgpu's `QUERY_SET_MAX_QUERIES`).
const MAX_QUERIES: u32 = 4096;
/// Elements generated and uploaded per step, to bound host and staging memory.
const UPLOAD_CHUNK: u64 = 1 << 24;

const USAGE: &str = "\
Usage: bench [options]

Benchmarks sbattn's forward kernel and prints a table (and JSON with --json).

Options:
  --profile default|ci|quick   shape set and default counts (default: default)
                                 default: B4 H12 D128 T 1024,2048,4096,8192; B8 H32 T4096 D128;
                                          B1 H32 T4096 D64
                                 quick:   1x2x256x64, 1x2x512x128    ci: 1x2x128x64
  --shapes BxHxTxD[,...]       shapes instead of the profile's, e.g. 4x12x4096x128
  --paths NAME[,...]           paths: all (every explicit path), auto, subgroup, shared
                                 (default: all); paths the device cannot run are skipped
  --dtypes f16,f32             storage types (default: f16,f32)
  --eps E[,...]                early-exit thresholds, 0 = off (default: 0)
  --inputs random|long-range[,...]  input generator (default: random)
  --iters N                    timed samples per configuration (default: 10; ci 3, quick 5)
  --warmup N                   untimed calls before timing (default: 3; ci 1)
  --batch N                    calls per timed sample; 0 = auto, enough for --sample-ms
                                 (default: 0; ci 2)
  --sample-ms MS               target length of one sample with --batch 0 (default: 10)
  --time-limit S               seconds of timing per configuration: fewer samples (not under
                                 3) when the estimate exceeds it (default: 10)
  --sets N                     input sets rotated through, >= 2 (default: 2)
  --timer auto|timestamp|wall  GPU timestamps or submit-to-completion (default: auto)
  --check-t T                  sequence length of the correctness check, 0 = none (default: 200)
  --seed N                     seed of the input generator (default: 1)
  --checks default|full|unchecked  wgpu runtime checks of the shaders (default: default,
                                 index clamping; full adds loop bounding; unchecked =
                                 Attention::without_runtime_checks)
  --json PATH                  write all results as JSON to PATH
  -h, --help                   this text
";

// ---------------------------------------------------------------------------------------------
// Command line

/// Input generator (`--inputs`); see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Inputs {
    Random,
    LongRange,
}

impl Inputs {
    fn name(self) -> &'static str {
        match self {
            Inputs::Random => "random",
            Inputs::LongRange => "long-range",
        }
    }
}

/// `--timer`: timestamps where the device has them, or forced either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerChoice {
    Auto,
    Timestamp,
    Wall,
}

/// The parsed command line (see `USAGE`).
#[derive(Clone, Debug)]
struct Options {
    profile: String,
    shapes: Vec<Shape>,
    paths: Vec<(&'static str, Path)>,
    dtypes: Vec<Dtype>,
    eps: Vec<f32>,
    inputs: Vec<Inputs>,
    iters: u32,
    warmup: u32,
    batch: u32,
    sample_ms: f64,
    time_limit_s: f64,
    sets: u32,
    timer: TimerChoice,
    check_t: u32,
    seed: u64,
    checks: ShaderChecks,
    json: Option<String>,
}

/// What parsing the command line decided.
enum Parsed {
    Run(Box<Options>),
    Help,
}

fn parse_shape(s: &str) -> Result<Shape, String> {
    let parts: Vec<&str> = s.split('x').collect();
    if parts.len() != 4 {
        return Err(format!("shape `{s}` is not BxHxTxD"));
    }
    let mut n = [0u32; 4];
    for (slot, p) in n.iter_mut().zip(&parts) {
        *slot = p.parse().map_err(|_| format!("shape `{s}`: `{p}` is not a whole number"))?;
    }
    let shape = Shape::new(n[0], n[2], n[1], n[3]);
    shape.validate().map_err(|e| format!("shape `{s}`: {e}"))?;
    Ok(shape)
}

fn profile_shapes(profile: &str) -> Option<Vec<Shape>> {
    let list: &[&str] = match profile {
        "default" => {
            &["4x12x1024x128", "4x12x2048x128", "4x12x4096x128", "4x12x8192x128", "8x32x4096x128", "1x32x4096x64"]
        }
        "quick" => &["1x2x256x64", "1x2x512x128"],
        "ci" => &["1x2x128x64"],
        _ => return None,
    };
    Some(list.iter().map(|s| parse_shape(s).expect("built-in shapes are valid")).collect())
}

/// A comma-separated list of `what`, each item parsed by `one`; `expected` says what fits.
fn list<T>(value: &str, what: &str, expected: &str, one: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for item in value.split(',').filter(|s| !s.is_empty()) {
        out.push(one(item).ok_or_else(|| format!("{what}: `{item}` is not {expected}"))?);
    }
    if out.is_empty() {
        return Err(format!("{what}: empty list"));
    }
    Ok(out)
}

/// "all, auto, subgroup or shared": the names `--paths` takes.
fn path_names() -> String {
    let names: Vec<&str> = ["all", "auto"].into_iter().chain(PATHS.iter().map(|p| p.0)).collect();
    format!("{} or {}", names[..names.len() - 1].join(", "), names[names.len() - 1])
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut flags: BTreeMap<&str, &str> = BTreeMap::new();
    let mut i = 0;
    const KNOWN: &[&str] = &[
        "--profile",
        "--shapes",
        "--paths",
        "--dtypes",
        "--eps",
        "--inputs",
        "--iters",
        "--warmup",
        "--batch",
        "--sample-ms",
        "--time-limit",
        "--sets",
        "--timer",
        "--check-t",
        "--seed",
        "--checks",
        "--json",
    ];
    while i < args.len() {
        let a = args[i].as_str();
        if a == "-h" || a == "--help" {
            return Ok(Parsed::Help);
        }
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (a, None),
        };
        let key = KNOWN.iter().find(|k| **k == key).ok_or_else(|| format!("unknown option `{key}`"))?;
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i).map(String::as_str).ok_or_else(|| format!("{key} needs a value"))?
            }
        };
        flags.insert(key, value);
        i += 1;
    }
    let profile = flags.get("--profile").copied().unwrap_or("default").to_string();
    let mut shapes = profile_shapes(&profile).ok_or_else(|| format!("unknown profile `{profile}`"))?;
    if let Some(s) = flags.get("--shapes") {
        shapes = list(s, "--shapes", "BxHxTxD", |x| parse_shape(x).ok()).map_err(|_| {
            s.split(',').filter_map(|x| parse_shape(x).err()).next().unwrap_or_else(|| "--shapes: empty list".into())
        })?;
    }
    let mut paths: Vec<(&'static str, Path)> = Vec::new();
    for item in list(flags.get("--paths").copied().unwrap_or("all"), "--paths", &path_names(), |x| match x {
        "all" => Some(PATHS.to_vec()),
        "auto" => Some(vec![("auto", Path::Auto)]),
        _ => PATHS.iter().find(|(n, _)| *n == x).map(|p| vec![*p]),
    })? {
        for p in item {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    let dtypes = list(flags.get("--dtypes").copied().unwrap_or("f16,f32"), "--dtypes", "f16 or f32", |x| match x {
        "f16" => Some(Dtype::F16),
        "f32" => Some(Dtype::F32),
        _ => None,
    })?;
    let eps = list(flags.get("--eps").copied().unwrap_or("0"), "--eps", "a number in [0, 1)", |x| {
        x.parse::<f32>().ok().filter(|e| e.is_finite() && *e >= 0.0 && *e < 1.0)
    })?;
    let inputs =
        list(flags.get("--inputs").copied().unwrap_or("random"), "--inputs", "random or long-range", |x| match x {
            "random" => Some(Inputs::Random),
            "long-range" => Some(Inputs::LongRange),
            _ => None,
        })?;
    let num = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, String> {
        match flags.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{name}: `{v}` is not a whole number in {min}..={max}")),
        }
    };
    let real = |name: &str, default: f64| -> Result<f64, String> {
        match flags.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| format!("{name}: `{v}` is not a positive number")),
        }
    };
    let (d_iters, d_warmup, d_batch) = match profile.as_str() {
        "ci" => (3, 1, 2),
        "quick" => (5, 2, 0),
        _ => (10, 3, 0),
    };
    let timer = match flags.get("--timer").copied().unwrap_or("auto") {
        "auto" => TimerChoice::Auto,
        "timestamp" => TimerChoice::Timestamp,
        "wall" => TimerChoice::Wall,
        t => return Err(format!("--timer: `{t}` is not auto, timestamp or wall")),
    };
    let checks = match flags.get("--checks").copied().unwrap_or("default") {
        "default" => ShaderChecks::Bounds,
        "full" => ShaderChecks::Full,
        "unchecked" => ShaderChecks::Off,
        c => return Err(format!("--checks: `{c}` is not default, full or unchecked")),
    };
    Ok(Parsed::Run(Box::new(Options {
        profile,
        shapes,
        paths,
        dtypes,
        eps,
        inputs,
        iters: num("--iters", d_iters, 1, (MAX_QUERIES / 2) as u64)? as u32,
        warmup: num("--warmup", d_warmup, 0, 10_000)? as u32,
        batch: num("--batch", d_batch, 0, 10_000)? as u32,
        sample_ms: real("--sample-ms", 10.0)?,
        time_limit_s: real("--time-limit", 10.0)?,
        sets: num("--sets", 2, 2, 64)? as u32,
        timer,
        check_t: num("--check-t", 200, 0, 1 << 16)? as u32,
        seed: num("--seed", 1, 0, u64::MAX)?,
        checks,
        json: flags.get("--json").map(|s| s.to_string()),
    })))
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// Which input tensor a value belongs to (part of the generator's stream id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tensor {
    Q = 0,
    K = 1,
    V = 2,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Element `idx` of splitmix64 stream `stream`, as 64 random bits.
fn bits(stream: u64, idx: u64) -> u64 {
    mix(mix(stream.wrapping_add(GOLDEN)).wrapping_add(idx.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// A standard normal sample (Box-Muller on two 24-bit uniforms; never infinite).
fn normal(stream: u64, idx: u64) -> f32 {
    let h = bits(stream, idx);
    let u1 = ((h >> 40) as f32 + 0.5) / 16_777_216.0;
    let u2 = (h & 0xFF_FFFF) as f32 / 16_777_216.0;
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Generates element `idx` (layout `[B, T, H, D]`) of one input tensor.
#[derive(Clone, Copy)]
struct Generator {
    inputs: Inputs,
    seed: u64,
    heads: u64,
    head_dim: u64,
}

impl Generator {
    fn new(inputs: Inputs, seed: u64, shape: &Shape) -> Self {
        Generator { inputs, seed, heads: shape.heads as u64, head_dim: shape.head_dim as u64 }
    }

    fn stream(&self, tensor: u64, set: u32) -> u64 {
        (self.seed << 16) ^ ((set as u64) << 4) ^ tensor
    }

    fn value(&self, tensor: Tensor, set: u32, idx: u64) -> f32 {
        let n = normal(self.stream(tensor as u64, set), idx);
        match (self.inputs, tensor) {
            (Inputs::Random, _) | (Inputs::LongRange, Tensor::V) => n,
            (Inputs::LongRange, _) => {
                let d = idx % self.head_dim;
                let h = (idx / self.head_dim) % self.heads;
                // One sign vector per head, shared by every set, batch entry and token.
                let u = if bits(self.stream(15, 0), h * self.head_dim + d) & 1 == 0 { 1.0 } else { -1.0 };
                let a = (-LONG_RANGE_MEAN_LOGIT / (self.head_dim as f32).sqrt()).sqrt();
                let sign = if tensor == Tensor::Q { 1.0 } else { -1.0 };
                sign * a * u + LONG_RANGE_NOISE * n
            }
        }
    }

    /// Elements `start..start + out.len() / dtype.size()` as `dtype` bytes, on all cores.
    fn fill_bytes(&self, tensor: Tensor, set: u32, dtype: Dtype, start: u64, out: &mut [u8]) {
        let es = dtype.size() as usize;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = (out.len() / es).div_ceil(threads).max(4096) * es;
        std::thread::scope(|s| {
            for (c, chunk) in out.chunks_mut(per).enumerate() {
                let first = start + (c * per / es) as u64;
                s.spawn(move || {
                    for (i, e) in chunk.chunks_exact_mut(es).enumerate() {
                        let x = self.value(tensor, set, first + i as u64);
                        match dtype {
                            Dtype::F32 => e.copy_from_slice(&x.to_le_bytes()),
                            Dtype::F16 => e.copy_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                        }
                    }
                });
            }
        });
    }

    fn host(&self, tensor: Tensor, set: u32, len: usize) -> Vec<f32> {
        (0..len as u64).map(|i| self.value(tensor, set, i)).collect()
    }
}

/// The device buffers of one shape: `sets` input sets and one output, sized for the widest
/// dtype benchmarked, reused across inputs, dtypes, paths and thresholds.
struct Buffers {
    sets: Vec<[wgpu::Buffer; 3]>,
    o: wgpu::Buffer,
}

impl Buffers {
    fn destroy(self) {
        for s in &self.sets {
            for b in s {
                b.destroy();
            }
        }
        self.o.destroy();
    }
}

fn tensor_elems(shape: &Shape) -> u64 {
    shape.batch as u64 * shape.seq_len as u64 * shape.heads as u64 * shape.head_dim as u64
}

fn allocate(attn: &Attention, shape: &Shape, bytes_per_elem: u64, sets: u32) -> Result<Buffers, String> {
    let dev = attn.device();
    let size = (tensor_elems(shape) * bytes_per_elem).next_multiple_of(4);
    let limits = dev.limits();
    if size > limits.max_buffer_size || size > limits.max_storage_buffer_binding_size {
        return Err(format!(
            "a tensor needs {} bytes; the device allows buffers of {} and storage bindings of {}",
            size, limits.max_buffer_size, limits.max_storage_buffer_binding_size
        ));
    }
    let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let make = |label: &str, copy_dst: bool| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | if copy_dst { wgpu::BufferUsages::COPY_DST } else { wgpu::BufferUsages::empty() },
            mapped_at_creation: false,
        })
    };
    let bufs = Buffers {
        sets: (0..sets).map(|_| [make("bench q", true), make("bench k", true), make("bench v", true)]).collect(),
        o: make("bench o", false),
    };
    let errors = [pollster::block_on(val.pop()), pollster::block_on(oom.pop())];
    if let Some(e) = errors.into_iter().flatten().next() {
        bufs.destroy();
        return Err(format!("allocation failed: {e}"));
    }
    Ok(bufs)
}

/// Writes `inputs` in `dtype` into every set of `bufs`, in chunks.
fn fill(
    attn: &Attention,
    bufs: &Buffers,
    shape: &Shape,
    inputs: Inputs,
    seed: u64,
    dtype: Dtype,
) -> Result<(), String> {
    let gen_ = Generator::new(inputs, seed, shape);
    let n = tensor_elems(shape);
    let es = dtype.size();
    for (set, tensors) in bufs.sets.iter().enumerate() {
        for (buf, which) in tensors.iter().zip([Tensor::Q, Tensor::K, Tensor::V]) {
            let mut start = 0;
            while start < n {
                let len = UPLOAD_CHUNK.min(n - start);
                let mut bytes = vec![0u8; ((len * es).next_multiple_of(4)) as usize];
                let used = (len * es) as usize;
                gen_.fill_bytes(which, set as u32, dtype, start, &mut bytes[..used]);
                attn.queue().write_buffer(buf, start * es, &bytes);
                attn.queue().submit([]);
                attn.device().poll(wgpu::PollType::wait_indefinitely()).map_err(|e| format!("upload: {e}"))?;
                start += len;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Timing

/// One configuration to time.
#[derive(Clone, Copy)]
struct Config {
    shape: Shape,
    dtype: Dtype,
    path: Path,
    eps: f32,
}

fn record(
    attn: &Attention,
    enc: &mut wgpu::CommandEncoder,
    c: &Config,
    bufs: &Buffers,
    set: usize,
) -> Result<(), String> {
    let s = c.shape;
    let (t, h, hk, d) = (s.seq_len, s.heads, s.kv_heads, s.head_dim);
    let [q, k, v] = &bufs.sets[set % bufs.sets.len()];
    let mut call = Forward::new(
        s,
        c.dtype,
        TensorRef::bthd(q, t, h, d),
        TensorRef::bthd(k, t, hk, d),
        TensorRef::bthd(v, t, hk, d),
        TensorRef::bthd(&bufs.o, t, h, d),
    );
    call.path = c.path;
    call.early_exit_eps = c.eps;
    attn.forward(enc, &call).map_err(|e| e.to_string())
}

fn wait(attn: &Attention) -> Result<(), String> {
    attn.device().poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| format!("poll: {e}"))
}

/// Records `calls` forward calls (rotating sets from `first_set`) into one encoder.
fn encode(
    attn: &Attention,
    c: &Config,
    bufs: &Buffers,
    first_set: usize,
    calls: u32,
    stamps: Option<(&wgpu::QuerySet, u32)>,
) -> Result<wgpu::CommandBuffer, String> {
    let mut enc = attn.device().create_command_encoder(&Default::default());
    if let Some((qs, i)) = stamps {
        enc.write_timestamp(qs, 2 * i);
    }
    for n in 0..calls as usize {
        record(attn, &mut enc, c, bufs, first_set + n)?;
    }
    if let Some((qs, i)) = stamps {
        enc.write_timestamp(qs, 2 * i + 1);
    }
    Ok(enc.finish())
}

/// Submit-to-completion of one encoder, in seconds.
fn wall_once(attn: &Attention, cmd: wgpu::CommandBuffer) -> Result<f64, String> {
    wait(attn)?;
    let t0 = Instant::now();
    attn.queue().submit([cmd]);
    wait(attn)?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Per-call times of each sample, in seconds.
struct Timing {
    timer: &'static str,
    batch: u32,
    samples: Vec<f64>,
}

fn time_config(attn: &Attention, o: &Options, c: &Config, bufs: &Buffers, stamps: bool) -> Result<Timing, String> {
    // Warm-up (the pipeline was compiled before), which also estimates one call's time.
    let warm = o.warmup.max(1);
    let est = wall_once(attn, encode(attn, c, bufs, 0, warm, None)?)? / warm as f64;
    let batch = if o.batch > 0 { o.batch } else { ((o.sample_ms * 1e-3 / est).ceil() as u32).clamp(1, 100) };
    let per_sample = est * batch as f64;
    let iters = if per_sample * o.iters as f64 > o.time_limit_s {
        ((o.time_limit_s / per_sample) as u32).clamp(3.min(o.iters), o.iters)
    } else {
        o.iters
    };
    let mut samples = Vec::with_capacity(iters as usize);
    if stamps {
        let dev = attn.device();
        let qs = dev.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * iters,
        });
        // Record everything first, then submit back to back: the GPU never waits for the host.
        let mut cmds = Vec::with_capacity(iters as usize);
        for i in 0..iters {
            cmds.push(encode(attn, c, bufs, (i * batch) as usize + 1, batch, Some((&qs, i)))?);
        }
        wait(attn)?;
        for cmd in cmds {
            attn.queue().submit([cmd]);
        }
        let bytes = 2 * iters as u64 * 8;
        let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench timestamps resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut enc = dev.create_command_encoder(&Default::default());
        enc.resolve_query_set(&qs, 0..2 * iters, &resolve, 0);
        let rb = sbattn::readback_later(dev, &mut enc, &resolve, bytes);
        attn.queue().submit([enc.finish()]);
        let raw = pollster::block_on(rb.read(dev)).map_err(|e| e.to_string())?;
        let ticks: Vec<u64> = raw.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).collect();
        let period_ns = attn.queue().get_timestamp_period() as f64;
        for pair in ticks.chunks_exact(2) {
            let (a, b) = (pair[0], pair[1]);
            if b <= a || period_ns <= 0.0 {
                return Err(format!("timestamps not increasing ({a} then {b}, period {period_ns} ns)"));
            }
            samples.push((b - a) as f64 * period_ns * 1e-9 / batch as f64);
        }
    } else {
        for i in 0..iters {
            let cmd = encode(attn, c, bufs, (i * batch) as usize + 1, batch, None)?;
            samples.push(wall_once(attn, cmd)? / batch as f64);
        }
    }
    Ok(Timing { timer: if stamps { "timestamp" } else { "wall" }, batch, samples })
}

// ---------------------------------------------------------------------------------------------
// Correctness on a small shape

#[derive(Clone, Copy, Debug)]
struct Check {
    shape: Shape,
    max_abs_err: f64,
    max_abs_err_rem: f64,
    ref_max_abs: f64,
    mean_log_rem: f64,
}

fn check(attn: &Attention, o: &Options, c: &Config, inputs: Inputs) -> Result<Check, String> {
    let shape = Shape::new(1, o.check_t, 2, c.shape.head_dim);
    let g = Generator::new(inputs, o.seed ^ 0x5eed, &shape);
    let n = tensor_elems(&shape) as usize;
    let round = |x: Vec<f32>| sbattn::round_to(&x, c.dtype);
    let (q, k, v) = (round(g.host(Tensor::Q, 0, n)), round(g.host(Tensor::K, 0, n)), round(g.host(Tensor::V, 0, n)));
    let mut input = HostInput::new(shape, &q, &k, &v);
    input.dtype = c.dtype;
    input.path = c.path;
    input.early_exit_eps = c.eps;
    input.remainder = HostRemainder::Return;
    let out = attn.run_host_blocking(&input).map_err(|e| e.to_string())?;
    let r = sbattn::reference::forward(&shape, Layout::Bthd, &q, &k, &v, Mask::Strict, None, &HostRemainder::Return)
        .map_err(|e| e.to_string())?;
    let max_err = |a: &[f32], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| if x.is_finite() { (*x as f64 - y).abs() } else { f64::INFINITY })
            .fold(0.0, f64::max)
    };
    let rem = out.rem.as_deref().unwrap_or(&[]);
    Ok(Check {
        shape,
        max_abs_err: max_err(&out.o, &r.o),
        max_abs_err_rem: max_err(rem, &r.rem),
        ref_max_abs: r.o.iter().map(|x| x.abs()).fold(0.0, f64::max),
        mean_log_rem: r.log_rem.iter().sum::<f64>() / r.log_rem.len() as f64,
    })
}

// ---------------------------------------------------------------------------------------------
// Output

fn shape_str(s: &Shape) -> String {
    format!("{}x{}x{}x{}", s.batch, s.heads, s.seq_len, s.head_dim)
}

fn dtype_str(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
    }
}

fn path_name(p: Path) -> String {
    PATHS.iter().find(|(_, q)| *q == p).map_or_else(|| format!("{p:?}").to_lowercase(), |(n, _)| n.to_string())
}

/// A tiny JSON writer: values are pre-rendered strings.
fn js(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn jn(x: f64) -> String {
    if x.is_finite() { format!("{x:e}") } else { "null".into() }
}

fn obj(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}: {v}", js(k))).collect();
    format!("{{{}}}", body.join(", "))
}

fn shape_json(s: &Shape) -> String {
    obj(&[
        ("batch", s.batch.to_string()),
        ("heads", s.heads.to_string()),
        ("seq_len", s.seq_len.to_string()),
        ("head_dim", s.head_dim.to_string()),
        ("name", js(&shape_str(s))),
    ])
}

/// `YYYY-MM-DDTHH:MM:SSZ` of now (UTC), without a date crate.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// TFLOP/s with three significant digits however small (software adapters reach ~1e-4).
fn tflops_col(x: f64) -> String {
    if x >= 0.1 { format!("{x:.3}") } else { format!("{x:.2e}") }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

const HEADER: &str =
    "| shape (BxHxTxD) | dtype | path | eps | inputs | median ms | min ms | TFLOP/s | max err | timer |";

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_args(&args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&o, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One measured configuration, as printed and saved.
struct Row<'a> {
    c: Config,
    requested: &'a str,
    variant: sbattn::Variant,
    inputs: Inputs,
    timing: Timing,
    check: Option<Result<Check, String>>,
    /// Seconds `Attention::pipeline` took for this variant in this process (0 when cached).
    compile_s: f64,
}

impl Row<'_> {
    fn median(&self) -> f64 {
        median(&self.timing.samples)
    }
    fn min(&self) -> f64 {
        self.timing.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn chosen(&self) -> String {
        path_name(self.variant.path)
    }

    /// The table line.
    fn line(&self) -> String {
        let chosen = self.chosen();
        let path = if self.c.path == Path::Auto { format!("auto→{chosen}") } else { chosen };
        let err = match &self.check {
            None => "-".to_string(),
            Some(Ok(k)) => format!("{:.1e}", k.max_abs_err),
            Some(Err(_)) => "FAILED".to_string(),
        };
        format!(
            "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {} | {} | {} {}x{} |",
            shape_str(&self.c.shape),
            dtype_str(self.c.dtype),
            path,
            self.c.eps,
            self.inputs.name(),
            self.median() * 1e3,
            self.min() * 1e3,
            tflops_col(self.c.shape.forward_flops() / self.median() * 1e-12),
            err,
            self.timing.timer,
            self.timing.batch,
            self.timing.samples.len(),
        )
    }

    fn json(&self) -> String {
        let check = match &self.check {
            None => "null".to_string(),
            Some(Ok(k)) => obj(&[
                ("shape", shape_json(&k.shape)),
                ("max_abs_err", jn(k.max_abs_err)),
                ("max_abs_err_rem", jn(k.max_abs_err_rem)),
                ("ref_max_abs", jn(k.ref_max_abs)),
                ("mean_log_rem", jn(k.mean_log_rem)),
            ]),
            Some(Err(e)) => obj(&[("error", js(e))]),
        };
        let t = &self.timing;
        let (med, min) = (self.median(), self.min());
        let max = t.samples.iter().copied().fold(0.0, f64::max);
        let flops = self.c.shape.forward_flops();
        let samples: Vec<String> = t.samples.iter().map(|s| jn(s * 1e3)).collect();
        obj(&[
            ("shape", shape_json(&self.c.shape)),
            ("dtype", js(dtype_str(self.c.dtype))),
            ("path_requested", js(self.requested)),
            ("path", js(&self.chosen())),
            ("variant", js(&format!("{:?}", self.variant))),
            ("eps", jn(self.c.eps as f64)),
            ("inputs", js(self.inputs.name())),
            ("timer", js(t.timer)),
            ("batch", t.batch.to_string()),
            ("iters", t.samples.len().to_string()),
            ("median_ms", jn(med * 1e3)),
            ("min_ms", jn(min * 1e3)),
            ("max_ms", jn(max * 1e3)),
            ("samples_ms", format!("[{}]", samples.join(", "))),
            ("flops", jn(flops)),
            ("tflops_median", jn(flops / med * 1e-12)),
            ("tflops_best", jn(flops / min * 1e-12)),
            ("check", check),
            ("compile_s", jn(self.compile_s)),
        ])
    }
}

/// Results so far, written to `--json` after every configuration so that a run cut short
/// still leaves what it measured.
struct Report<'a> {
    path: Option<&'a str>,
    head: Vec<(&'static str, String)>,
    results: Vec<String>,
    skipped: Vec<String>,
}

impl Report<'_> {
    fn push(&mut self, row: &Row<'_>) -> Result<(), String> {
        println!("{}", row.line());
        if let Some(Err(e)) = &row.check {
            eprintln!("  check failed: {e}");
        }
        self.results.push(row.json());
        self.save(false)
    }

    fn skip(&mut self, shape: Option<&Shape>, dtype: Option<Dtype>, path: &str, reason: String) {
        eprintln!("skip {} {} {path}: {reason}", shape.map_or("-".into(), shape_str), dtype.map_or("-", dtype_str));
        self.skipped.push(obj(&[
            ("shape", shape.map_or("null".into(), shape_json)),
            ("dtype", dtype.map_or("null".into(), |d| js(dtype_str(d)))),
            ("path", js(path)),
            ("reason", js(&reason)),
        ]));
    }

    fn save(&self, complete: bool) -> Result<(), String> {
        let Some(path) = self.path else { return Ok(()) };
        let mut fields = self.head.clone();
        fields.push(("complete", complete.to_string()));
        fields.push(("results", format!("[\n  {}\n]", self.results.join(",\n  "))));
        fields.push(("skipped", format!("[{}]", self.skipped.join(",\n  "))));
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, obj(&fields) + "\n").map_err(|e| format!("writing {tmp}: {e}"))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("renaming {tmp} to {path}: {e}"))
    }
}

/// The JSON fields describing the run: tool, date, command, adapter, timer, settings.
fn run_header(attn: &Attention, o: &Options, args: &[String], stamps: bool) -> Vec<(&'static str, String)> {
    let info = &attn.capabilities().adapter;
    let adapter = obj(&[
        ("name", js(&info.name)),
        ("driver", js(&info.driver)),
        ("driver_info", js(&info.driver_info)),
        ("backend", js(&format!("{:?}", info.backend))),
        ("device_type", js(&format!("{:?}", info.device_type))),
        ("vendor", info.vendor.to_string()),
        ("device", info.device.to_string()),
        ("subgroup_min_size", info.subgroup_min_size.to_string()),
        ("subgroup_max_size", info.subgroup_max_size.to_string()),
        ("features", js(&format!("{:?}", attn.device().features()))),
        ("timestamp_period_ns", jn(attn.queue().get_timestamp_period() as f64)),
    ]);
    let settings = obj(&[
        ("iters", o.iters.to_string()),
        ("warmup", o.warmup.to_string()),
        ("batch", o.batch.to_string()),
        ("sample_ms", jn(o.sample_ms)),
        ("time_limit_s", jn(o.time_limit_s)),
        ("sets", o.sets.to_string()),
        ("check_t", o.check_t.to_string()),
        ("seed", o.seed.to_string()),
        ("checks", js(&format!("{:?}", o.checks))),
    ]);
    vec![
        ("tool", js("sbattn examples/bench.rs")),
        ("format", "1".into()),
        ("date", js(&utc_now())),
        ("command", js(&args.join(" "))),
        ("profile", js(&o.profile)),
        ("adapter", adapter),
        ("timer", js(if stamps { "timestamp" } else { "wall" })),
        ("settings", settings),
    ]
}

fn run(o: &Options, args: &[String]) -> Result<(), String> {
    let mut attn = Attention::with_default_adapter_blocking().map_err(|e| e.to_string())?;
    attn = match o.checks {
        ShaderChecks::Bounds => attn,
        ShaderChecks::Full => attn.with_full_runtime_checks(),
        // SAFETY: the documented opt-in of `without_runtime_checks`; every call below goes
        // through the library's host-side validation.
        ShaderChecks::Off => unsafe { attn.without_runtime_checks() },
    };
    // Errors nothing else catches (device loss, a failed dispatch) are recorded against the
    // configuration in flight instead of aborting the sweep.
    let uncaptured: Arc<Mutex<Option<String>>> = Arc::default();
    let slot = uncaptured.clone();
    attn.device().on_uncaptured_error(Arc::new(move |e| {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        s.get_or_insert_with(|| e.to_string());
    }));
    let take_error = || uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take();

    let has_stamps = attn
        .device()
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);
    let stamps = match o.timer {
        TimerChoice::Auto => has_stamps,
        TimerChoice::Wall => false,
        TimerChoice::Timestamp if has_stamps => true,
        TimerChoice::Timestamp => {
            return Err("--timer timestamp: the device lacks TIMESTAMP_QUERY_INSIDE_ENCODERS".into());
        }
    };
    let info = &attn.capabilities().adapter;
    println!(
        "adapter: {} | driver: {} {} | backend: {:?} | type: {:?} | subgroups {}..{} | timer: {}",
        info.name,
        info.driver,
        info.driver_info,
        info.backend,
        info.device_type,
        info.subgroup_min_size,
        info.subgroup_max_size,
        if stamps {
            format!("timestamp queries ({} ns/tick)", attn.queue().get_timestamp_period())
        } else {
            "submit-to-completion (wall clock)".into()
        },
    );
    println!("{HEADER}\n|---|---|---|---|---|---|---|---|---|---|");
    let mut report =
        Report { path: o.json.as_deref(), head: run_header(&attn, o, args, stamps), results: vec![], skipped: vec![] };
    // Checks depend on (D, dtype, path, eps bits, inputs), not on the timed shape.
    type CheckKey = (u32, Dtype, Path, u32, Inputs);
    let mut checks: HashMap<CheckKey, Result<Check, String>> = HashMap::new();
    let mut told: Vec<(Dtype, Path, u32)> = Vec::new();

    for shape in &o.shapes {
        // Which (dtype, path) pairs can run at this head dim, and their variants.
        let mut runnable: Vec<(Dtype, &'static str, Path, sbattn::Variant)> = Vec::new();
        for &dtype in &o.dtypes {
            for &(name, path) in &o.paths {
                match attn.plan(dtype, shape.head_dim, path) {
                    Ok(v) => runnable.push((dtype, name, path, v)),
                    Err(e) if !told.contains(&(dtype, path, shape.head_dim)) => {
                        told.push((dtype, path, shape.head_dim));
                        report.skip(None, Some(dtype), name, format!("D={}: {e}", shape.head_dim));
                    }
                    Err(_) => {}
                }
            }
        }
        let Some(widest) = runnable.iter().map(|r| r.0.size()).max() else { continue };
        let mib = (2 * o.sets as u64 + 1) * tensor_elems(shape) * widest / 1_048_576;
        eprintln!("shape {}: allocating {} input sets + output, {mib} MiB", shape_str(shape), o.sets);
        let bufs = match allocate(&attn, shape, widest, o.sets) {
            Ok(b) => b,
            Err(e) => {
                report.skip(Some(shape), None, "all", e);
                continue;
            }
        };
        for &inputs in &o.inputs {
            for &dtype in &o.dtypes {
                let here: Vec<_> = runnable.iter().filter(|r| r.0 == dtype).collect();
                if here.is_empty() {
                    continue;
                }
                let t0 = Instant::now();
                if let Err(e) = fill(&attn, &bufs, shape, inputs, o.seed, dtype) {
                    report.skip(Some(shape), Some(dtype), "all", e);
                    continue;
                }
                eprintln!(
                    "  {} {} inputs written in {:.2} s",
                    dtype_str(dtype),
                    inputs.name(),
                    t0.elapsed().as_secs_f64()
                );
                for &&(_, requested, path, variant) in &here {
                    // Compile before any timing (software drivers may take many seconds).
                    let t0 = Instant::now();
                    if let Err(e) = attn.pipeline(&variant) {
                        report.skip(Some(shape), Some(dtype), requested, format!("pipeline: {e}"));
                        continue;
                    }
                    let mut compile_s = t0.elapsed().as_secs_f64();
                    if compile_s > 0.5 {
                        eprintln!("  {} {requested}: pipeline compiled in {compile_s:.1} s", dtype_str(dtype));
                    }
                    for &eps in &o.eps {
                        let c = Config { shape: *shape, dtype, path, eps };
                        let check = (o.check_t > 0).then(|| {
                            let key = (shape.head_dim, dtype, path, eps.to_bits(), inputs);
                            checks
                                .entry(key)
                                .or_insert_with(|| match (check(&attn, o, &c, inputs), take_error()) {
                                    (Ok(k), None) => Ok(k),
                                    (Err(e), _) | (Ok(_), Some(e)) => Err(e),
                                })
                                .clone()
                        });
                        let timing = match (time_config(&attn, o, &c, &bufs, stamps), take_error()) {
                            (Ok(t), None) => t,
                            (Err(e), _) | (Ok(_), Some(e)) => {
                                report.skip(
                                    Some(shape),
                                    Some(dtype),
                                    requested,
                                    format!("eps {eps} {}: {e}", inputs.name()),
                                );
                                continue;
                            }
                        };
                        report.push(&Row { c, requested, variant, inputs, timing, check, compile_s })?;
                        compile_s = 0.0;
                    }
                }
            }
        }
        bufs.destroy();
        wait(&attn)?;
    }
    report.save(true)?;
    if let Some(path) = &o.json {
        eprintln!("wrote {path}");
    }
    Ok(())
}
