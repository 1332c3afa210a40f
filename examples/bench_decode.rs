//! Decode-step benchmark: one new token per sequence against a KV cache, all heads, f16.
//!
//! For B in {1, 8, 32}, H = 32, Hkv = 8, D = 128 and cache lengths {4096, 32768, 131072}, times
//! [`Decoder::decode`] (split-K partials + merge) and reports the median and best time per step,
//! the bytes of K and V a step must read (`2 * B * Hkv * L * D * 2`) and the bandwidth that
//! implies, against two ceilings measured in the same run: a WGSL read probe
//! (`shaders/decode_read_probe.wgsl`: 16-byte loads, four in flight, what a kernel can stream)
//! and wgpu's buffer copy; `--ref-gbps` adds a third given by hand (such as PyTorch's copy).
//!
//! ```text
//! cargo build --release --example bench_decode
//! target/release/examples/bench_decode --json decode.json [--iters 30] [--shapes 1x32768,8x131072]
//!     [--lanes auto,8,16] [--vec auto,8,16] [--keys auto,1,2,4,8] [--splits auto,32,128]
//!     [--checks bounds,off,full] [--ref-gbps 4182] [--zeros] [--rotate-mb 256]
//! target/release/examples/bench_decode --quick            # tiny sizes, for a smoke test
//! ```
//!
//! Every shape runs the library's choice first, then every combination of the lists (`auto`
//! lets the library choose): lanes per key, bytes per cache load (`scalar`, 8 or 16: in f16 `Load::Vec4` and `Load::Vec8`), keys
//! per step, chunks per sequence, and wgpu's runtime checks (`bounds`: the default, index
//! clamping; `off`: none, through the unsafe `Decoder::without_runtime_checks`; `full`: with
//! loop bounding).
//!
//! Timing: GPU timestamps written into the encoder around every step when the device has
//! `TIMESTAMP_QUERY_INSIDE_ENCODERS`; otherwise wall time of many steps between two
//! `device.poll(wait)`, divided by the step count (one sample per batch of steps).
//!
//! The caches hold random f16 in [-1, 1) (`--zeros`: zeros; timing does not depend on the
//! values otherwise: early exit is off, so every key is read). Steps rotate over enough copies
//! of the caches to pass `--rotate-mb` (default 256, several times a large GPU's L2), as the
//! layers of a model do, so small shapes are not timed out of the L2. A batch whose cache would
//! exceed the device's largest storage binding is split over several caches, decoded one after
//! the other in the same step (the JSON says how many).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use sbattn::decode::{DecodePlan, Load};
use sbattn::{Attention, Decode, Decoder, Dtype, KvCache, KvCacheDesc, Mask, ShaderChecks, TensorRef};
use wgpu::util::DeviceExt;

const USAGE: &str = "flags: --json PATH, --quick, --iters N, --shapes BxL,.., --lanes auto,8,16, --vec auto,scalar,8,16, \
                     --keys auto,1,2,4,8, --splits auto,N, --checks bounds,off,full, --ref-gbps X, --zeros, --rotate-mb N";

struct Args {
    json: Option<String>,
    quick: bool,
    iters: u32,
    shapes: Option<Vec<(u32, u32)>>,
    lanes: Vec<Option<u32>>,
    /// Bytes per cache load (`Some(0)`: scalar loads).
    vec: Vec<Option<u32>>,
    keys: Vec<Option<u32>>,
    splits: Vec<Option<u32>>,
    checks: Vec<ShaderChecks>,
    ref_gbps: Option<f64>,
    zeros: bool,
    rotate_mb: u64,
}

/// `auto,8,16` as `[None, Some(8), Some(16)]` (`scalar` as `Some(0)` where allowed).
fn list(flag: &str, v: &str) -> Result<Vec<Option<u32>>, String> {
    v.split(',')
        .map(|x| match x {
            "auto" => Ok(None),
            "scalar" if flag == "--vec" => Ok(Some(0)),
            _ => x.parse().map(Some).map_err(|e| format!("{flag} {x}: {e}")),
        })
        .collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        json: None,
        quick: false,
        iters: 30,
        shapes: None,
        lanes: vec![None],
        vec: vec![None],
        keys: vec![None],
        splits: vec![None],
        checks: vec![ShaderChecks::Bounds],
        ref_gbps: None,
        zeros: false,
        rotate_mb: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value ({USAGE})"));
        match flag.as_str() {
            "--quick" => a.quick = true,
            "--zeros" => a.zeros = true,
            "--json" => a.json = Some(value()?),
            "--iters" => a.iters = value()?.parse().map_err(|e| format!("--iters: {e}"))?,
            "--rotate-mb" => a.rotate_mb = value()?.parse().map_err(|e| format!("--rotate-mb: {e}"))?,
            "--ref-gbps" => a.ref_gbps = Some(value()?.parse().map_err(|e| format!("--ref-gbps: {e}"))?),
            "--lanes" => a.lanes = list("--lanes", &value()?)?,
            "--vec" => a.vec = list("--vec", &value()?)?,
            "--keys" => a.keys = list("--keys", &value()?)?,
            "--splits" => a.splits = list("--splits", &value()?)?,
            "--shapes" => {
                let v = value()?;
                let shape = |s: &str| -> Option<(u32, u32)> {
                    let (b, l) = s.split_once('x')?;
                    Some((b.parse().ok()?, l.parse().ok()?))
                };
                a.shapes = Some(v.split(',').map(|s| shape(s).ok_or(format!("--shapes {s}: want BxL"))).collect::<Result<_, _>>()?);
            }
            "--checks" => {
                a.checks = value()?
                    .split(',')
                    .map(|c| match c {
                        "bounds" | "default" => Ok(ShaderChecks::Bounds),
                        "off" | "unchecked" => Ok(ShaderChecks::Off),
                        "full" => Ok(ShaderChecks::Full),
                        _ => Err(format!("--checks {c}: bounds, off or full")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--bench" => {} // passed by `cargo bench`-style runners
            "--help" | "-h" => return Err(USAGE.into()),
            _ => return Err(format!("unknown flag {flag} ({USAGE})")),
        }
    }
    if a.iters == 0 {
        return Err("--iters must be positive".into());
    }
    Ok(a)
}

/// One kernel configuration (`None`: the library's choice).
#[derive(Clone, Copy, Debug)]
struct Config {
    checks: ShaderChecks,
    lanes: Option<u32>,
    vec: Option<u32>,
    keys: Option<u32>,
    splits: Option<u32>,
}

impl Config {
    fn label(&self) -> String {
        let o = |x: Option<u32>| x.map_or("auto".to_string(), |v| v.to_string());
        let vec = match self.vec {
            Some(0) => "scalar".to_string(),
            v => o(v),
        };
        let checks = format!("{:?}", self.checks).to_lowercase();
        format!("{checks:>6} {:>4} {vec:>6} {:>4} {:>5}", o(self.lanes), o(self.keys), o(self.splits))
    }

    /// The forced load for `bytes` per load of `dtype` elements.
    fn load(&self, dtype: Dtype) -> Result<Option<Load>, String> {
        match self.vec {
            None => Ok(None),
            Some(0) => Ok(Some(Load::Scalar)),
            Some(b) => match (b % dtype.size() as u32, b / dtype.size() as u32) {
                (0, 4) => Ok(Some(Load::Vec4)),
                (0, 8) => Ok(Some(Load::Vec8)),
                _ => Err(format!("no {b}-byte loads of {dtype:?}")),
            },
        }
    }
}

/// One measured configuration.
struct Row {
    batch: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    cache_len: u32,
    config: Config,
    plan: Option<DecodePlan>,
    caches: u32,
    copies: u32,
    times_ms: Vec<f64>,
    kv_bytes: f64,
    error: Option<String>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Times `iters` executions of `record` (each one step), returning milliseconds per step.
struct Timer {
    timestamps: bool,
    period_ns: f64,
}

impl Timer {
    fn time(
        &self,
        attn: &Attention,
        iters: u32,
        record: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<(), sbattn::Error>,
    ) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
        let dev = attn.device();
        // Warm-up: compiles pipelines, faults pages in.
        let mut enc = dev.create_command_encoder(&Default::default());
        record(&mut enc)?;
        record(&mut enc)?;
        attn.queue().submit([enc.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely())?;
        if self.timestamps {
            let qs = dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * iters,
            });
            let bytes = 16 * iters as u64;
            let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut enc = dev.create_command_encoder(&Default::default());
            for i in 0..iters {
                enc.write_timestamp(&qs, 2 * i);
                record(&mut enc)?;
                enc.write_timestamp(&qs, 2 * i + 1);
            }
            enc.resolve_query_set(&qs, 0..2 * iters, &resolve, 0);
            let rb = sbattn::readback_later(dev, &mut enc, &resolve, bytes);
            attn.queue().submit([enc.finish()]);
            let raw = pollster::block_on(rb.read(dev))?;
            let ticks: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
            Ok(ticks.chunks_exact(2).map(|t| t[1].wrapping_sub(t[0]) as f64 * self.period_ns * 1e-6).collect())
        } else {
            let batches = 5;
            let mut out = Vec::new();
            for _ in 0..batches {
                let t0 = Instant::now();
                let mut enc = dev.create_command_encoder(&Default::default());
                for _ in 0..iters {
                    record(&mut enc)?;
                }
                attn.queue().submit([enc.finish()]);
                dev.poll(wgpu::PollType::wait_indefinitely())?;
                out.push(t0.elapsed().as_secs_f64() * 1e3 / iters as f64);
            }
            Ok(out)
        }
    }
}

/// Allocates under an out-of-memory error scope; `None` if the device refused.
fn try_alloc<T>(dev: &wgpu::Device, f: impl FnOnce() -> T) -> Option<T> {
    let scope = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let v = f();
    pollster::block_on(scope.pop()).is_none().then_some(v)
}

/// The caches of one shape: `copies` sets of caches (each a batch split over `caches` caches
/// where one binding cannot hold it), full to `len`, and the query and output buffers.
struct ShapeSet {
    copies: Vec<Vec<KvCache>>,
    q: wgpu::Buffer,
    o: wgpu::Buffer,
}

impl ShapeSet {
    #[allow(clippy::too_many_arguments)]
    fn new(
        attn: &Attention,
        dtype: Dtype,
        (batch, heads, kv_heads, head_dim, len): (u32, u32, u32, u32, u32),
        zeros: bool,
        rotate_bytes: u64,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let dev = attn.device();
        let es = dtype.size();
        let l = dev.limits();
        // Sequences per cache: each of K and V must fit one binding with 32-bit element indices.
        let per_seq = kv_heads as u64 * len as u64 * head_dim as u64 * es;
        let max_bytes = l.max_storage_buffer_binding_size.min(l.max_buffer_size).min((u32::MAX as u64) * es);
        let per_cache = (max_bytes / per_seq).min(batch as u64) as u32;
        if per_cache == 0 {
            return Err(format!("one sequence needs {per_seq} bytes per cache tensor, over the {max_bytes}-byte limit").into());
        }
        let n_caches = batch.div_ceil(per_cache);
        let sizes: Vec<u32> = (0..n_caches).map(|i| batch / n_caches + (i < batch % n_caches) as u32).collect();
        let kv_bytes = 2 * batch as u64 * per_seq;
        let n_copies = rotate_bytes.div_ceil(kv_bytes).clamp(1, 16);
        // Random f16 (or f32) in [-1, 1), copied over every cache tensor in tiles.
        let pattern_elems = 1usize << 21;
        let pattern: Vec<f32> = (0..pattern_elems as u64)
            .map(|i| ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
            .collect();
        let pattern = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("cache fill pattern"),
            contents: &sbattn::to_bytes(&pattern, dtype),
            usage: wgpu::BufferUsages::COPY_SRC,
        });
        let mut copies = Vec::new();
        for _ in 0..n_copies {
            let mut enc = dev.create_command_encoder(&Default::default());
            let mut caches = Vec::new();
            for &b in &sizes {
                let desc = KvCacheDesc::new(b, kv_heads, head_dim, len, dtype);
                let mut cache = try_alloc(dev, || KvCache::new(dev, desc)).ok_or("out of memory for the KV cache")??;
                if !zeros {
                    for t in [cache.k().buffer, cache.v().buffer] {
                        let mut at = 0;
                        while at < t.size() {
                            let n = pattern.size().min(t.size() - at);
                            enc.copy_buffer_to_buffer(&pattern, 0, t, at, n);
                            at += n;
                        }
                    }
                }
                cache.set_lengths(&mut enc, &vec![len; b as usize])?;
                caches.push(cache);
            }
            attn.queue().submit([enc.finish()]);
            copies.push(caches);
        }
        let qo = (batch * heads * head_dim) as usize;
        let q: Vec<f32> = (0..qo).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
        let q = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("q"),
            contents: &sbattn::to_bytes(&q, dtype),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let o = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("o"),
            size: qo as u64 * es,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        dev.poll(wgpu::PollType::wait_indefinitely())?;
        Ok(ShapeSet { copies, q, o })
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    attn: &Attention,
    dec: &Decoder,
    timer: &Timer,
    iters: u32,
    dtype: Dtype,
    set: &ShapeSet,
    (heads, head_dim): (u32, u32),
    config: Config,
    row: &mut Row,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let load = config.load(dtype)?;
    // One list of calls per copy of the caches; a step decodes one copy.
    let calls: Vec<Vec<Decode<'_>>> = set
        .copies
        .iter()
        .map(|caches| {
            let mut first = 0u64;
            caches
                .iter()
                .map(|c| {
                    let at = first * (heads * head_dim) as u64;
                    first += c.desc().batch as u64;
                    let t = |buf| TensorRef::bthd(buf, 1, heads, head_dim).at_offset(at);
                    Decode {
                        mask: Mask::IncludeCurrent,
                        lanes_per_key: config.lanes,
                        load,
                        keys_per_step: config.keys,
                        splits: config.splits,
                        ..Decode::new(c, heads, 1, t(&set.q), t(&set.o))
                    }
                })
                .collect()
        })
        .collect();
    row.plan = Some(dec.plan(&calls[0][0])?);
    let mut step = 0usize;
    let mut record = |enc: &mut wgpu::CommandEncoder| {
        step += 1;
        calls[step % calls.len()].iter().try_for_each(|c| dec.decode(enc, c))
    };
    timer.time(attn, iters, &mut record)
}

/// Copy bandwidth: `size` bytes from one buffer to another, reported as bytes read plus
/// bytes written per second.
fn copy_bandwidth(attn: &Attention, timer: &Timer, iters: u32, size: u64) -> Option<(u64, Vec<f64>)> {
    let dev = attn.device();
    let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let make = || dev.create_buffer(&wgpu::BufferDescriptor { label: Some("copy"), size, usage, mapped_at_creation: false });
    let (a, b) = try_alloc(dev, || (make(), make()))?;
    let mut record = |enc: &mut wgpu::CommandEncoder| {
        enc.copy_buffer_to_buffer(&a, 0, &b, 0, size);
        Ok(())
    };
    timer.time(attn, iters, &mut record).ok().map(|t| (size, t))
}

/// Read bandwidth of a WGSL kernel (`shaders/decode_read_probe.wgsl`) over `size` bytes:
/// bytes read per second.
fn read_bandwidth(attn: &Attention, timer: &Timer, iters: u32, size: u64) -> Option<(u64, Vec<f64>)> {
    const GRID: u32 = 4096; // workgroups of 256: many per multiprocessor on any GPU
    let dev = attn.device();
    let src = try_alloc(dev, || {
        dev.create_buffer(&wgpu::BufferDescriptor { label: Some("probe src"), size, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false })
    })?;
    let dst = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("probe dst"),
        size: 4 * 256 * GRID as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some("read probe"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../shaders/decode_read_probe.wgsl").into()),
    };
    // SAFETY: both loops end (i grows by the grid stride up to arrayLength) and every index is
    // below arrayLength(&src) or the invocation count that dst was sized for.
    let module = unsafe { dev.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) };
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("read probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("read probe"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: src.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: dst.as_entire_binding() },
        ],
    });
    let mut record = |enc: &mut wgpu::CommandEncoder| {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("read probe"), timestamp_writes: None });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(GRID, 1, 1);
        Ok(())
    };
    timer.time(attn, iters, &mut record).ok().map(|t| (size, t))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let attn = Attention::with_default_adapter_blocking()?;
    let dev = attn.device();
    let mut decoders: HashMap<ShaderChecks, Decoder> = HashMap::new();
    for &c in &args.checks {
        let d = Decoder::new(dev);
        let d = match c {
            ShaderChecks::Bounds => d,
            ShaderChecks::Full => d.with_full_runtime_checks(),
            // SAFETY: every call is validated by the library, which is what the option measures.
            ShaderChecks::Off => unsafe { d.without_runtime_checks() },
        };
        decoders.insert(c, d);
    }
    let caps = attn.capabilities();
    let dtype = if caps.f16() { Dtype::F16 } else { Dtype::F32 };
    let f = caps.features;
    let timer = Timer {
        timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY) && f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
        period_ns: attn.queue().get_timestamp_period() as f64,
    };
    let info = &caps.adapter;
    println!("adapter: {} ({:?}), timing: {}", info.name, info.backend, if timer.timestamps { "timestamps" } else { "wall clock" });
    let (batches, lens, heads, kv_heads, head_dim, probe_size): (&[u32], &[u32], u32, u32, u32, u64) = if args.quick {
        (&[1, 2], &[64, 500], 32, 8, 128, 16 << 20)
    } else {
        (&[1, 8, 32], &[4096, 32768, 131072], 32, 8, 128, 1 << 30)
    };
    let shapes: Vec<(u32, u32)> =
        args.shapes.clone().unwrap_or_else(|| batches.iter().flat_map(|&b| lens.iter().map(move |&l| (b, l))).collect());
    let l = dev.limits();
    let probe_size = probe_size.min(l.max_buffer_size).min(l.max_storage_buffer_binding_size) / 16 * 16;
    let read = read_bandwidth(&attn, &timer, args.iters, probe_size);
    let read_gbps = read.as_ref().map(|(size, t)| *size as f64 / (median(t) * 1e-3) / 1e9);
    let copy = copy_bandwidth(&attn, &timer, args.iters, probe_size);
    let copy_gbps = copy.as_ref().map(|(size, t)| 2.0 * *size as f64 / (median(t) * 1e-3) / 1e9);
    if let Some(g) = read_gbps {
        println!("WGSL read probe: {g:.0} GB/s (read)");
    }
    if let Some(g) = copy_gbps {
        println!("wgpu buffer copy: {g:.0} GB/s (read + write)");
    }
    // Percentages of the read probe and of --ref-gbps.
    let pct = |gbps: f64| [read_gbps, args.ref_gbps].map(|c| c.map_or(f64::NAN, |c| 100.0 * gbps / c));
    println!(
        "{:>3} {:>6} {:>6} {:>4} {:>6} {:>4} {:>5} {:>9} {:>9} {:>6} {:>6} {:>5}  plan",
        "B", "L", "checks", "lane", "vec", "keys", "split", "median ms", "min ms", "GB/s", "%probe", "%ref"
    );
    // The library's own choice first (the summary compares it with the fastest), then every
    // combination of the lists.
    let default = Config { checks: args.checks[0], lanes: None, vec: None, keys: None, splits: None };
    let mut configs = vec![default];
    for &checks in &args.checks {
        for &lanes in &args.lanes {
            for &vec in &args.vec {
                for &keys in &args.keys {
                    for &splits in &args.splits {
                        let c = Config { checks, lanes, vec, keys, splits };
                        if (checks, lanes, vec, keys, splits) != (default.checks, None, None, None, None) {
                            configs.push(c);
                        }
                    }
                }
            }
        }
    }
    let mut rows = Vec::new();
    for &(b, len) in &shapes {
        let kv_bytes = 2.0 * b as f64 * kv_heads as f64 * len as f64 * head_dim as f64 * dtype.size() as f64;
        let set = ShapeSet::new(&attn, dtype, (b, heads, kv_heads, head_dim, len), args.zeros, args.rotate_mb << 20);
        for &config in &configs {
            let mut r = Row {
                batch: b,
                heads,
                kv_heads,
                head_dim,
                cache_len: len,
                config,
                plan: None,
                caches: 0,
                copies: 0,
                times_ms: Vec::new(),
                kv_bytes,
                error: None,
            };
            match &set {
                Err(e) => r.error = Some(e.to_string()),
                Ok(set) => {
                    r.caches = set.copies[0].len() as u32;
                    r.copies = set.copies.len() as u32;
                    let dec = &decoders[&config.checks];
                    match measure(&attn, dec, &timer, args.iters, dtype, set, (heads, head_dim), config, &mut r) {
                        Ok(t) => r.times_ms = t,
                        Err(e) => r.error = Some(e.to_string()),
                    }
                }
            }
            let (med, best) = (median(&r.times_ms), min(&r.times_ms));
            let gbps = r.kv_bytes / (med * 1e-3) / 1e9;
            match &r.error {
                Some(e) => println!("{b:>3} {len:>6} {}  error: {e}", config.label()),
                None => {
                    let [pp, pr] = pct(gbps);
                    println!(
                        "{b:>3} {len:>6} {} {med:>9.4} {best:>9.4} {gbps:>6.0} {pp:>6.0} {pr:>5.0}  {}",
                        config.label(),
                        r.plan.map_or(String::new(), |p| plan_label(&p, r.caches))
                    )
                }
            }
            rows.push(r);
        }
    }
    summary(&shapes, &rows, &pct);
    if let Some(path) = &args.json {
        std::fs::write(path, to_json(info, dtype, timer.timestamps, args.iters, [&read, &copy], args.ref_gbps, &rows))?;
        println!("wrote {path}");
    }
    Ok(())
}

/// Per shape, the library's choice (the first configuration measured) and the fastest one by
/// median.
fn summary(shapes: &[(u32, u32)], rows: &[Row], pct: &dyn Fn(f64) -> [f64; 2]) {
    println!("\nsummary (the library's choice, and the fastest configuration by median; % of the read probe / of --ref-gbps):");
    println!(
        "{:>3} {:>6} | {:>9} {:>6} {:>5} {:>5} | {:>9} {:>6} {:>5} {:>5}  fastest: checks lanes vec keys splits; plan",
        "B", "L", "auto ms", "GB/s", "%prb", "%ref", "best ms", "GB/s", "%prb", "%ref"
    );
    for &(b, len) in shapes {
        let ok: Vec<&Row> = rows.iter().filter(|r| (r.batch, r.cache_len) == (b, len) && r.error.is_none()).collect();
        let (Some(first), Some(best)) = (ok.first(), ok.iter().min_by(|x, y| median(&x.times_ms).total_cmp(&median(&y.times_ms)))) else {
            println!("{b:>3} {len:>6} | no result");
            continue;
        };
        let (fm, bm) = (median(&first.times_ms), median(&best.times_ms));
        let (fg, bg) = (first.kv_bytes / (fm * 1e-3) / 1e9, best.kv_bytes / (bm * 1e-3) / 1e9);
        let ([fp, fr], [bp, br]) = (pct(fg), pct(bg));
        println!(
            "{b:>3} {len:>6} | {fm:>9.4} {fg:>6.0} {fp:>5.0} {fr:>5.0} | {bm:>9.4} {bg:>6.0} {bp:>5.0} {br:>5.0}  {}; {}",
            best.config.label().split_whitespace().collect::<Vec<_>>().join(" "),
            best.plan.map_or(String::new(), |p| plan_label(&p, best.caches))
        );
    }
}

/// `Sg P16 M2 R4 U4 16B s128 rb1 c1`: path, lanes, vec4s per lane, rows, keys per step, bytes
/// per load, splits, row blocks, caches per step.
fn plan_label(p: &DecodePlan, caches: u32) -> String {
    let v = &p.variant;
    let path = if v.path == sbattn::Path::Subgroup { "Sg" } else { "Sh" };
    let bytes = v.load.elements() * v.dtype.size() as u32;
    format!(
        "{path} P{} M{} R{} U{} {bytes}B s{} rb{} c{caches}",
        v.lanes, v.cols, v.rows, v.keys_per_step, p.splits, p.row_blocks
    )
}

fn num(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { "null".into() }
}

fn to_json(
    info: &wgpu::AdapterInfo,
    dtype: Dtype,
    timestamps: bool,
    iters: u32,
    [read, copy]: [&Option<(u64, Vec<f64>)>; 2],
    ref_gbps: Option<f64>,
    rows: &[Row],
) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let list = |v: &[f64]| v.iter().map(|x| num(*x)).collect::<Vec<_>>().join(", ");
    let opt = |x: Option<u32>| x.map_or("null".into(), |v| v.to_string());
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\n  \"bench\": \"sbattn decode\",\n  \"adapter\": \"{}\",\n  \"backend\": \"{:?}\",\n  \"dtype\": \"{dtype:?}\",\n  \"timing\": \"{}\",\n  \"iters\": {iters},\n  \"ref_gbps\": {},\n",
        esc(&info.name),
        info.backend,
        if timestamps { "gpu timestamps per step" } else { "wall clock per batch of steps / steps" },
        ref_gbps.map_or("null".into(), num)
    );
    for (name, m, factor) in [("read_probe", read, 1.0), ("copy", copy, 2.0)] {
        match m {
            Some((size, t)) => {
                let _ = writeln!(
                    s,
                    "  \"{name}\": {{\"bytes\": {size}, \"median_ms\": {}, \"min_ms\": {}, \"gbps\": {}}},",
                    num(median(t)),
                    num(min(t)),
                    num(factor * *size as f64 / (median(t) * 1e-3) / 1e9)
                );
            }
            None => {
                let _ = writeln!(s, "  \"{name}\": null,");
            }
        }
    }
    s.push_str("  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let (med, best) = (median(&r.times_ms), min(&r.times_ms));
        let plan = r.plan.map_or("null".into(), |p| {
            format!(
                "{{\"path\": \"{:?}\", \"load\": \"{:?}\", \"lanes\": {}, \"cols\": {}, \"rows\": {}, \"keys_per_step\": {}, \"splits\": {}, \"row_blocks\": {}}}",
                p.variant.path, p.variant.load, p.variant.lanes, p.variant.cols, p.variant.rows, p.variant.keys_per_step, p.splits, p.row_blocks
            )
        });
        let c = &r.config;
        let _ = writeln!(
            s,
            "    {{\"batch\": {}, \"heads\": {}, \"kv_heads\": {}, \"head_dim\": {}, \"cache_len\": {}, \"new_tokens\": 1, \
             \"checks\": \"{:?}\", \"lanes_forced\": {}, \"vec_bytes_forced\": {}, \"keys_forced\": {}, \"splits_forced\": {}, \
             \"caches\": {}, \"copies\": {}, \"plan\": {plan}, \"kv_bytes\": {}, \"median_ms\": {}, \"min_ms\": {}, \
             \"gbps_median\": {}, \"gbps_best\": {}, \"times_ms\": [{}], \"error\": {}}}{}",
            r.batch,
            r.heads,
            r.kv_heads,
            r.head_dim,
            r.cache_len,
            c.checks,
            opt(c.lanes),
            opt(c.vec),
            opt(c.keys),
            opt(c.splits),
            r.caches,
            r.copies,
            num(r.kv_bytes),
            num(med),
            num(best),
            num(r.kv_bytes / (med * 1e-3) / 1e9),
            num(r.kv_bytes / (best * 1e-3) / 1e9),
            list(&r.times_ms),
            r.error.as_ref().map_or("null".into(), |e| format!("\"{}\"", esc(e))),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    s.push_str("  ]\n}\n");
    s
}
